// SPDX-License-Identifier: MIT
// Qcow2Image: qcow2 images (v2 and v3, every cluster size, extended L2, compressed zlib and zstd
// clusters, zero clusters, backing chains of any depth through openBacking, external data files
// through openDataFile). Reads map through the wasm core; writes go through the multiwrite
// dispatcher, the wasm allocation planner (in place, or new clusters with copy-on-write of the
// uncovered head and tail in the same host write) and metadata write-back in QEMU's safe order.

import type { Backend } from './backend.js';
import type { BlockImage, CreateOptions, OpenOptions } from './image.js';
import { createQcow2 } from './qcow2-create.js';
import { ImageError } from './errors.js';
import { sharedCore, HeaderField } from './wasm.js';
import { parseQcow2Header, qcow2HeaderBytesNeeded, type Qcow2Header } from './qcow2-header.js';
import { Qcow2Core, RunKind, type MappedRun, type WritePlan } from './qcow2-core.js';
import { Qcow2Writeback } from './qcow2-writeback.js';
import { Qcow2TableCopies } from './qcow2-table-copy.js';
import { Qcow2OverlapGuard } from './qcow2-overlap.js';
import { listSnapshots, type Qcow2Snapshot } from './qcow2-snapshots.js';
import * as snapshotOps from './qcow2-snapshot-ops.js';
import { readQcow2Header } from './qcow2-shadow-update.js';
import { emptyActiveLayer } from './qcow2-make-empty.js';
import { writeBackingFileName } from './rebase.js';
import { decodeCluster } from './decompress.js';
import { RawImage, checkMergeOption } from './raw-image.js';
import { MergeCore } from './merge-core.js';
import { DispatchedImage } from './dispatched-image.js';
import { appendSlices, spliceVector, zeroVector } from './iovec.js';
import type { GapRange } from './multiwrite.js';
import { ClusterLocks } from './cluster-locks.js';
import { DeferredCow, type PendingCluster } from './qcow2-deferred-cow.js';
import { LossWindow, writebackDelay } from './qcow2-loss-window.js';
import { allSettledOrThrow } from './settle.js';
import { checkQcow2, type Qcow2CheckOptions, type Qcow2CheckReport } from './qcow2-check.js';
import { chainRevisits } from './chain-names.js';

/** Deepest backing chain opened; deeper chains are refused as a probable loop. */
const MAX_BACKING_DEPTH = 64;
const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb];
/** Header byte offset of the autoclear feature bits (qcow2 spec, "Header"). */
const AUTOCLEAR_FEATURES_OFFSET = HeaderField.AUTOCLEAR_FEATURES;

/**
 * A run ready to write: the host range [hostStart, hostStart + bytes), its I/O vector, and what to
 * record once it is written: nothing (in place), a commit of new clusters, a commit of all but
 * the last new cluster which becomes pending (deferred copy-on-write of its tail), or more bytes
 * of a pending cluster.
 */
interface PreparedRun {
  hostStart: number;
  vector: Uint8Array[];
  bytes: number;
  after:
    | { kind: 'none' }
    | { kind: 'commit'; plan: WritePlan }
    | { kind: 'commit-defer-last'; plan: WritePlan; filledBytes: number }
    | { kind: 'extend'; pending: PendingCluster; filledEnd: number };
}

/** What open() threads through a backing chain to detect loops. */
interface ChainContext { depth: number; names: string[] }

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
  private readonly locks = new ClusterLocks();
  /** Pending clusters of deferred copy-on-write (undefined when it is off). */
  private readonly deferred: DeferredCow | undefined;
  private lastInflated: { hostOffset: number; cluster: Uint8Array } | undefined;
  /** Forced copy-on-writes and timed write-backs running in the background (close waits for them). */
  private readonly background = new Set<Promise<void>>();
  /** Writes metadata back a bounded delay after changes (undefined: only at flush and close). */
  private readonly lossWindow: LossWindow | undefined;

  private constructor(backend: Backend, dataBackend: Backend, header: Qcow2Header, core: Qcow2Core, mergeCore: MergeCore,
                      backing: BlockImage | undefined, readOnly: boolean, options: OpenOptions) {
    super({ virtualSize: header.virtualSize, readOnly, core: mergeCore, limits: dataBackend.limits, mergeMode: options.merge ?? 'full' });
    mergeCore.setGapWithinFreshCluster(header.clusterBits);
    this.backend = backend;
    this.dataBackend = dataBackend;
    this.header = header;
    this.core = core;
    this.backing = backing;
    this.overlap = new Qcow2OverlapGuard(core, backend, header);
    this.writeback = new Qcow2Writeback(core, backend, header, this.counters, this.overlap);
    core.onWritebackNeeded = () => this.writeback.writeDirty();
    core.onGrowthNeeded = () => this.writeback.growReftable();
    const tableCopies = new Qcow2TableCopies(core, backend, header, this.counters, this.overlap, this.writeback);
    core.onTableCopyNeeded = (l1Index) => tableCopies.copy(l1Index);
    const deferral = options.deferredCow ?? true;
    // Deferral covers plain clusters: not subclusters, not an external data file (whose host
    // cluster is the guest cluster's old place).
    this.deferred = deferral === false || readOnly || header.flags.extendedL2 || header.flags.externalDataFile ? undefined
      : new DeferredCow(header.clusterSize, deferral === true ? {} : deferral, (cluster) => this.forceLater(cluster));
    const delayMs = writebackDelay(options.writebackDelayMs, (message) => new ImageError('INVALID_ARGUMENT', message));
    this.lossWindow = readOnly || delayMs === undefined ? undefined : new LossWindow(delayMs, () => this.writeBackLater());
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
      await repairDirtyImage(backend, header);
      return Qcow2Image.openInChain(backend, options, chain);
    }
    const core = await Qcow2Core.create(probe, header, backend, fileSize, options.cacheBytes);
    const opened: Backend[] = [];
    try {
      const dataBackend = header.flags.externalDataFile ? await openDataFile(header, options, chain) : backend;
      if (dataBackend !== backend) opened.push(dataBackend);
      const backing = header.backingFile === undefined ? undefined : await openBackingImage(header, options, chain);
      const readOnly = !wantsWrite || !dataBackend.capabilities.writable;
      if (!readOnly && header.autoclearFeatures !== 0n) {
        // Autoclear bits this engine does not maintain (bitmaps, raw data file) are cleared
        // before the first write, as the spec requires of writers that do not know them.
        await backend.pwritev(AUTOCLEAR_FEATURES_OFFSET, [new Uint8Array(8)]);
        await backend.flush();
      }
      return new Qcow2Image(backend, dataBackend, header, core, new MergeCore(core.instance), backing, readOnly, options);
    } catch (error) {
      await Promise.allSettled(opened.map((b) => b.close()));
      throw error;
    }
  }

  /** The image's internal snapshots, in table order (reading them does not change the image). */
  async snapshots(): Promise<Qcow2Snapshot[]> {
    this.checkOpen();
    return listSnapshots(this.backend, this.header);
  }

  /**
   * Creates internal snapshot `name` (createSnapshot, bindings/qcow2-snapshot-ops.ts), with
   * `options.vmState` (e.g. an emulator's save state) kept in it as QEMU keeps VM state.
   */
  createSnapshot(name: string, options?: snapshotOps.CreateSnapshotOptions): Promise<Qcow2Snapshot> {
    return this.rewriteMetadata(() => snapshotOps.createSnapshot(this.backend, name, options, this.tableCapacity));
  }

  /** Reverts the disk to snapshot `nameOrId` (applySnapshot, bindings/qcow2-snapshot-ops.ts). */
  applySnapshot(nameOrId: string): Promise<Qcow2Snapshot> {
    return this.rewriteMetadata(() => snapshotOps.applySnapshot(this.backend, nameOrId, this.tableCapacity));
  }

  /** Deletes the snapshot named `name` (deleteSnapshot, bindings/qcow2-snapshot-ops.ts). */
  deleteSnapshot(name: string): Promise<Qcow2Snapshot> {
    return this.rewriteMetadata(() => snapshotOps.deleteSnapshot(this.backend, name, this.tableCapacity));
  }

  /** The VM state saved with snapshot `nameOrId` (readSnapshotVmState, bindings/qcow2-snapshot-ops.ts). */
  async readSnapshotVmState(nameOrId: string): Promise<Uint8Array> {
    this.checkOpen();
    return snapshotOps.readSnapshotVmState(this.backend, nameOrId);
  }

  /** Drops every cluster of the active image: it reads as its backing file again (emptyActiveLayer, bindings/qcow2-make-empty.ts). */
  makeEmpty(): Promise<void> {
    return this.rewriteMetadata(() => emptyActiveLayer(this.backend, this.tableCapacity));
  }

  /**
   * Names another backing file in the header (writeBackingFileName, bindings/rebase.ts); this
   * instance keeps reading through the backing image it opened: reopen to use the new one.
   */
  setBackingFile(backingFile: string | undefined, backingFormat?: string): Promise<void> {
    return this.rewriteMetadata(() => writeBackingFileName(this.backend, backingFile, backingFormat, this.tableCapacity));
  }

  // What the core can hold after a metadata rewrite: bigger tables are refused before the switch.
  private readonly tableCapacity = { fits: (l1Entries: number, reftableClusters: number) => this.core.fitsTables(l1Entries, reftableClusters) };

  // Runs a metadata rewrite made by a crash-safe shadow update, with every read and write of this
  // instance held off: writes before it complete and are flushed first; afterwards the header,
  // tables and caches are read anew (also when the rewrite failed part way).
  private async rewriteMetadata<T>(rewrite: () => Promise<T>): Promise<T> {
    this.checkOpen();
    this.checkWritable();
    let result: T | undefined;
    await this.orderedUpdate(0, Math.max(1, this.virtualSize), async () => {
      await this.flushFormat();
      try {
        result = await rewrite();
      } finally {
        this.lastInflated = undefined;
        await this.core.reload(await readQcow2Header(this.backend), this.backend, await this.backend.getSize());
        this.overlap.forget();
      }
    });
    return result as T;
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
      await allSettledOrThrow(runs.map((run) => this.readRun(run, target.subarray(run.guestOffset - offset, run.guestOffset - offset + run.length))));
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
        const cluster = await this.inflated(run);
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

  private async inflated(run: MappedRun): Promise<Uint8Array> {
    const cached = this.lastInflated;
    if (cached && cached.hostOffset === run.hostOffset) return cached.cluster;
    const compressed = new Uint8Array(run.compressedBytes);
    this.counters.hostReadCalls++;
    this.counters.hostReadBytes += compressed.byteLength;
    await this.backend.preadv(run.hostOffset, [compressed]);
    const cluster = new Uint8Array(this.header.clusterSize);
    await decodeCluster(this.header.compressionType, compressed, cluster, run.hostOffset);
    this.lastInflated = { hostOffset: run.hostOffset, cluster };
    return cluster;
  }

  // Writes one merged extent (it is ordered behind every earlier overlapping read and write).
  // Holding the locks of every cluster it may change the metadata of (all but those written in
  // place), it fills the merge's gaps with what they read now, then plans run by run: in place,
  // into a pending cluster, or into new clusters with the uncovered head and tail copied from
  // what they read before (or, for a tail that the next write of a sequential stream will likely
  // fill, left pending: deferred copy-on-write). Runs whose host ranges continue each other go out
  // as one host write; new clusters are committed once written.
  protected writeExtent(guestOffset: number, length: number, buffers: Uint8Array[], gaps: readonly GapRange[]): Promise<void> {
    const clusterBytes = this.header.clusterSize;
    const locked: number[] = [];
    for (let cluster = Math.floor(guestOffset / clusterBytes); cluster * clusterBytes < guestOffset + length; cluster++) {
      // A pending cluster is locked even when its entry already reads in place: its commit may be
      // in progress (the entry set, the cluster not yet out of the pending table).
      if (this.core.writeState(cluster * clusterBytes) !== 'in-place' || this.deferred?.get(cluster * clusterBytes)) locked.push(cluster);
    }
    if (locked.length === 0 && gaps.length === 0) {
      const inPlace = this.writeInPlace(guestOffset, length, buffers);
      if (inPlace) return this.changed(inPlace);
    }
    const write = async () => {
      const data = gaps.length === 0 ? buffers : await this.fillGaps(guestOffset, length, buffers, gaps);
      await this.writeRuns(guestOffset, length, data);
    };
    return this.changed(locked.length === 0 ? write() : this.locks.run(locked, write));
  }

  // The usual rewrite, with nothing pending nearby: one in-place run planned from cached metadata,
  // written with one host write (what writeRuns does for it, without its steps); undefined for
  // anything else.
  private writeInPlace(guestOffset: number, length: number, buffers: Uint8Array[]): Promise<void> | undefined {
    if (this.hasPendingIn(guestOffset, guestOffset + length)) return undefined;
    const plan = this.core.planInPlace(guestOffset, length);
    if (plan === undefined || plan.guestEnd < guestOffset + length) return undefined;
    return this.overlap.check('data', plan.hostStart, length).then(() => this.writeToBackend(this.dataBackend, plan.hostStart, buffers));
  }

  // Whether a pending cluster (deferred copy-on-write) overlaps guest [start, end).
  private hasPendingIn(start: number, end: number): boolean {
    if (this.deferred === undefined || this.deferred.size === 0) return false;
    const clusterBytes = this.header.clusterSize;
    return this.deferred.firstStartIn(Math.floor(start / clusterBytes) * clusterBytes, end) !== undefined;
  }

  // Replaces the zero placeholders of the gaps with what the gaps read now, unless that is zeros
  // by the mapping alone (a fresh cluster without backing data: the common case, nothing to read).
  // A pending cluster under a gap is completed first. The caller holds the gaps' cluster locks.
  private async fillGaps(guestOffset: number, length: number, buffers: Uint8Array[], gaps: readonly GapRange[]): Promise<Uint8Array[]> {
    const replacements: { offset: number; data: Uint8Array }[] = [];
    for (const gap of gaps) {
      this.counters.gapBytes += gap.end - gap.start;
      for (const cluster of this.deferred?.overlapping(gap.start, gap.end) ?? []) await this.completePending(cluster);
      if (await this.readsAsZeros(gap.start, gap.end - gap.start)) continue;
      const content = new Uint8Array(gap.end - gap.start);
      await this.readMapped(gap.start, content);
      replacements.push({ offset: gap.start - guestOffset, data: content });
    }
    return replacements.length === 0 ? buffers : spliceVector(buffers, length, replacements);
  }

  private async writeRuns(guestOffset: number, length: number, buffers: Uint8Array[]): Promise<void> {
    const end = guestOffset + length;
    const clusterBytes = this.header.clusterSize;
    const runs: PreparedRun[] = [];
    for (let position = guestOffset; position < end;) {
      const clusterStart = Math.floor(position / clusterBytes) * clusterBytes;
      const pending = this.deferred?.get(clusterStart);
      if (pending && position - clusterStart <= pending.filledBytes) {
        // Continues (or rewrites) the written part of a pending cluster: in place, no copy.
        const runEnd = Math.min(end, clusterStart + clusterBytes);
        const vector: Uint8Array[] = [];
        appendSlices(buffers, position - guestOffset, runEnd - position, vector);
        runs.push({ hostStart: pending.hostStart + (position - clusterStart), vector, bytes: runEnd - position,
          after: { kind: 'extend', pending, filledEnd: runEnd - clusterStart } });
        position = runEnd;
        continue;
      }
      // A write that would leave a hole in a pending cluster completes it first.
      if (pending) await this.completePending(pending);
      // Plans stop before the next pending cluster, which the loop handles as above.
      const planEnd = this.deferred?.firstStartIn(clusterStart + clusterBytes, end) ?? end;
      const plan = await this.core.plan(position, planEnd - position, this.backend);
      const runEnd = Math.min(plan.guestEnd, planEnd);
      const data: Uint8Array[] = [];
      appendSlices(buffers, position - guestOffset, runEnd - position, data);
      runs.push(plan.kind === 'in-place'
        ? { hostStart: plan.hostStart, vector: data, bytes: runEnd - position, after: { kind: 'none' } }
        : await this.prepareAllocated(plan, position, runEnd, data));
      position = runEnd;
    }
    const groups: PreparedRun[][] = [];
    for (const run of runs) {
      const group = groups[groups.length - 1];
      const last = group?.[group.length - 1];
      if (last && last.hostStart + last.bytes === run.hostStart) group.push(run);
      else groups.push([run]);
    }
    await allSettledOrThrow(groups.map((group) => this.writeGroup(group)));
  }

  private async writeGroup(group: PreparedRun[]): Promise<void> {
    await this.overlap.check('data', group[0].hostStart, group.reduce((bytes, run) => bytes + run.bytes, 0));
    await this.writeToBackend(this.dataBackend, group[0].hostStart, group.flatMap((run) => run.vector));
    // The data is on the backend: now the L2 entries may point at it.
    for (const { after } of group) {
      switch (after.kind) {
        case 'none':
          break;
        case 'commit':
          await this.commitPlan(after.plan);
          break;
        case 'commit-defer-last': {
          const lastStart = after.plan.guestEnd - this.header.clusterSize;
          const lastHost = after.plan.hostStart + (lastStart - after.plan.guestStart);
          if (lastStart > after.plan.guestStart) await this.commitPlan({ ...after.plan, guestEnd: lastStart });
          this.deferred!.add(lastStart, lastHost, after.filledBytes);
          break;
        }
        case 'extend':
          if (this.deferred!.extend(after.pending, after.filledEnd)) await this.commitPending(after.pending);
          break;
      }
    }
  }

  // Points the plan's L2 entries at its written clusters and releases what they replaced once
  // that is on disk. (No wait for a write-back in progress: bindings/qcow2-writeback.ts, THE RULE.)
  private async commitPlan(plan: WritePlan): Promise<void> {
    this.writeback.releaseLater(await this.core.commit(plan, this.backend));
  }

  private async commitPending(cluster: PendingCluster): Promise<void> {
    await this.commitPlan({ kind: 'allocate', guestStart: cluster.guestStart, guestEnd: cluster.guestStart + this.header.clusterSize, hostStart: cluster.hostStart });
    this.deferred!.remove(cluster);
  }

  // Completes a pending cluster (deferred copy-on-write, forced): copies its unwritten part from
  // what it reads now (nothing when that is zeros: the new host cluster already reads as zeros)
  // and commits it. The caller holds the cluster's lock; a cluster committed meanwhile is skipped.
  private async completePending(cluster: PendingCluster): Promise<void> {
    if (this.deferred?.get(cluster.guestStart) !== cluster) return;
    const from = cluster.guestStart + cluster.filledBytes;
    const tailBytes = this.header.clusterSize - cluster.filledBytes;
    const content = await this.previousContent(from, tailBytes, true);
    if (content) {
      this.counters.cowBytes += tailBytes;
      await this.overlap.check('data', cluster.hostStart + cluster.filledBytes, tailBytes);
      await this.writeToBackend(this.dataBackend, cluster.hostStart + cluster.filledBytes, [content]);
    }
    await this.commitPending(cluster);
  }

  // Completes pending clusters, taking their locks.
  private async completePendingLocked(clusters: readonly PendingCluster[]): Promise<void> {
    const clusterBytes = this.header.clusterSize;
    await allSettledOrThrow([...clusters].sort((a, b) => a.guestStart - b.guestStart).map((cluster) =>
      this.locks.run([cluster.guestStart / clusterBytes], () => this.completePending(cluster))));
  }

  // The timer or the cap made a pending cluster due: complete it in the background. On failure it
  // stays pending and is retried later; flush() reports the error if it persists.
  private forceLater(cluster: PendingCluster): void {
    this.inBackground(this.completePendingLocked([cluster]).then(() => this.lossWindow?.changed(), () => this.deferred?.retryLater(cluster)));
  }

  // The loss window's timer fired: pending clusters are completed and the metadata written back
  // in the safe order, as a flush would, but without its final barrier. A failure leaves the
  // metadata dirty: the next flush retries it and reports the error if it persists.
  private writeBackLater(): void {
    this.inBackground((async () => {
      if (this.deferred && this.deferred.size > 0) await this.completePendingLocked(this.deferred.all());
      await this.writeback.writeBackAll();
    })().catch(() => undefined));
  }

  private inBackground(work: Promise<void>): void {
    this.background.add(work);
    void work.finally(() => this.background.delete(work));
  }

  // A guest-visible change completed (or failed): the loss window's timer starts if it is idle.
  private changed<T>(work: Promise<T>): Promise<T> {
    if (!this.lossWindow) return work;
    return work.finally(() => this.lossWindow!.changed());
  }

  // Completes every pending cluster overlapping guest [start, end) (before a metadata-only change).
  private settlePending(start: number, end: number): Promise<void> {
    const due = this.deferred?.overlapping(start, end) ?? [];
    return due.length === 0 ? Promise.resolve() : this.completePendingLocked(due);
  }

  // Fresh clusters come from past the old end of the file and are never reused, so their unwritten
  // bytes already read as zeros: copy-on-write of zeros is skipped, and only what is not zero is
  // written (the guest data, plus head or tail copied from a backing file or old cluster). With an
  // external data file the host cluster is the guest cluster's old place, so zeros are copied too.
  // A tail that needs real data, in a last cluster written from its start, is deferred instead.
  private async prepareAllocated(plan: WritePlan, dataStart: number, dataEnd: number, data: Uint8Array[]): Promise<PreparedRun> {
    const head = dataStart - plan.guestStart;
    const tail = plan.guestEnd - dataEnd;
    // A cluster allocated just now is fresh; subclusters filled in an old cluster are not.
    const isFresh = plan.kind !== 'fill-subclusters';
    const lastClusterStart = plan.guestEnd - this.header.clusterSize;
    const defer = tail > 0 && this.deferred !== undefined && plan.kind === 'allocate' && dataStart <= lastClusterStart &&
      !(await this.readsAsZeros(dataEnd, Math.max(0, Math.min(tail, this.virtualSize - dataEnd))));
    const headBytes = head > 0 ? await this.previousContent(plan.guestStart, head, isFresh) : undefined;
    const tailBytes = tail > 0 && !defer ? await this.previousContent(dataEnd, tail, isFresh) : undefined;
    const vector: Uint8Array[] = [];
    let hostStart = plan.hostStart + head;
    let bytes = dataEnd - dataStart;
    if (headBytes) {
      vector.push(headBytes);
      hostStart = plan.hostStart;
      bytes += head;
      this.counters.cowBytes += head;
    }
    vector.push(...data);
    if (tailBytes) {
      vector.push(tailBytes);
      bytes += tail;
      this.counters.cowBytes += tail;
    }
    const after: PreparedRun['after'] = defer ? { kind: 'commit-defer-last', plan, filledBytes: dataEnd - lastClusterStart } : { kind: 'commit', plan };
    return { hostStart, vector, bytes, after };
  }

  // What guest bytes [guestOffset, guestOffset + length) read as now (before the write commits),
  // or undefined when that is all zeros and the cluster is fresh (so needs no copy). Bytes past
  // the virtual size read as zeros.
  private async previousContent(guestOffset: number, length: number, isFresh: boolean): Promise<Uint8Array | undefined> {
    const inside = Math.max(0, Math.min(length, this.virtualSize - guestOffset));
    const mayStayZero = isFresh && !this.header.flags.externalDataFile;
    if (inside === 0 || (mayStayZero && (await this.readsAsZeros(guestOffset, inside)))) {
      return mayStayZero ? undefined : new Uint8Array(length);
    }
    const buffer = new Uint8Array(length);
    await this.readMapped(guestOffset, buffer.subarray(0, inside));
    return buffer;
  }

  // True when the mapping alone shows guest bytes [guestOffset, guestOffset + length) read as
  // zeros: zero clusters, or unallocated ones with no backing data under them.
  private async readsAsZeros(guestOffset: number, length: number): Promise<boolean> {
    const end = guestOffset + length;
    let position = guestOffset;
    while (position < end) {
      const runs = await this.core.map(position, end - position, this.backend);
      for (const run of runs) {
        if (run.kind === RunKind.ZERO) continue;
        if (run.kind === RunKind.UNALLOCATED && (!this.backing || run.guestOffset >= this.backing.virtualSize)) continue;
        return false;
      }
      const last = runs[runs.length - 1];
      position = last.guestOffset + last.length;
    }
    return true;
  }

  // Whole clusters are zeroed in the metadata (the zero flag on v3 and extended L2; unallocated
  // on v2 without a backing file, where that reads as zeros); with extended L2 so are whole
  // subclusters of partly covered clusters; the bytes left get zero data.
  protected override zeroRange(offset: number, length: number): Promise<void> {
    const [start, end] = this.wholeClusters(offset, length);
    const zeroFlag = this.header.version === 3;
    // An external data file is read on its own too (data_file_raw): its zeros must be real.
    if ((!zeroFlag && this.backing) || this.header.flags.externalDataFile) return this.writeZeroData(offset, length);
    this.counters.guestWriteRequests++;
    this.counters.guestWriteBytes += Math.max(0, end - start);
    const parts: Promise<void>[] = [];
    if (start < end) {
      parts.push(this.orderedUpdate(start, end, () => this.zeroClusters(start, end, zeroFlag)));
      if (offset < start) parts.push(this.zeroPartialClusters(offset, start));
      if (end < offset + length) parts.push(this.zeroPartialClusters(end, offset + length));
    } else {
      parts.push(this.zeroPartialClusters(offset, offset + length));
    }
    return this.changed(allSettledOrThrow(parts));
  }

  // Zeroes guest [from, to), which covers no whole cluster: whole subclusters by metadata with
  // extended L2 (ordered like a write of their cluster; a compressed cluster, which has no
  // subclusters, gets zero data inside that same ordered step), the rest with zero data.
  private zeroPartialClusters(from: number, to: number): Promise<void> {
    if (!this.header.flags.extendedL2) return this.writeZeroData(from, to - from);
    const clusterBytes = this.header.clusterSize;
    const subclusterBytes = clusterBytes / 32;
    const parts: Promise<void>[] = [];
    for (let pieceStart = from; pieceStart < to;) {
      const clusterStart = Math.floor(pieceStart / clusterBytes) * clusterBytes;
      const pieceEnd = Math.min(to, clusterStart + clusterBytes);
      const wholeStart = Math.ceil(pieceStart / subclusterBytes) * subclusterBytes;
      const wholeEnd = pieceEnd === this.virtualSize ? Math.ceil(pieceEnd / subclusterBytes) * subclusterBytes
        : Math.floor(pieceEnd / subclusterBytes) * subclusterBytes;
      if (wholeStart < wholeEnd) {
        parts.push(this.orderedUpdate(clusterStart, clusterStart + clusterBytes, async () => {
          if (!(await this.core.zeroSubclusters(wholeStart, wholeEnd, this.backend))) {
            const inside = Math.min(wholeEnd, this.virtualSize) - wholeStart;
            await this.writeExtent(wholeStart, inside, zeroVector(inside), []);
          }
        }));
        if (pieceStart < wholeStart) parts.push(this.writeZeroData(pieceStart, wholeStart - pieceStart));
        if (wholeEnd < pieceEnd) parts.push(this.writeZeroData(wholeEnd, pieceEnd - wholeEnd));
      } else {
        parts.push(this.writeZeroData(pieceStart, pieceEnd - pieceStart));
      }
      pieceStart = pieceEnd;
    }
    return allSettledOrThrow(parts);
  }

  /** Discard frees whole clusters (reading as zeros afterwards); partial clusters keep their data. */
  protected async discardRange(offset: number, length: number): Promise<void> {
    const [start, end] = this.wholeClusters(offset, length);
    const zeroFlag = this.header.version === 3;
    if (start < end && (zeroFlag || !this.backing) && !this.header.flags.externalDataFile) await this.changed(this.zeroClusters(start, end, zeroFlag));
  }

  // The whole clusters inside guest [offset, offset + length); a range reaching the end of the
  // image also covers the last cluster, which may extend past the virtual size.
  private wholeClusters(offset: number, length: number): [number, number] {
    const size = this.header.clusterSize;
    const start = Math.ceil(offset / size) * size;
    const end = offset + length === this.virtualSize ? Math.ceil(this.virtualSize / size) * size : Math.floor((offset + length) / size) * size;
    return [start, end];
  }

  private async zeroClusters(start: number, end: number, zeroFlag: boolean): Promise<void> {
    await this.settlePending(start, end);
    const freed = await this.core.zeroClusters(start, (end - start) / this.header.clusterSize, zeroFlag, this.backend);
    this.writeback.releaseLater(freed);
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
    this.lossWindow?.dispose();
    this.deferred?.dispose();
    try {
      if (!this.readOnly) await this.flushFormat();
    } finally {
      while (this.background.size > 0) await Promise.allSettled([...this.background]);
      await this.writeback.quiesce();
      const closes: Promise<void>[] = [this.backend.close()];
      if (this.dataBackend !== this.backend) closes.push(this.dataBackend.close());
      if (this.backing) closes.push(this.backing.close());
      await allSettledOrThrow(closes);
    }
  }

  /**
   * Writes a new qcow2 image into `backend` (createQcow2, bindings/qcow2-create.ts: truncates the
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

  /** @internal For tools (bindings/qcow2-map.ts): this layer's runs for a guest range, as reads map it. */
  async mapGuestRange(guestOffset: number, length: number): Promise<MappedRun[]> {
    await this.settlePending(guestOffset, guestOffset + length);
    return this.core.map(guestOffset, length, this.backend);
  }

  /**
   * Checks the image like `qemu-img check` (checkQcow2, bindings/qcow2-check.ts) after flushing
   * this instance's writes. `options.repair` repairs in place: it needs a writable backend
   * (QCOW2_READ_ONLY otherwise) and this instance open read-only (INVALID_ARGUMENT otherwise,
   * since its cached metadata would go stale); reads stay valid after a repair.
   */
  async check(options: Qcow2CheckOptions = {}): Promise<Qcow2CheckReport> {
    await this.flush();
    if (options.repair !== undefined && !this.readOnly) {
      throw new ImageError('INVALID_ARGUMENT', 'repair needs the image open read-only: this instance caches the metadata a repair rewrites');
    }
    return checkQcow2(this.backend, options);
  }
}

/** Header byte offset of the incompatible feature bits (qcow2 spec, "Header"). */
const INCOMPATIBLE_FEATURES_OFFSET = HeaderField.INCOMPATIBLE_FEATURES;
const INCOMPATIBLE_DIRTY = 1n;

async function repairDirtyImage(backend: Backend, header: Qcow2Header): Promise<void> {
  const report = await checkQcow2(backend, { repair: 'all' });
  if (report.corruptions > 0 || report.checkErrors > 0) {
    throw new ImageError('QCOW2_CORRUPT',
      `the dirty image could not be repaired: ${report.corruptions} corruptions and ${report.checkErrors} check errors remain`);
  }
  const features = new Uint8Array(8);
  new DataView(features.buffer).setBigUint64(0, header.incompatibleFeatures & ~INCOMPATIBLE_DIRTY);
  await backend.pwritev(INCOMPATIBLE_FEATURES_OFFSET, [features]);
  await backend.flush();
}

async function openDataFile(header: Qcow2Header, options: OpenOptions, chain: ChainContext): Promise<Backend> {
  if (header.dataFile === undefined) {
    throw new ImageError('INVALID_ARGUMENT', 'the image uses an external data file but does not name it');
  }
  if (!options.openDataFile) {
    throw new ImageError('INVALID_ARGUMENT', `the image's data is in the external file '${header.dataFile}': pass openDataFile to open it`);
  }
  return options.openDataFile(header.dataFile, chain.names);
}

async function openBackingImage(header: Qcow2Header, options: OpenOptions, chain: ChainContext): Promise<BlockImage> {
  const name = header.backingFile!;
  if (!options.openBacking) {
    throw new ImageError('INVALID_ARGUMENT', `the image has the backing file '${name}': pass openBacking to open it`);
  }
  if (chain.depth >= MAX_BACKING_DEPTH || chainRevisits([...chain.names, name])) {
    throw new ImageError('QCOW2_CORRUPT', `backing chain loop or too deep at '${name}' (chain: ${[...chain.names, name].join(' -> ')})`);
  }
  const backend = await options.openBacking(name, header.backingFormat, chain.names);
  try {
    const format = header.backingFormat ?? (await probeFormat(backend));
    const nested: OpenOptions = { ...options, readOnly: true };
    if (format === 'raw') return await RawImage.open(backend, nested);
    if (format === 'qcow2') return await Qcow2Image.openInChain(backend, nested, { depth: chain.depth + 1, names: [...chain.names, name] });
    throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', `backing file format '${format}' is not supported (qcow2 and raw are)`);
  } catch (error) {
    await backend.close();
    throw error;
  }
}

/** 'qcow2' when the backend starts with the qcow2 magic, otherwise 'raw'. */
export async function probeFormat(backend: Backend): Promise<'qcow2' | 'raw'> {
  const head = new Uint8Array(4);
  await backend.preadv(0, [head]);
  return QCOW2_MAGIC.every((byte, i) => head[i] === byte) ? 'qcow2' : 'raw';
}
