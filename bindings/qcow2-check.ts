// SPDX-License-Identifier: MIT
// `qemu-img check` for qcow2 images: drives the wasm check (assembly/check.ts) over the image's
// tables one chunk at a time, in a core instance of its own sized from the file, words its event
// records as QEMU 7.2 does, and repairs in place through the backend (leaked and too-low
// refcounts, OFLAG_COPIED). It never allocates a cluster or grows a table: what would need that
// is reported as unrepairable. Persistent bitmaps are not supported.

import type { Backend } from './backend.js';
import { ImageError } from './errors.js';
import { coreGlobal, instantiateCore, type CoreExports, type CoreInstance, HeaderField, RepairBlocker } from './wasm.js';
import { parseQcow2Header, qcow2HeaderBytesNeeded, type Qcow2Header } from './qcow2-header.js';

/** What a repair fixes, as `qemu-img check -r leaks|all`. */
export type Qcow2RepairMode = 'leaks' | 'all';

/** Options of checkQcow2 and Qcow2Image.check. */
export interface Qcow2CheckOptions {
  /**
   * Repair in place after checking, then check again (the report is the second check's).
   * 'leaks' lowers stored refcounts that exceed the references; 'all' also raises refcounts that
   * are too low where every reference is valid, and fixes OFLAG_COPIED flags ('leaks' fixes those
   * too when nothing else is wrong, as QEMU does). Needs a writable backend (QCOW2_READ_ONLY).
   */
  repair?: Qcow2RepairMode;
  /** Most messages the report keeps (default 10000); one last message counts the rest. */
  maxMessages?: number;
}

/**
 * What a check found, named after `qemu-img check --output=json` (camelCase): `corruptions`,
 * `leaks`, `checkErrors` ("check-errors"), `imageEndOffset` ("image-end-offset"), and so on.
 * QEMU omits zero counts from its JSON; here every count is present.
 */
export interface Qcow2CheckReport {
  /** Inconsistencies that may lose data: refcounts below the references, invalid entries, wrong OFLAG_COPIED. */
  corruptions: number;
  /** Clusters whose stored refcount exceeds their references: wasted space, no harm to data. */
  leaks: number;
  /** Problems that kept the check from being complete (unreadable refcounts, too many clusters past the end of the file). */
  checkErrors: number;
  /** Corruptions the repair fixed (0 without repair). */
  corruptionsFixed: number;
  /** Leaks the repair fixed (0 without repair). */
  leaksFixed: number;
  /** Guest clusters allocated in the active L1 (data, preallocated zero, compressed). */
  allocatedClusters: number;
  /** Guest clusters of the virtual disk. */
  totalClusters: number;
  /** Allocated clusters not following the previous one of their L2 table on the host, and every compressed one. */
  fragmentedClusters: number;
  /** Compressed guest clusters. */
  compressedClusters: number;
  /** Host byte offset past the highest cluster that is referenced or has a stored refcount. */
  imageEndOffset: number;
  /** What was found and done, one line each, worded like qemu-img check's output. */
  messages: string[];
}

/** The bitmaps header extension (qcow2 spec, "Bitmaps extension"). */
const EXT_BITMAPS = 0x23852875;
const WASM_PAGE_BYTES = 65536;
/** Pages of the largest memory a wasm32 instance may have (4 GiB). */
const MAX_WASM_PAGES = 65536;
const DEFAULT_MAX_MESSAGES = 10_000;
/** Bytes of one event record: f64 kind, then seven f64 arguments (assembly/check.ts). */
const EVENT_STRIDE = 64;
const utf8 = new TextDecoder('utf-8');

// Enum members of assembly/check.ts, read from the core's exported globals by name.
const COUNT_NAMES = [
  'CORRUPTIONS', 'LEAKS', 'CHECK_ERRORS', 'ALLOCATED_CLUSTERS', 'FRAGMENTED_CLUSTERS', 'COMPRESSED_CLUSTERS',
  'IMAGE_END_OFFSET', 'COPIED_CORRUPTIONS', 'LEAKS_PLANNED', 'CORRUPTIONS_PLANNED', 'UNREPAIRABLE', 'LEAKS_FIXED',
  'CORRUPTIONS_FIXED', 'SNAPSHOTS_PARSED', 'SNAPSHOT_TABLE_BYTES',
] as const;
type CountName = (typeof COUNT_NAMES)[number];
const MODE_NAMES = ['COUNT', 'COPIED', 'COPIED_CLEAR', 'COPIED_SET'] as const;
type WalkModeName = (typeof MODE_NAMES)[number];

/** One event record's arguments a..g (CheckEvent, assembly/check.ts). */
type EventArgs = readonly [number, number, number, number, number, number, number];
/** What a message may need besides its event: the walked snapshot's "id (name)". */
interface EventContext { snapshot: string }

// A u64 the core passes as two f64 halves, printed as hex or decimal.
const u64 = (high: number, low: number): bigint => (BigInt(high) << 32n) | BigInt(low);
const hex = (high: number, low: number): string => u64(high, low).toString(16);
const dec = (high: number, low: number): string => u64(high, low).toString();
const action = (repairing: number) => (repairing ? 'Repairing' : 'ERROR');

const BLOCKER_REASONS: Readonly<Record<number, string>> = {
  [RepairBlocker.REFERENCE_INVALID]: 'a reference to it is invalid',
  [RepairBlocker.REFBLOCK_MISSING]: 'no refcount block covers it (allocating one, or growing the refcount table, is not implemented)',
  [RepairBlocker.REFBLOCK_UNUSABLE]: 'its refcount block has an invalid table entry, lies outside the file or is shared',
  [RepairBlocker.REFCOUNT_UNREADABLE]: 'its stored refcount cannot be read',
} satisfies Record<Exclude<RepairBlocker, typeof RepairBlocker.NONE>, string>;

// One wording per CheckEvent member, as QEMU 7.2 words the same finding (block/qcow2-refcount.c)
// where it has one. QEMU names snapshots by id and name; the check knows their table index.
const EVENT_MESSAGES = {
  REFCOUNT_MISMATCH: ([cluster, storedHigh, storedLow, refsHigh, refsLow, repairing]: EventArgs) =>
    `${repairing ? 'Repairing' : u64(storedHigh, storedLow) < u64(refsHigh, refsLow) ? 'ERROR' : 'Leaked'} cluster ${cluster} ` +
    `refcount=${dec(storedHigh, storedLow)} reference=${dec(refsHigh, refsLow)}`,
  REFCOUNT_OVERFLOW: ([high, low]: EventArgs) => `ERROR: overflow cluster offset=0x${hex(high, low)}`,
  L2_TABLE_UNALIGNED: ([high, low]: EventArgs) => `ERROR l2_offset=${hex(high, low)}: Table is not cluster aligned; L1 entry corrupted`,
  DATA_UNALIGNED: ([high, low, hasData]: EventArgs) =>
    `ERROR offset=${hex(high, low)}: ${hasData ? 'Data' : 'Preallocated'} cluster is not properly aligned; L2 entry corrupted.`,
  COMPRESSED_COPIED: ([high, low]: EventArgs) => `ERROR: coffset=0x${hex(high, low)}: copied flag must never be set for compressed clusters`,
  COMPRESSED_WITH_DATA_FILE: ([index, high, low]: EventArgs) => `ERROR compressed cluster ${index} with data file, entry=0x${hex(high, low)}`,
  COMPRESSED_WITH_BITMAP: ([index, high, low]: EventArgs) =>
    `ERROR compressed cluster ${index} with non-zero subcluster allocation bitmap, entry=0x${hex(high, low)}`,
  SUBCLUSTER_ALLOC_AND_ZERO: ([high, low]: EventArgs) =>
    `ERROR offset=${hex(high, low)}: Allocated cluster has corrupted subcluster allocation bitmap`,
  UNALLOCATED_WITH_BITMAP: () => 'ERROR: Unallocated cluster has non-zero subcluster allocation map',
  REFTABLE_RESERVED: ([index]: EventArgs) => `ERROR refcount table entry ${index} has reserved bits set`,
  REFBLOCK_UNALIGNED: ([index]: EventArgs) => `ERROR refcount block ${index} is not cluster aligned; refcount table entry corrupted`,
  REFBLOCK_OUTSIDE: ([index]: EventArgs) => `ERROR refcount block ${index} is outside image`,
  REFBLOCK_REFCOUNT: ([index, high, low]: EventArgs) => `ERROR refcount block ${index} refcount=${dec(high, low)}`,
  REFCOUNT_UNREADABLE: ([cluster]: EventArgs) => `Can't get refcount for cluster ${cluster}: Input/output error`,
  SNAPSHOT_L1_UNALIGNED: ([, high, low]: EventArgs, c: EventContext) =>
    `ERROR snapshot ${c.snapshot} l1_offset=0x${hex(high, low)}: L1 table is not cluster aligned; snapshot table entry corrupted`,
  SNAPSHOT_L1_TOO_LARGE: ([, entries]: EventArgs, c: EventContext) =>
    `ERROR snapshot ${c.snapshot} l1_size=0x${entries.toString(16)}: L1 table is too large; snapshot table entry corrupted`,
  SNAPSHOTS_WITH_DATA_FILE: ([count]: EventArgs) => `ERROR ${count} snapshots in image with data file`,
  COPIED_L2_TABLE: ([index, high, low, refcountHigh, refcountLow, repairing]: EventArgs) =>
    `${action(repairing)} OFLAG_COPIED L2 cluster: l1_index=${index} l1_entry=${hex(high, low)} refcount=${dec(refcountHigh, refcountLow)}`,
  COPIED_DATA_CLUSTER: ([high, low, refcountHigh, refcountLow, repairing]: EventArgs) =>
    `${action(repairing)} OFLAG_COPIED data cluster: l2_entry=${hex(high, low)} refcount=${dec(refcountHigh, refcountLow)}`,
  SNAPSHOT_EXTRA_TOO_LARGE: ([index, bytes]: EventArgs) =>
    `ERROR Too much extra metadata in snapshot table entry ${index} (${bytes} bytes, at most 1024)`,
  SNAPSHOT_TABLE_TOO_LARGE: ([parsed]: EventArgs) => `ERROR snapshot table too large (past 64 MiB after ${parsed} entries)`,
  RANGE_PAST_END: ([high, low, bytes]: EventArgs) =>
    `ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${hex(high, low)} size 0x${bytes.toString(16)}`,
  UNREPAIRABLE: ([cluster, storedHigh, storedLow, refsHigh, refsLow, blocker]: EventArgs) =>
    `Cannot repair cluster ${cluster} refcount=${dec(storedHigh, storedLow)} reference=${dec(refsHigh, refsLow)}: ` +
    (BLOCKER_REASONS[blocker] ?? 'unknown reason'),
  L1_RESERVED: ([high, low]: EventArgs) => `ERROR found L1 entry with reserved bits set: ${hex(high, low)}`,
  L2_RESERVED: ([high, low]: EventArgs) => `ERROR found l2 entry with reserved bits set: ${hex(high, low)}`,
} satisfies Record<string, (args: EventArgs, context: EventContext) => string>;
type EventName = keyof typeof EVENT_MESSAGES;

/** Collects messages up to a cap, counting the rest. */
class MessageLog {
  readonly lines: string[] = [];
  private omitted = 0;

  constructor(private readonly max: number) {}

  push(line: string): void {
    if (this.lines.length < this.max) this.lines.push(line);
    else this.omitted++;
  }

  skip(count: number): void { this.omitted += count; }

  /** The kept lines, and one more counting the omitted ones. */
  finish(): string[] {
    return this.omitted > 0 ? [...this.lines, `(${this.omitted} more messages omitted)`] : this.lines;
  }
}

/** One pass's counters. */
interface PassCounts { corruptions: number; leaks: number; checkErrors: number; copiedCorruptions: number;
  allocatedClusters: number; fragmentedClusters: number; compressedClusters: number; imageEndOffset: number }

/** A check of one image file: its header, its core instance and views, and the pass procedures. */
class CheckSession {
  private readonly x: CoreExports;
  private readonly table: Uint8Array;
  private readonly list: Float64Array;
  private readonly events: Float64Array;
  private readonly reftable: Uint8Array;
  private readonly count: Record<CountName, number>;
  private readonly walkMode: Record<WalkModeName, number>;
  private readonly eventNames = new Map<number, EventName>();
  private readonly clusterSize: number;
  private readonly reftableBytes: number;
  log: MessageLog;
  /** Whether the repair wrote anything since the last flush. */
  private hasUnflushedWrites = false;

  private constructor(private readonly backend: Backend, private readonly fileSize: number, readonly header: Qcow2Header,
                      core: CoreInstance, maxMessages: number) {
    this.x = core.exports;
    const value = (name: string): number => coreGlobal(core.exports, name);
    const region = (name: string) => [this.x.checkRegionOffset(value(`CheckRegion.${name}`)) >>> 0,
      this.x.checkRegionBytes(value(`CheckRegion.${name}`)) >>> 0] as const;
    this.clusterSize = header.clusterSize;
    this.reftableBytes = header.refcountTableClusters * header.clusterSize;
    const [tableAt, tableBytes] = region('TABLE');
    this.table = new Uint8Array(core.memory.buffer, tableAt, tableBytes);
    const [listAt, listBytes] = region('LIST');
    this.list = new Float64Array(core.memory.buffer, listAt, listBytes / 8);
    const [eventsAt, eventsBytes] = region('EVENTS');
    if (value('CHECK_EVENT_STRIDE') !== EVENT_STRIDE) throw new ImageError('WASM_INTERNAL', 'wasm core event stride differs from what these bindings read');
    this.events = new Float64Array(core.memory.buffer, eventsAt, eventsBytes / 8);
    this.count = Object.fromEntries(COUNT_NAMES.map((name) => [name, value(`CheckCount.${name}`)])) as Record<CountName, number>;
    this.walkMode = Object.fromEntries(MODE_NAMES.map((name) => [name, value(`WalkMode.${name}`)])) as Record<WalkModeName, number>;
    for (const name of Object.keys(EVENT_MESSAGES) as EventName[]) this.eventNames.set(value(`CheckEvent.${name}`), name);
    this.log = new MessageLog(maxMessages);
    const [reftableAt, reftableRegionBytes] = region('REFTABLE');
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

  private counter(name: CountName): number { return this.x.checkCount(this.count[name]); }

  // Turns the core's event records into messages and empties its event region.
  private drainEvents(context: EventContext = { snapshot: '' }): void {
    const count = this.x.checkEventCount();
    const e = this.events;
    for (let i = 0; i < count; i++) {
      const at = i * (EVENT_STRIDE / 8);
      const name = this.eventNames.get(e[at]);
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
  private async walk(snapshot: number, mode: WalkModeName): Promise<void> {
    const x = this.x;
    const chunks = x.l1WalkBegin(snapshot, this.walkMode[mode]);
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
    const field = new Uint8Array(8);
    new DataView(field.buffer).setBigUint64(0, header.incompatibleFeatures & ~3n);
    await this.writeHost(INCOMPATIBLE_FEATURES_OFFSET, field);
    await this.flush();
  }
}

/** Header byte offset of the incompatible feature bits (qcow2 spec, "Header"). */
const INCOMPATIBLE_FEATURES_OFFSET = HeaderField.INCOMPATIBLE_FEATURES;

/**
 * Checks the qcow2 image in `backend` like `qemu-img check`: rebuilds every host cluster's
 * refcount from the image's metadata (header, active and snapshot L1/L2 tables, compressed
 * clusters, the snapshot table, the refcount table and blocks; data-file clusters are not
 * refcounted), compares it with the stored refcounts, and checks OFLAG_COPIED.
 *
 * With `options.repair`, it then repairs in place through the backend (see Qcow2CheckOptions),
 * flushing between steps so that a crash leaves the image no worse, checks again and returns
 * that second report with `leaksFixed` / `corruptionsFixed`; when no corruption or check error
 * remains it clears the header's dirty and corrupt bits. It never allocates a cluster or grows a
 * table: a refcount that would need a new refcount block, or any fix QEMU makes by rebuilding the
 * refcount structure or rewriting L2 entries, is reported as unrepairable.
 *
 * The backend must not be written by anyone else meanwhile (an image open read-write elsewhere
 * shows its in-flight metadata as corruptions). Memory: one core instance holding about two
 * refcounts (at the image's width) per host cluster of the file, plus two clusters.
 * Errors: QCOW2_READ_ONLY (repair on a read-only backend), INVALID_ARGUMENT (bad options), the
 * header's errors (parseQcow2Header), QCOW2_UNSUPPORTED_FEATURE (persistent bitmaps; a file
 * too large to check in 4 GiB of memory), and backend errors (an I/O error stops the check).
 */
export async function checkQcow2(backend: Backend, options: Qcow2CheckOptions = {}): Promise<Qcow2CheckReport> {
  const { repair } = options;
  if (repair !== undefined && repair !== 'leaks' && repair !== 'all') {
    throw new ImageError('INVALID_ARGUMENT', `repair must be 'leaks' or 'all', not ${String(repair)}`);
  }
  const maxMessages = options.maxMessages ?? DEFAULT_MAX_MESSAGES;
  if (!Number.isSafeInteger(maxMessages) || maxMessages < 0) {
    throw new ImageError('INVALID_ARGUMENT', `maxMessages ${maxMessages} is not a count`);
  }
  if (repair !== undefined && !backend.capabilities.writable) {
    throw new ImageError('QCOW2_READ_ONLY', 'cannot repair the image: its backend is read-only');
  }
  const session = await CheckSession.open(backend, maxMessages);
  const header = session.header;
  const totalClusters = Math.ceil(Math.floor(header.virtualSize / 512) * 512 / header.clusterSize);
  const report = (found: PassCounts, fixed: { leaksFixed: number; corruptionsFixed: number }): Qcow2CheckReport => ({
    corruptions: found.corruptions,
    leaks: found.leaks,
    checkErrors: found.checkErrors,
    corruptionsFixed: fixed.corruptionsFixed,
    leaksFixed: fixed.leaksFixed,
    allocatedClusters: found.allocatedClusters,
    totalClusters,
    fragmentedClusters: found.fragmentedClusters,
    compressedClusters: found.compressedClusters,
    imageEndOffset: found.imageEndOffset,
    messages: session.log.finish(),
  });

  const found = await session.runPass();
  const isClean = (counts: PassCounts) => counts.corruptions === 0 && counts.checkErrors === 0;
  if (repair === undefined || found.corruptions + found.leaks + found.checkErrors === 0) {
    if (repair !== undefined && isClean(found)) await session.markClean();
    return report(found, { leaksFixed: 0, corruptionsFixed: 0 });
  }

  // Repair messages replace the first pass's (as qemu-img check -r prints "Repairing ..." where
  // a plain check prints "ERROR" or "Leaked"); the second pass adds what is still wrong.
  session.log = new MessageLog(maxMessages);
  const fixed = await session.repair(repair, found);
  const final = await session.runPass();
  if (isClean(final)) await session.markClean();
  return report(final, fixed);
}

/**
 * The report in the shape of `qemu-img check --output=json` (QEMU 7.2 omits zero counts, except
 * check-errors), for tools that print it.
 */
export function qemuCheckJson(report: Qcow2CheckReport, filename: string): Record<string, string | number> {
  const json: Record<string, string | number> = { filename, format: 'qcow2', 'check-errors': report.checkErrors };
  const optional: [string, number][] = [
    ['image-end-offset', report.imageEndOffset], ['corruptions', report.corruptions], ['leaks', report.leaks],
    ['corruptions-fixed', report.corruptionsFixed], ['leaks-fixed', report.leaksFixed],
    ['total-clusters', report.totalClusters], ['allocated-clusters', report.allocatedClusters],
    ['fragmented-clusters', report.fragmentedClusters], ['compressed-clusters', report.compressedClusters],
  ];
  for (const [key, value] of optional) if (value !== 0) json[key] = value;
  return json;
}

/**
 * qemu-img check's exit code for the report: 1 when the check was incomplete (check errors),
 * else 2 for corruptions, 3 for leaks only, 0 for a clean image.
 */
export function checkExitCode(report: Qcow2CheckReport): 0 | 1 | 2 | 3 {
  if (report.checkErrors > 0) return 1;
  if (report.corruptions > 0) return 2;
  return report.leaks > 0 ? 3 : 0;
}
