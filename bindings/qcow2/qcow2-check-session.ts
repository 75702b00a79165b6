// SPDX-License-Identifier: MIT
// One check of one image file: the wasm core instance sized for it, the views onto the check's
// regions, and the pass and repair procedures that feed the core the image's tables in QEMU's order
// and write back what a repair changed.

import type { Backend } from '../backends/backend.js';
import { ImageError } from '../base/errors.js';
import { CheckCount, CheckEvent, CheckRegion, CORE_CONSTANTS, WalkMode, instantiateCore, type CoreExports, type CoreInstance } from '../core/wasm.js';
import { parseQcow2Header, qcow2HeaderBytesNeeded, type Qcow2Header } from './qcow2-header.js';
import { EVENT_MESSAGES, MessageLog, type EventArgs, type EventContext, type EventName } from './qcow2-check-messages.js';
import type { Qcow2RepairMode } from './qcow2-check.js';
import { markHeaderClean } from './qcow2-header-write.js';

/** The bitmaps header extension (qcow2 spec, "Bitmaps extension"). */
const EXT_BITMAPS = 0x23852875;
const WASM_PAGE_BYTES = 65536;
/** Pages of the largest memory a wasm32 instance may have (4 GiB). */
const MAX_WASM_PAGES = 65536;
/** f64 slots of one event record: the kind, then seven arguments (assembly/check.ts). */
const EVENT_SLOTS = CORE_CONSTANTS.CHECK_EVENT_STRIDE / 8;
const utf8 = new TextDecoder('utf-8');

/** The name of a CheckEvent member, by its value. */
const EVENT_NAMES = new Map<number, EventName>(
  (Object.keys(EVENT_MESSAGES) as EventName[]).map((name) => [CheckEvent[name], name]));

/** One pass's counters. */
export interface PassCounts { corruptions: number; leaks: number; checkErrors: number; copiedCorruptions: number;
  allocatedClusters: number; fragmentedClusters: number; compressedClusters: number; imageEndOffset: number }

/** A check of one image file: its header, its core instance and views, and the pass procedures. */
export class CheckSession {
  private readonly x: CoreExports;
  private readonly table: Uint8Array;
  private readonly list: Float64Array;
  private readonly events: Float64Array;
  private readonly reftable: Uint8Array;
  private readonly clusterSize: number;
  private readonly reftableBytes: number;
  log: MessageLog;
  /** Whether the repair wrote anything since the last flush. */
  private hasUnflushedWrites = false;

  private constructor(private readonly backend: Backend, private readonly fileSize: number, readonly header: Qcow2Header,
                      core: CoreInstance, maxMessages: number) {
    this.x = core.exports;
    const region = (id: CheckRegion) => [this.x.checkRegionOffset(id) >>> 0, this.x.checkRegionBytes(id) >>> 0] as const;
    this.clusterSize = header.clusterSize;
    this.reftableBytes = header.refcountTableClusters * header.clusterSize;
    const [tableAt, tableBytes] = region(CheckRegion.TABLE);
    this.table = new Uint8Array(core.memory.buffer, tableAt, tableBytes);
    const [listAt, listBytes] = region(CheckRegion.LIST);
    this.list = new Float64Array(core.memory.buffer, listAt, listBytes / 8);
    const [eventsAt, eventsBytes] = region(CheckRegion.EVENTS);
    this.events = new Float64Array(core.memory.buffer, eventsAt, eventsBytes / 8);
    this.log = new MessageLog(maxMessages);
    const [reftableAt, reftableRegionBytes] = region(CheckRegion.REFTABLE);
    if (reftableRegionBytes !== this.reftableBytes) throw new ImageError('WASM_INTERNAL', 'wasm core refcount table region has the wrong size');
    this.reftable = new Uint8Array(core.memory.buffer, reftableAt, reftableRegionBytes);
  }

  /**
   * Reads and parses the header of the qcow2 image in `backend`, creates a core instance with
   * memory for the check's arrays (sized from the file) and loads the refcount table.
   */
  static async open(backend: Backend, maxMessages: number): Promise<CheckSession> {
    const probe = await instantiateCore();
    const fileSize = await backend.getSize();
    const headerBytes = new Uint8Array(qcow2HeaderBytesNeeded(probe, fileSize));
    await backend.preadv(0, [headerBytes]);
    const header = parseQcow2Header(probe, headerBytes, fileSize);
    if (header.unknownExtensions.some((extension) => extension.type === EXT_BITMAPS)) {
      throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', 'checking images with persistent dirty bitmaps is not supported (qemu-img check handles them)');
    }
    const x = probe.exports;
    const reftableBytes = header.refcountTableClusters * header.clusterSize;
    const start = x.fixedRegionsEnd() >>> 0;
    const regionBytes = x.checkRegionsBytes(fileSize, header.clusterBits, header.refcountOrder, reftableBytes, header.snapshotCount);
    if (regionBytes < 0) {
      throw new ImageError('QCOW2_UNSUPPORTED_FEATURE',
        `the image file has ${Math.ceil(fileSize / header.clusterSize)} clusters; a check handles at most 2^31 - 1 (as qemu-img check)`);
    }
    const pages = Math.ceil((start + regionBytes) / WASM_PAGE_BYTES);
    if (pages > MAX_WASM_PAGES) {
      throw new ImageError('QCOW2_UNSUPPORTED_FEATURE',
        `checking this image needs ${start + regionBytes} bytes of memory, more than the 4 GiB a wasm instance has`);
    }
    const core = await instantiateCore(pages);
    const status = core.exports.configureCheck(start, fileSize, header.clusterBits, header.refcountOrder,
      header.flags.extendedL2 ? 1 : 0, header.flags.externalDataFile ? 1 : 0, reftableBytes, header.snapshotCount,
      header.l1TableOffset, header.l1Size);
    if (status !== 0) throw new ImageError('WASM_INTERNAL', `configureCheck failed with status ${status}`);
    const session = new CheckSession(backend, fileSize, header, core, maxMessages);
    await session.readHost(header.refcountTableOffset, session.reftable);
    return session;
  }

  // Reads `target.byteLength` bytes at host offset `hostOffset`; a negative offset (the core's
  // "past the end of the file") or one at or past the end reads as zeros, as QEMU's file driver.
  private async readHost(hostOffset: number, target: Uint8Array): Promise<void> {
    if (hostOffset < 0 || hostOffset >= this.fileSize) {
      target.fill(0);
      return;
    }
    await this.backend.preadv(hostOffset, [target]);
  }

  private async writeHost(hostOffset: number, data: Uint8Array): Promise<void> {
    await this.backend.pwritev(hostOffset, [data]);
    this.hasUnflushedWrites = true;
  }

  private async flush(): Promise<void> {
    if (!this.hasUnflushedWrites) return;
    await this.backend.flush();
    this.hasUnflushedWrites = false;
  }

  // Snapshot `index`'s "id (name)", as QEMU names snapshots in messages (read from the table).
  private async snapshotLabel(index: number): Promise<string> {
    const idBytes = this.x.snapshotIdBytes(index);
    const text = new Uint8Array(idBytes + this.x.snapshotNameBytes(index));
    await this.readHost(this.header.snapshotsOffset + this.x.snapshotIdPosition(index), text);
    // QEMU prints them as C strings: each ends at its first NUL.
    const cString = (bytes: Uint8Array) => utf8.decode(bytes.subarray(0, bytes.indexOf(0) === -1 ? bytes.length : bytes.indexOf(0)));
    return `${cString(text.subarray(0, idBytes))} (${cString(text.subarray(idBytes))})`;
  }

  private counter(name: keyof typeof CheckCount): number { return this.x.checkCount(CheckCount[name]); }

  // Turns the core's event records into messages and empties its event region.
  private drainEvents(context: EventContext = { snapshot: '' }): void {
    const count = this.x.checkEventCount();
    const e = this.events;
    for (let i = 0; i < count; i++) {
      const at = i * EVENT_SLOTS;
      const name = EVENT_NAMES.get(e[at]);
      const args: EventArgs = [e[at + 1], e[at + 2], e[at + 3], e[at + 4], e[at + 5], e[at + 6], e[at + 7]];
      this.log.push(name ? EVENT_MESSAGES[name](args, context) : `unknown check event ${e[at]}`);
    }
    this.log.skip(this.x.checkEventsDropped());
    this.x.clearCheckEvents();
  }

  /**
   * Walks an L1 table (the active one for -1, else snapshot `snapshot`'s) and its L2 tables in
   * `mode`, one cluster at a time; writes back what a repair mode changed.
   */
  private async walk(snapshot: number, mode: keyof typeof WalkMode): Promise<void> {
    const x = this.x;
    const chunks = x.l1WalkBegin(snapshot, WalkMode[mode]);
    this.drainEvents(snapshot >= 0 && x.checkEventCount() > 0 ? { snapshot: await this.snapshotLabel(snapshot) } : undefined);
    for (let chunk = 0; chunk < chunks; chunk++) {
      const chunkHostOffset = x.l1ChunkHostOffset(chunk);
      const entries = this.table.subarray(0, x.l1ChunkBytes(chunk));
      await this.readHost(chunkHostOffset, entries);
      const listed = x.l1ChunkProcess(chunk);
      this.drainEvents();
      // The L1 chunk goes back before CHECK_TABLE is reused for its L2 tables.
      if (x.l1ChunkChanged() > 0) await this.writeHost(chunkHostOffset, entries);
      for (let i = 0; i < listed; i++) {
        const l2HostOffset = this.list[i];
        await this.readHost(l2HostOffset, this.table);
        const changed = x.l2TableProcess(i);
        this.drainEvents();
        if (changed > 0) await this.writeHost(l2HostOffset, this.table);
      }
    }
  }

  /**
   * One full check pass, in QEMU's order:
   * 1. the snapshot table;
   * 2. the references: header, active L1 tree (with the statistics), every snapshot's L1 tree,
   *    snapshot table, refcount table, refcount blocks;
   * 3. the stored refcounts against the references (leaks and too-low refcounts);
   * 4. OFLAG_COPIED of the active tables against the stored refcounts.
   */
  async runPass(): Promise<PassCounts> {
    const x = this.x;
    const header = this.header;
    x.checkBegin();
    this.drainEvents();

    // 1. Snapshot table: consecutive clusters from snapshots_offset until every entry is parsed.
    if (header.snapshotCount > 0) {
      let hostOffset = header.snapshotsOffset;
      for (let more = 1; more === 1; hostOffset += this.clusterSize) {
        await this.readHost(hostOffset, this.table);
        more = x.snapshotTableConsume(this.clusterSize);
        this.drainEvents();
      }
    }

    // 2. References.
    x.checkAddRange(0, this.clusterSize);
    await this.walk(-1, 'COUNT');
    const snapshots = this.counter('SNAPSHOTS_PARSED');
    for (let i = 0; i < snapshots; i++) await this.walk(i, 'COUNT');
    x.checkAddRange(header.snapshotsOffset, this.counter('SNAPSHOT_TABLE_BYTES'));
    x.checkAddRange(header.refcountTableOffset, this.reftableBytes);
    x.checkRefblocks();
    this.drainEvents();

    // 3. Stored refcounts, block by block.
    const blocks = x.compareBlockCount();
    for (let index = 0; index < blocks; index++) {
      const blockHostOffset = x.compareBlockHostOffset(index);
      if (blockHostOffset >= 0) await this.readHost(blockHostOffset, this.table);
      x.compareBlock(index, blockHostOffset >= 0 ? 1 : 0);
      this.drainEvents();
    }

    // 4. OFLAG_COPIED.
    await this.walk(-1, 'COPIED');
    return {
      corruptions: this.counter('CORRUPTIONS'),
      leaks: this.counter('LEAKS'),
      checkErrors: this.counter('CHECK_ERRORS'),
      copiedCorruptions: this.counter('COPIED_CORRUPTIONS'),
      allocatedClusters: this.counter('ALLOCATED_CLUSTERS'),
      fragmentedClusters: this.counter('FRAGMENTED_CLUSTERS'),
      compressedClusters: this.counter('COMPRESSED_CLUSTERS'),
      imageEndOffset: this.counter('IMAGE_END_OFFSET'),
    };
  }

  /**
   * Repairs what the pass just run found, in an order that never makes the image worse if it
   * stops anywhere:
   * 1. choose the fixes (planRepair);
   * 2. clear OFLAG_COPIED where the refcount after repair is not 1 (clearing is always safe:
   *    the flag only permits writing in place), then flush;
   * 3. rewrite the refcount blocks (raised refcounts and lowered leaks), then flush;
   * 4. set OFLAG_COPIED where the refcount, now on disk, is 1, then flush.
   * Returns the fixed counts.
   */
  async repair(mode: Qcow2RepairMode, found: PassCounts): Promise<{ leaksFixed: number; corruptionsFixed: number }> {
    const x = this.x;
    // 1. Plan.
    x.planRepair(mode === 'all' ? 2 : 1);
    this.drainEvents();
    // Like QEMU, -r leaks fixes OFLAG_COPIED only when the refcounts will be right afterwards.
    const fixesFlags = mode === 'all' || (found.checkErrors === 0 && found.corruptions === found.copiedCorruptions &&
      found.leaks === this.counter('LEAKS_PLANNED'));

    // 2. Clear wrong OFLAG_COPIED flags.
    if (fixesFlags) {
      await this.walk(-1, 'COPIED_CLEAR');
      await this.flush();
    }
    // 3. Refcount blocks.
    const blocks = x.compareBlockCount();
    for (let index = 0; index < blocks; index++) {
      const blockHostOffset = x.repairBlockHostOffset(index);
      if (blockHostOffset < 0) continue;
      await this.readHost(blockHostOffset, this.table);
      const changed = x.repairBlock(index);
      this.drainEvents();
      if (changed > 0) await this.writeHost(blockHostOffset, this.table);
    }
    await this.flush();
    // 4. Set OFLAG_COPIED where the refcount on disk is now 1.
    if (fixesFlags) {
      await this.walk(-1, 'COPIED_SET');
      await this.flush();
    }
    return { leaksFixed: this.counter('LEAKS_FIXED'), corruptionsFixed: this.counter('CORRUPTIONS_FIXED') };
  }

  /** Clears the dirty and corrupt header bits (QEMU's mark_clean / mark_consistent after a repair). */
  async markClean(): Promise<void> {
    const { header } = this;
    if (header.version !== 3 || (!header.flags.dirty && !header.flags.corrupt)) return;
    if (await markHeaderClean(this.backend)) this.hasUnflushedWrites = true;
    await this.flush();
  }
}
