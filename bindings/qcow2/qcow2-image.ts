// SPDX-License-Identifier: MIT
// Qcow2Image: qcow2 images (v2 and v3, every cluster size, extended L2, compressed zlib and zstd
// clusters, zero clusters, backing chains of any depth through openBacking, external data files
// through openDataFile). Reads map through the wasm core; writes go through the multiwrite
// dispatcher, the write path (qcow2-write-path.ts: the core's write plans, executed) and
// metadata write-back in QEMU's safe order.

import type { Backend } from '../backends/backend.js';
import type { BlockImage, CreateOptions, OpenOptions } from '../dispatch/image.js';
import { createQcow2 } from './qcow2-create.js';
import { ImageError } from '../base/errors.js';
import { sharedCore } from '../core/wasm.js';
import { clearHeaderAutoclear, markHeaderClean } from './qcow2-header-write.js';
import { parseQcow2Header, qcow2HeaderBytesNeeded, type Qcow2Header } from './qcow2-header.js';
import { Qcow2Core, RunKind, type MappedRun } from './qcow2-core.js';
import { Qcow2WritePath } from './qcow2-write-path.js';
import { Qcow2Zeroing } from './qcow2-zeroing.js';
import { Qcow2Writeback } from './qcow2-writeback.js';
import { Qcow2TableCopies } from './qcow2-table-copy.js';
import { Qcow2OverlapGuard } from './qcow2-overlap.js';
import { listSnapshots, type Qcow2Snapshot } from './qcow2-snapshots.js';
import * as snapshotOps from './qcow2-snapshot-ops.js';
import { readQcow2Header } from './qcow2-shadow-update.js';
import { emptyActiveLayer } from './qcow2-make-empty.js';
import { writeBackingFileName } from './qcow2-backing-name.js';
import { writeCompressedClusters, type CompressedClusterWrite } from './qcow2-compressed-write.js';
import { groupCompressedRuns, isRunGroup } from './compressed-run-groups.js';
import { Qcow2CompressedReader } from './qcow2-compressed-read.js';
import { checkMergeOption } from '../raw/raw-image.js';
import { MergeCore } from '../core/merge-core.js';
import { DispatchedImage } from '../dispatch/dispatched-image.js';
import type { GapRange } from '../dispatch/multiwrite.js';
import { DeferredCow, type PendingCluster } from './qcow2-deferred-cow.js';
import { writebackDelay } from './qcow2-loss-window.js';
import { Qcow2Background } from './qcow2-background.js';
import { allSettledOrThrow } from '../base/settle.js';
import { checkQcow2, type Qcow2CheckOptions, type Qcow2CheckReport } from './qcow2-check.js';
import { openBackingImage, openDataFile, type ChainContext } from './qcow2-chain-open.js';

/** A qcow2 image. Open with Qcow2Image.open. */
export class Qcow2Image extends DispatchedImage {
  /** The parsed header (for tools such as `info`). */
  readonly header: Qcow2Header;
  /** The backing image, if the header names one. */
  readonly backing: BlockImage | undefined;
  private readonly backend: Backend;
  private readonly dataBackend: Backend;
  private readonly core: Qcow2Core;
  private readonly writeback: Qcow2Writeback;
  private readonly overlap: Qcow2OverlapGuard;
  /** Pending clusters of deferred copy-on-write (undefined when it is off). */
  private readonly deferred: DeferredCow | undefined;
  /** Plans and executes writes (bindings/qcow2/qcow2-write-path.ts). */
  private readonly writes: Qcow2WritePath;
  /** writeZeroes and discard (bindings/qcow2/qcow2-zeroing.ts). */
  private readonly zeroing: Qcow2Zeroing;
  private readonly compressed: Qcow2CompressedReader;
  /** Forced copy-on-writes and timed write-backs (undefined read-only; close waits for them). */
  private readonly background: Qcow2Background | undefined;

  private constructor(backend: Backend, dataBackend: Backend, header: Qcow2Header, core: Qcow2Core, mergeCore: MergeCore,
                      backing: BlockImage | undefined, readOnly: boolean, options: OpenOptions) {
    super({ virtualSize: header.virtualSize, readOnly, core: mergeCore, limits: dataBackend.limits, mergeMode: options.merge ?? 'full' });
    mergeCore.setGapWithinFreshCluster(header.clusterBits);
    this.backend = backend;
    this.dataBackend = dataBackend;
    this.header = header;
    this.core = core;
    this.backing = backing;
    this.compressed = new Qcow2CompressedReader(backend, header, this.counters);
    this.overlap = new Qcow2OverlapGuard(core, backend, header);
    this.writeback = new Qcow2Writeback(core, backend, dataBackend, header, this.counters, this.overlap);
    core.onWritebackNeeded = () => this.writeback.writeDirty();
    core.onGrowthNeeded = () => this.writeback.growReftable();
    const tableCopies = new Qcow2TableCopies(core, backend, header, this.counters, this.overlap, this.writeback);
    core.onTableCopyNeeded = (l1Index) => tableCopies.copy(l1Index);
    core.setBackingBytes(backing?.virtualSize ?? 0);
    const deferral = options.deferredCow ?? true;
    // The core's plans say which tails may stay pending (plain clusters only).
    this.deferred = deferral === false || readOnly ? undefined
      : new DeferredCow(header.clusterSize, deferral === true ? {} : deferral, (cluster) => this.background?.forceLater(cluster));
    this.writes = new Qcow2WritePath(core, backend, dataBackend, header, this.overlap, this.writeback, this.deferred, {
      counters: this.counters,
      readMapped: (guestOffset, target) => this.readMapped(guestOffset, target),
      readBacking: (guestOffset, target) => this.readBacking(guestOffset, target),
      inflated: (hostOffset, compressedBytes) => this.compressed.inflated(hostOffset, compressedBytes),
      writeToBackend: (target, position, buffers) => this.writeToBackend(target, position, buffers),
    });
    this.zeroing = new Qcow2Zeroing(core, backend, header, this.writeback, this.writes, {
      counters: this.counters, virtualSize: header.virtualSize, hasBacking: backing !== undefined,
      orderedUpdate: (start, end, run) => this.orderedUpdate(start, end, run),
      writeZeroData: (offset, length) => this.writeZeroData(offset, length),
      changed: (work) => this.changed(work),
    });
    const delayMs = writebackDelay(options.writebackDelayMs, (message) => new ImageError('INVALID_ARGUMENT', message));
    this.background = readOnly ? undefined : new Qcow2Background(this.writes, this.writeback, this.deferred, delayMs);
  }

  /**
   * Opens the qcow2 image in `backend`, writable when the backend is and `options.readOnly` is not
   * set. Backing files and external data files are opened only through `options.openBacking` /
   * `options.openDataFile` (the names come from the image and are untrusted); an image that needs
   * one without the callback is refused with INVALID_ARGUMENT. A writable open of an image left
   * dirty by lazy refcounts rebuilds its refcounts first (check with repair 'all'). Errors: QCOW2_CORRUPT,
   * QCOW2_UNSUPPORTED_FEATURE, QCOW2_READ_ONLY (a writable open of an image marked corrupt),
   * IMAGE_FORMAT_UNKNOWN (not qcow2), and backend errors. `options.cacheBytes` sizes the L2 cache
   * (default 1 MiB); `options.merge` the merge mode. Ownership: the backend belongs to the image
   * from this call on; close() closes it, and a failed open closes it before rejecting.
   */
  static async open(backend: Backend, options: OpenOptions = {}): Promise<Qcow2Image> {
    try {
      return await Qcow2Image.openInChain(backend, options, { depth: 0, names: [] });
    } catch (error) {
      await backend.close().catch(() => {});
      throw error;
    }
  }

  /** Opens one link of a backing chain (internal: open() starts a chain). */
  static async openInChain(backend: Backend, options: OpenOptions, chain: ChainContext): Promise<Qcow2Image> {
    checkMergeOption(options);
    // The shared core only computes: each call's results are JS values before the next await.
    const probe = await sharedCore();
    const fileSize = await backend.getSize();
    const headerBytes = new Uint8Array(qcow2HeaderBytesNeeded(probe, fileSize));
    await backend.preadv(0, [headerBytes]);
    const header = parseQcow2Header(probe, headerBytes, fileSize);
    const wantsWrite = options.readOnly !== true && backend.capabilities.writable;
    if (wantsWrite && header.flags.corrupt) {
      throw new ImageError('QCOW2_READ_ONLY', 'the image is marked corrupt; it can only be opened read-only (repair it with check)');
    }
    if (wantsWrite && header.flags.dirty) {
      // Lazy refcounts after an unclean shutdown: rebuild the refcounts before the first write
      // (as QEMU does on a read-write open), then clear the dirty bit and parse again.
      await repairDirtyImage(backend);
      return Qcow2Image.openInChain(backend, options, chain);
    }
    const core = await Qcow2Core.create(probe, header, backend, fileSize, options.cacheBytes);
    const opened: Backend[] = [];
    try {
      const dataBackend = header.flags.externalDataFile ? await openDataFile(header, options, chain) : backend;
      if (dataBackend !== backend) opened.push(dataBackend);
      const backing = header.backingFile === undefined ? undefined : await openBackingImage(header, options, chain, Qcow2Image.openInChain);
      const readOnly = !wantsWrite || !dataBackend.capabilities.writable;
      if (!readOnly && header.autoclearFeatures !== 0n) {
        // Autoclear bits this engine does not maintain (bitmaps, raw data file) are cleared
        // before the first write, as the spec requires of writers that do not know them.
        if (await clearHeaderAutoclear(backend)) await backend.flush();
      }
      return new Qcow2Image(backend, dataBackend, header, core, new MergeCore(core.instance), backing, readOnly, options);
    } catch (error) {
      await Promise.allSettled(opened.map((b) => b.close()));
      throw error;
    }
  }

  /** The image's internal snapshots in table order, after every snapshot operation submitted before this call. */
  snapshots(): Promise<Qcow2Snapshot[]> {
    return this.orderedRead(0, this.wholeDiskEnd, () => listSnapshots(this.backend, this.header));
  }

  /**
   * Creates internal snapshot `name` (createSnapshot, bindings/qcow2/qcow2-snapshot-ops.ts), with
   * `options.vmState` (e.g. an emulator's save state) kept in it as QEMU keeps VM state.
   */
  createSnapshot(name: string, options?: snapshotOps.CreateSnapshotOptions): Promise<Qcow2Snapshot> {
    return this.rewriteMetadata(() => snapshotOps.createSnapshot(this.backend, name, options, this.tableCapacity));
  }

  /** Reverts the disk to snapshot `nameOrId` (applySnapshot, bindings/qcow2/qcow2-snapshot-ops.ts). */
  applySnapshot(nameOrId: string): Promise<Qcow2Snapshot> {
    return this.rewriteMetadata(() => snapshotOps.applySnapshot(this.backend, nameOrId, this.tableCapacity));
  }

  /** Deletes the snapshot named `name` (deleteSnapshot, bindings/qcow2/qcow2-snapshot-ops.ts). */
  deleteSnapshot(name: string): Promise<Qcow2Snapshot> {
    return this.rewriteMetadata(() => snapshotOps.deleteSnapshot(this.backend, name, this.tableCapacity));
  }

  /** The VM state saved with snapshot `nameOrId` (readSnapshotVmState, bindings/qcow2/qcow2-snapshot-ops.ts). */
  readSnapshotVmState(nameOrId: string): Promise<Uint8Array> {
    return this.orderedRead(0, this.wholeDiskEnd, () => snapshotOps.readSnapshotVmState(this.backend, nameOrId));
  }

  /** Drops every cluster of the active image: it reads as its backing file again (emptyActiveLayer, bindings/qcow2/qcow2-make-empty.ts). */
  makeEmpty(): Promise<void> {
    return this.rewriteMetadata(() => emptyActiveLayer(this.backend, this.tableCapacity));
  }

  /**
   * Names another backing file in the header (writeBackingFileName, bindings/qcow2/qcow2-backing-name.ts); this
   * instance keeps reading through the backing image it opened: reopen to use the new one.
   */
  setBackingFile(backingFile: string | undefined, backingFormat?: string): Promise<void> {
    return this.rewriteMetadata(() => writeBackingFileName(this.backend, backingFile, backingFormat, this.tableCapacity));
  }

  /** Stores guest clusters compressed with header.compressionType (writeCompressedClusters, bindings/qcow2/qcow2-compressed-write.ts). */
  writeCompressedClusters(writes: readonly CompressedClusterWrite[]): Promise<void> {
    return this.rewriteMetadata(() => writeCompressedClusters(this.backend, writes, this.tableCapacity));
  }

  // What the core can hold after a metadata rewrite: bigger tables are refused before the switch.
  private readonly tableCapacity = { fits: (l1Entries: number, reftableClusters: number) => this.core.fitsTables(l1Entries, reftableClusters) };

  // Runs a metadata rewrite made by a crash-safe shadow update, every read and write of this
  // instance held off: writes before it complete and are flushed first; afterwards the header and
  // tables are read anew, also after a failed rewrite (failing that, the instance refuses requests).
  private async rewriteMetadata<T>(rewrite: () => Promise<T>): Promise<T> {
    this.checkOpen();
    this.checkWritable();
    return this.orderedUpdate(0, this.wholeDiskEnd, async () => {
      await this.flushFormat();
      try {
        return await rewrite();
      } finally {
        this.compressed.forget();
        try {
          await this.core.reload(await readQcow2Header(this.backend), this.backend, await this.backend.getSize());
        } catch (error) {
          throw this.refuseRequests('reading the header and tables back after a metadata change failed', error);
        }
        this.overlap.forget();
      }
    });
  }

  /** Bytes of wasm linear memory this image's core holds (fixed regions, tables, caches). */
  coreMemoryBytes(): number {
    return this.core.memory.buffer.byteLength;
  }

  // A read sees pending clusters' written bytes only once they are committed: a read that
  // overlaps the written part of a pending cluster forces its copy-on-write first. (Its pending
  // part still reads correctly from the old mapping, so reads of only that need nothing.)
  protected readRange(offset: number, target: Uint8Array): Promise<void> {
    return this.readOneRun(offset, target) ?? this.readRangeMapped(offset, target);
  }

  // The usual read, with nothing pending nearby: one data run mapped from cached metadata, read
  // with one host call; undefined for anything else.
  private readOneRun(offset: number, target: Uint8Array): Promise<void> | undefined {
    if (this.hasPendingIn(offset, offset + target.byteLength)) return undefined;
    const hostOffset = this.core.mapOneDataRun(offset, target.byteLength);
    if (hostOffset < 0) return undefined;
    this.counters.hostReadCalls++;
    this.counters.hostReadBytes += target.byteLength;
    return this.dataBackend.preadv(hostOffset, [target]);
  }

  private async readRangeMapped(offset: number, target: Uint8Array): Promise<void> {
    const end = offset + target.byteLength;
    const due = this.deferred?.overlapping(offset, end).filter((cluster) => cluster.guestStart < end && offset < cluster.guestStart + cluster.filledBytes);
    if (due && due.length > 0) await this.completePendingLocked(due);
    await this.readMapped(offset, target);
  }

  // Reads guest bytes through the committed mapping (what they read now, pending clusters aside).
  private async readMapped(offset: number, target: Uint8Array): Promise<void> {
    const end = offset + target.byteLength;
    let position = offset;
    while (position < end) {
      const runs = await this.core.map(position, end - position, this.backend);
      const targetOf = (run: MappedRun) => target.subarray(run.guestOffset - offset, run.guestOffset - offset + run.length);
      await allSettledOrThrow(groupCompressedRuns(runs, this.header.clusterSize).map((item) =>
        isRunGroup(item) ? this.compressed.readGroup(item, targetOf) : this.readRun(item, targetOf(item))));
      const last = runs[runs.length - 1];
      position = last.guestOffset + last.length;
    }
  }

  private async readRun(run: MappedRun, target: Uint8Array): Promise<void> {
    switch (run.kind) {
      case RunKind.ZERO:
        target.fill(0);
        return;
      case RunKind.UNALLOCATED:
        return this.readBacking(run.guestOffset, target);
      case RunKind.DATA:
        this.counters.hostReadCalls++;
        this.counters.hostReadBytes += target.byteLength;
        return this.dataBackend.preadv(run.hostOffset, [target]);
      case RunKind.COMPRESSED: {
        const cluster = await this.compressed.inflated(run.hostOffset, run.compressedBytes);
        const inCluster = run.guestOffset % this.header.clusterSize;
        target.set(cluster.subarray(inCluster, inCluster + target.byteLength));
        return;
      }
    }
  }

  private async readBacking(guestOffset: number, target: Uint8Array): Promise<void> {
    const backing = this.backing;
    const inBacking = backing ? Math.max(0, Math.min(target.byteLength, backing.virtualSize - guestOffset)) : 0;
    target.fill(0, inBacking);
    if (inBacking > 0) await backing!.readInto(guestOffset, target.subarray(0, inBacking));
  }

  // Writes one merged extent (it is ordered behind every earlier overlapping read and write): the
  // write path (bindings/qcow2/qcow2-write-path.ts) plans and executes it.
  protected writeExtent(guestOffset: number, length: number, buffers: Uint8Array[], gaps: readonly GapRange[]): Promise<void> {
    return this.changed(this.writes.writeExtent(guestOffset, length, buffers, gaps));
  }

  // Whether a pending cluster (deferred copy-on-write) overlaps guest [start, end).
  private hasPendingIn(start: number, end: number): boolean {
    return this.writes.hasPendingIn(start, end);
  }

  // Completes pending clusters, taking their locks.
  private completePendingLocked(clusters: readonly PendingCluster[]): Promise<void> {
    return this.writes.completePendingLocked(clusters);
  }

  // A guest-visible change completed (or failed): the loss window's timer starts if it is idle.
  private changed<T>(work: Promise<T>): Promise<T> {
    return this.background?.changed(work) ?? work;
  }

  // writeZeroes and discard: bindings/qcow2/qcow2-zeroing.ts.
  protected override zeroRange(offset: number, length: number): Promise<void> {
    return this.zeroing.zeroRange(offset, length);
  }

  protected discardRange(offset: number, length: number): Promise<void> {
    return this.zeroing.discardRange(offset, length);
  }

  protected async flushFormat(): Promise<void> {
    // Every pending cluster is completed before the metadata is flushed (deferred COW is bounded by flush).
    if (this.deferred && this.deferred.size > 0) await this.completePendingLocked(this.deferred.all());
    await this.writeback.flushAll();
    if (this.dataBackend !== this.backend) await this.dataBackend.flush();
  }

  // The timers stop; the final flush completes every pending cluster, writes the metadata back
  // and persists the releases; background copies and write-backs are waited for even when it
  // failed; the backends are closed last.
  protected async closeFormat(): Promise<void> {
    this.background?.dispose();
    try {
      if (!this.readOnly && !this.refusal) await this.flushFormat();
    } finally {
      await this.background?.settle();
      await this.writeback.quiesce();
      this.compressed.close();
      const closes: Promise<void>[] = [this.backend.close()];
      if (this.dataBackend !== this.backend) closes.push(this.dataBackend.close());
      if (this.backing) closes.push(this.backing.close());
      await allSettledOrThrow(closes);
    }
  }

  /**
   * Writes a new qcow2 image into `backend` (createQcow2, bindings/qcow2/qcow2-create.ts: truncates the
   * backend first), then opens it with the same options (OpenOptions keys, e.g. openBacking).
   * Ownership as for open(): a failed create closes the backend.
   */
  static async create(backend: Backend, options: CreateOptions & OpenOptions): Promise<Qcow2Image> {
    try {
      await createQcow2(backend, options);
    } catch (error) {
      await backend.close().catch(() => {});
      throw error;
    }
    return Qcow2Image.open(backend, options);
  }

  /** @internal For tools (bindings/tools/qcow2-map.ts): this layer's runs for a guest range, ordered like a read of it. */
  mapGuestRange(guestOffset: number, length: number): Promise<MappedRun[]> {
    return this.orderedRead(guestOffset, guestOffset + Math.max(1, length), () => this.writes.settlePending(guestOffset, guestOffset + length)
      .then(() => this.core.map(guestOffset, length, this.backend)));
  }

  /**
   * Checks the image like `qemu-img check` (checkQcow2, bindings/qcow2/qcow2-check.ts) once every request submitted
   * before it is done and flushed, before any later one runs. `options.repair` repairs in place: it needs a writable
   * backend (QCOW2_READ_ONLY otherwise) and this instance open read-only (INVALID_ARGUMENT otherwise); reads stay valid after it.
   */
  check(options: Qcow2CheckOptions = {}): Promise<Qcow2CheckReport> {
    return this.orderedRead(0, this.wholeDiskEnd, async () => {
      const stale = 'repair needs the image open read-only: this instance caches the metadata a repair rewrites';
      if (options.repair !== undefined && !this.readOnly) throw new ImageError('INVALID_ARGUMENT', stale);
      await this.flushCompleted();
      return checkQcow2(this.backend, options);
    });
  }
}

async function repairDirtyImage(backend: Backend): Promise<void> {
  const report = await checkQcow2(backend, { repair: 'all' });
  if (report.corruptions > 0 || report.checkErrors > 0) {
    throw new ImageError('QCOW2_CORRUPT',
      `the dirty image could not be repaired: ${report.corruptions} corruptions and ${report.checkErrors} check errors remain`);
  }
  await markHeaderClean(backend, true);
  await backend.flush();
}

export { probeFormat } from './qcow2-chain-open.js';
