// SPDX-License-Identifier: MIT
// TypeScript face of one qcow2 image's wasm core: configures it from the header, loads the L1
// and refcount tables, satisfies its NEED records (slice loads, write-back), and wraps mapping,
// write planning and commit. One slice load at a time; the caller orders everything else.

import type { Backend } from '../backends/backend.js';
import {
  byteRegion, float64Region, instantiateCore, regionBounds, type CoreExports, type CoreInstance, CORE_CONSTANTS, CacheId,
  CopyField, CopySource as CopyCode, MappingCorruption, PlanField, PlanKind as PlanCode, Region, RunKind, Status,
  WriteState as WriteCode,
} from '../core/wasm.js';
import { ImageError } from '../base/errors.js';
import type { Qcow2Header } from './qcow2-header.js';

/** What a run of guest bytes reads as (assembly/mapping.ts RunKind). */
export { RunKind };

// The run record copyRuns reads: five f64 (a type error when assembly/layout.ts changes it).
CORE_CONSTANTS.RUN_STRIDE satisfies 40;

/** One mapped run: guest bytes [guestOffset, guestOffset + length). */
export interface MappedRun {
  kind: RunKind;
  guestOffset: number;
  length: number;
  /** DATA: host offset of the first byte; COMPRESSED: host offset of the compressed data. */
  hostOffset: number;
  /** COMPRESSED: bytes to read at hostOffset. */
  compressedBytes: number;
}

/** What a planned run does (assembly/allocate.ts PlanKind). */
export type PlanKind = 'in-place' | 'allocate' | 'allocate-subclusters' | 'fill-subclusters';
const PLAN_KINDS: Readonly<Record<number, PlanKind>> = {
  [PlanCode.IN_PLACE]: 'in-place', [PlanCode.ALLOCATE]: 'allocate', [PlanCode.ALLOCATE_SUBCLUSTERS]: 'allocate-subclusters',
  [PlanCode.FILL_SUBCLUSTERS]: 'fill-subclusters',
} satisfies Record<PlanCode, PlanKind>;

/**
 * Where the bytes of a copy come from (assembly/write-plan.ts CopySource): 'none' (nothing to
 * write), 'zeros' (write zeros), 'backing' (the backing file at the same guest range), 'data'
 * (image host bytes from hostOffset), 'compressed' (part of the compressed cluster at
 * hostOffset) or 'mapped' (mixed: read the guest range through the mapping).
 */
export type CopySource = 'none' | 'zeros' | 'backing' | 'data' | 'compressed' | 'mapped';
const COPY_SOURCES: Readonly<Record<number, CopySource>> = {
  [CopyCode.NONE]: 'none', [CopyCode.ZEROS]: 'zeros', [CopyCode.BACKING]: 'backing', [CopyCode.DATA]: 'data',
  [CopyCode.COMPRESSED]: 'compressed', [CopyCode.MAPPED]: 'mapped',
} satisfies Record<CopyCode, CopySource>;

/**
 * One copy the core asks for: guest bytes [guestOffset, guestOffset + bytes) as they read now,
 * from `source`; only the first sourceBytes come from it (the rest, past the virtual size, are
 * zeros).
 */
export interface CopyPlan {
  source: CopySource;
  guestOffset: number;
  bytes: number;
  sourceBytes: number;
  /** 'data': host offset of the first byte; 'compressed': host offset of the compressed data. */
  hostOffset: number;
  /** 'compressed': bytes to read at hostOffset. */
  compressedBytes: number;
}

/**
 * One planned write run (the core's write plan record): guest bytes [guestStart, guestEnd) go to
 * host bytes from hostStart. 'in-place' covers exactly the written bytes; the other kinds cover
 * whole clusters ('allocate') or whole subclusters, whose bytes around the written ones are the
 * head and tail copies, and need commit() afterwards, or abort() when the write failed.
 */
export interface WritePlan {
  kind: PlanKind;
  guestStart: number;
  guestEnd: number;
  hostStart: number;
  /** Host offset of the first cluster allocated for the plan (when takenClusters > 0). */
  takenHost: number;
  /** Host clusters allocated for the plan: commit() points entries at them, abort() releases them. */
  takenClusters: number;
  /** Whether the tail may stay pending (deferred copy-on-write) instead of being copied now. */
  tailDeferrable: boolean;
  /** The bytes from guestStart to the written data. */
  head: CopyPlan;
  /** The bytes from the written data to guestEnd. */
  tail: CopyPlan;
}


/**
 * Throws QCOW2_CORRUPT unless the host range [hostOffset, hostOffset + bytes), taken from the
 * image's metadata, can be addressed (JavaScript numbers address files up to 2^53 bytes).
 */
function checkImageHostRange(hostOffset: number, bytes: number, what: string): void {
  if (Number.isSafeInteger(hostOffset) && Number.isSafeInteger(hostOffset + bytes)) return;
  throw new ImageError('QCOW2_CORRUPT', `${what}: the image points at host offset 0x${BigInt(Math.trunc(hostOffset)).toString(16)}, ` +
    'past 2^53 bytes, which no file reaches: the image is corrupt (qemu-img check -r all may repair it)');
}

/** Throws QCOW2_CORRUPT unless the host bytes a copy reads can be addressed. */
function checkCopyRange(copy: CopyPlan): void {
  if (copy.source === 'data') checkImageHostRange(copy.hostOffset, copy.sourceBytes, `copying guest offset ${copy.guestOffset}`);
  if (copy.source === 'compressed') checkImageHostRange(copy.hostOffset, copy.compressedBytes, `copying guest offset ${copy.guestOffset}`);
}

/** The guest run and host start of a written plan, what commit() records. */
export type CommitRange = Pick<WritePlan, 'kind' | 'guestStart' | 'guestEnd' | 'hostStart'>;

/** A dirty metadata slice copied out for write-back. */
export interface DirtySlice { cache: number; slot: number; hostOffset: number; generation: number; bytes: Uint8Array }

/** A copy of a shared L2 table in progress: from the shared table to the new cluster (host offsets). */
export interface TableCopy { l1Index: number; sourceHost: number; targetHost: number }

const CORRUPTION_NAMES: Readonly<Record<number, string>> = {
  [MappingCorruption.L1_RESERVED_BITS]: 'reserved bits set in an L1 entry',
  [MappingCorruption.L2_TABLE_UNALIGNED]: 'L2 table offset not cluster-aligned',
  [MappingCorruption.L2_RESERVED_BITS]: 'reserved bits set in an L2 entry',
  [MappingCorruption.DATA_CLUSTER_UNALIGNED]: 'data cluster offset not cluster-aligned',
  [MappingCorruption.COMPRESSED_OFFSET_TOO_LARGE]: 'compressed cluster offset too large',
  [MappingCorruption.SUBCLUSTER_ALLOC_AND_ZERO]: 'subcluster both allocated and zero',
  [MappingCorruption.SUBCLUSTER_ALLOC_WITHOUT_CLUSTER]: 'subcluster allocated in an unallocated cluster',
  [MappingCorruption.EXTENDED_ENTRY_ZERO_FLAG]: 'zero flag set in an extended L2 entry',
} satisfies Record<Exclude<MappingCorruption, typeof MappingCorruption.NONE>, string>;

/** Default L2 cache size: 1 MiB, which maps 8 GiB of guest space with 64 KiB clusters. */
export const DEFAULT_CACHE_BYTES = 1 << 20;

/** The image's core: tables, caches, mapping and planning. */
export class Qcow2Core {
  /** The refcount and L2 cache ids (assembly/cache.ts CacheId). */
  static readonly CACHE_L2 = CacheId.L2;
  static readonly CACHE_REFCOUNT = CacheId.REFCOUNT;
  readonly memory: WebAssembly.Memory;
  /** The wasm instance (the image's merge core runs in it too, so gap merges can see the L2 cache). */
  readonly instance: CoreInstance;
  private readonly x: CoreExports;
  private readonly runs: Float64Array;
  private readonly freed: Float64Array;
  /** The write plan record (assembly/write-plan.ts). */
  private readonly planRecord: Float64Array;
  /** One u8 write state per cluster (assembly/write-state.ts classifyClusters). */
  private readonly clusterStates: Uint8Array;
  private l1Offset = 0;
  private reftableOffset = 0;
  private reftableCapacity = 0;
  private readonly header: Qcow2Header;
  private cacheBytes = DEFAULT_CACHE_BYTES;
  private sliceLoad: Promise<void> | undefined;
  /** Called when the refcount table is full: must grow it (Qcow2Writeback.growReftable). */
  onGrowthNeeded: () => Promise<void> = () => Promise.reject(new ImageError('QCOW2_NO_SPACE', 'the refcount table is full'));
  /** Called when a cache holds only dirty slices: must write metadata back. */
  onWritebackNeeded: () => Promise<void> = () => Promise.reject(new ImageError('WASM_INTERNAL', 'metadata cache full on a read-only image'));
  /**
   * Called when an L2 entry must change in a table shared with a snapshot (its L1 entry
   * `l1Index` lacks COPIED): must copy the table (allocateTableCopy ... switchToTableCopy).
   */
  onTableCopyNeeded: (l1Index: number) => Promise<void> = () => Promise.reject(new ImageError('WASM_INTERNAL', 'an L2 table copy on a read-only image'));

  private constructor(core: CoreInstance, header: Qcow2Header) {
    this.memory = core.memory;
    this.instance = core;
    this.header = header;
    this.x = core.exports;
    this.runs = float64Region(core, Region.RUNS);
    this.freed = float64Region(core, Region.FREED);
    this.planRecord = float64Region(core, Region.PLAN);
    this.clusterStates = byteRegion(core, Region.CLUSTER_STATES);
  }

  // The table regions exist once configureImage has placed them.
  private locateTables(): void {
    this.l1Offset = regionBounds(this.instance, Region.L1_TABLE).offset;
    ({ offset: this.reftableOffset, bytes: this.reftableCapacity } = regionBounds(this.instance, Region.REFTABLE));
  }

  /**
   * Creates the core for an image with `header` in `backend` (of `fileSize` bytes) and reads its
   * L1 and refcount tables. `cacheBytes` sizes the L2 slice cache (default DEFAULT_CACHE_BYTES).
   */
  static async create(probe: CoreInstance, header: Qcow2Header, backend: Backend, fileSize: number,
                      cacheBytes = DEFAULT_CACHE_BYTES): Promise<Qcow2Core> {
    if (!Number.isFinite(cacheBytes) || cacheBytes < 0) throw new ImageError('INVALID_ARGUMENT', `cacheBytes ${cacheBytes} is not a byte count`);
    const reftableBytes = header.refcountTableClusters * header.clusterSize;
    const bytes = probe.exports.requiredMemoryBytes(header.clusterBits, header.l1Size, reftableBytes, cacheBytes);
    if (bytes < 0) throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', `an L1 table of ${header.l1Size} entries or a refcount table of ${reftableBytes} bytes is too large`);
    const instance = await instantiateCore(Math.ceil(bytes / 65536));
    const core = new Qcow2Core(instance, header);
    core.cacheBytes = cacheBytes;
    await core.configure(header, backend, fileSize);
    return core;
  }

  // Places the tables for `header` (dropping every cached slice) and reads the L1 and refcount tables.
  private async configure(header: Qcow2Header, backend: Backend, fileSize: number): Promise<void> {
    const reftableBytes = header.refcountTableClusters * header.clusterSize;
    if (!this.fitsTables(header.l1Size, header.refcountTableClusters)) {
      throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', `the tables grew past this open image's memory (L1 ${header.l1Size} entries, refcount table ${reftableBytes} bytes): reopen the image`);
    }
    const status = this.x.configureImage(header.clusterBits, header.flags.extendedL2 ? 1 : 0, header.flags.externalDataFile ? 1 : 0,
      header.virtualSize, header.l1Size, header.refcountOrder, reftableBytes, this.cacheBytes, fileSize);
    if (status !== 0) throw new ImageError('WASM_INTERNAL', `configureImage failed with status ${status}`);
    this.locateTables();
    const reads: Promise<void>[] = [];
    if (header.l1Size > 0) reads.push(backend.preadv(header.l1TableOffset, [this.view(this.l1Offset, header.l1Size * 8)]));
    if (reftableBytes > 0) reads.push(backend.preadv(header.refcountTableOffset, [this.view(this.reftableOffset, reftableBytes)]));
    await Promise.all(reads);
  }

  /** Whether this core's memory holds an L1 table of `l1Entries` and a refcount table of `reftableClusters` (reload). */
  fitsTables(l1Entries: number, reftableClusters: number): boolean {
    const bytes = this.x.requiredMemoryBytes(this.header.clusterBits, l1Entries, reftableClusters * this.header.clusterSize, this.cacheBytes);
    return bytes >= 0 && bytes <= this.memory.buffer.byteLength;
  }

  /**
   * After the image's metadata was rewritten outside this core (snapshot operations): takes the
   * fields of `header` (the new header, parsed) into the header this core and its image share,
   * drops every cached slice and reads the tables again. Call only with nothing dirty and no
   * call in flight (after a flush, inside an exclusive section).
   */
  async reload(header: Qcow2Header, backend: Backend, fileSize: number): Promise<void> {
    if (this.sliceLoad) throw new ImageError('WASM_INTERNAL', 'metadata reloaded while a slice load was in flight');
    Object.assign(this.header, header);
    await this.configure(this.header, backend, fileSize);
  }

  private view(offset: number, length: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, offset, length);
  }

  // Runs a core call (returning a Status) until it stops asking for I/O: loads slices (one at a
  // time per image) and writes metadata back when a cache is full of dirty slices. Returns the
  // final Status. Results in linear memory must be copied inside `call`: other calls may run
  // during any await.
  private async satisfy(call: () => number, tables: Backend): Promise<number> {
    let status = call();
    for (;;) {
      if (status === Status.NEED_TABLE) status = (await this.loadNeededSlice(tables, call)) ?? call();
      else if (status === Status.NEED_WRITEBACK) {
        await this.onWritebackNeeded();
        status = call();
      } else if (status === Status.NEED_GROWTH) {
        await this.onGrowthNeeded();
        status = call();
      } else if (status === Status.NEED_TABLE_COPY) {
        await this.onTableCopyNeeded(this.x.needL1Index());
        status = call();
      } else return status;
    }
  }

  // Loads the slice the last NEED_TABLE named and retries `call` (again while it needs slices)
  // before any other caller may load, and so evict, a slice: with more callers than cache slots,
  // each would otherwise evict the others' slices before they used them, forever. Returns the
  // retry's status, or undefined when a load was already running (then it waits for it, and the
  // caller retries). The need is read at once, before any other call can replace it.
  private async loadNeededSlice(tables: Backend, call: () => number): Promise<number | undefined> {
    if (this.sliceLoad) {
      await this.sliceLoad;
      return undefined;
    }
    let status: number = Status.NEED_TABLE;
    this.sliceLoad = (async () => {
      while (status === Status.NEED_TABLE) {
        const cache = this.x.needCacheId();
        const hostOffset = this.x.needHostOffset();
        checkImageHostRange(hostOffset, this.x.sliceBytes() >>> 0, 'loading a metadata table');
        const slot = this.x.beginSliceLoad(cache);
        if (slot < 0) {
          await this.onWritebackNeeded();
          status = call();
          continue;
        }
        try {
          await tables.preadv(hostOffset, [this.view(this.x.slotAddress(cache, slot) >>> 0, this.x.sliceBytes() >>> 0)]);
        } catch (error) {
          this.x.abandonSliceLoad(cache, slot);
          throw error;
        }
        this.x.commitSliceLoad(cache, slot, hostOffset);
        status = call();
      }
    })().finally(() => { this.sliceLoad = undefined; });
    await this.sliceLoad;
    return status;
  }

  private statusError(status: number, what: string): ImageError {
    if (status === Status.CORRUPT) {
      const reason = CORRUPTION_NAMES[this.x.corruptReason()] ?? 'an invalid table entry';
      return new ImageError('QCOW2_CORRUPT', `${what}: ${reason} (guest offset ${this.x.corruptGuestOffset()})`);
    }
    if (status === Status.NO_SPACE) return new ImageError('QCOW2_NO_SPACE', `${what}: the refcount table is full (growing it is not implemented yet)`);
    return new ImageError('WASM_INTERNAL', `${what} failed with status ${status}`);
  }

  /**
   * Maps guest [guestOffset, guestOffset + length) (non-empty, inside the image), loading slices
   * from `tables`. Returns runs tiling a prefix of the range; call again for the rest.
   */
  async map(guestOffset: number, length: number, tables: Backend): Promise<MappedRun[]> {
    let runs: MappedRun[] = [];
    const status = await this.satisfy(() => {
      const result = this.x.mapRange(guestOffset, length);
      if (result > 0) runs = this.copyRuns(result);
      return result > 0 ? 0 : -result;
    }, tables);
    if (status !== 0) throw this.statusError(status, `mapping guest offset ${guestOffset}`);
    return runs;
  }

  /**
   * The host offset of guest [guestOffset, guestOffset + length) when cached metadata maps all of
   * it to one data run, without an async step or an allocation; -1 for anything else (then call
   * map(), which also reports what is wrong).
   */
  mapOneDataRun(guestOffset: number, length: number): number {
    if (this.x.mapRange(guestOffset, length) !== 1) return -1;
    const r = this.runs;
    const hostOffset = r[3];
    return r[0] === RunKind.DATA && r[2] === length && Number.isSafeInteger(hostOffset + length) ? hostOffset : -1;
  }

  private copyRuns(count: number): MappedRun[] {
    const runs: MappedRun[] = new Array(count);
    const r = this.runs;
    for (let i = 0; i < count; i++) {
      const at = 5 * i;
      runs[i] = { kind: r[at] as RunKind, guestOffset: r[at + 1], length: r[at + 2], hostOffset: r[at + 3], compressedBytes: r[at + 4] };
      const run = runs[i];
      if (run.kind === RunKind.DATA || run.kind === RunKind.COMPRESSED) {
        checkImageHostRange(run.hostOffset, run.kind === RunKind.DATA ? run.length : run.compressedBytes,
          `${run.kind === RunKind.DATA ? 'data' : 'compressed'} cluster of guest offset ${run.guestOffset}`);
      }
    }
    return runs;
  }

  /**
   * Tells the core the guest bytes the backing file supplies (its virtual size; 0 without one):
   * copy-on-write of unallocated bytes past it needs no read.
   */
  setBackingBytes(bytes: number): void {
    this.x.setBackingBytes(bytes);
  }

  /**
   * Appends to `out` the guest cluster indexes of [guestOffset, guestOffset + length) that a
   * write would not (as far as cached metadata tells, without I/O) write in place: the clusters
   * whose metadata it may change. One core call per 4096 clusters.
   */
  clustersNotInPlace(guestOffset: number, length: number, out: number[]): void {
    const clusterBytes = this.header.clusterSize;
    const end = guestOffset + length;
    for (let cluster = Math.floor(guestOffset / clusterBytes); cluster * clusterBytes < end;) {
      const count = this.x.classifyClusters(cluster * clusterBytes, end - cluster * clusterBytes);
      for (let i = 0; i < count; i++) if (this.clusterStates[i] !== WriteCode.IN_PLACE) out.push(cluster + i);
      cluster += count;
    }
  }

  /**
   * The host offset of guest [guestOffset, guestOffset + length) when the whole write goes in
   * place to one host range and cached metadata tells so, without an async step or an
   * allocation; -1 otherwise (then call plan(), which also reports what is wrong). Changes nothing.
   */
  inPlaceHostOffset(guestOffset: number, length: number): number {
    const hostOffset = this.x.inPlaceHostOffset(guestOffset, length);
    return hostOffset >= 0 && Number.isSafeInteger(hostOffset + length) ? hostOffset : -1;
  }

  /**
   * Plans the first run of a write of guest [guestOffset, guestOffset + length): the core's write
   * plan record. An allocating plan has taken its clusters: commit() or abort() it.
   */
  async plan(guestOffset: number, length: number, tables: Backend): Promise<WritePlan> {
    let plan: WritePlan | undefined;
    const status = await this.satisfy(() => {
      const result = this.x.planWrite(guestOffset, length);
      if (result === 0) plan = this.readPlan();
      return result;
    }, tables);
    if (status !== 0 || !plan) throw this.statusError(status, `planning a write at guest offset ${guestOffset}`);
    try {
      checkImageHostRange(plan.hostStart, plan.guestEnd - plan.guestStart, `writing guest offset ${guestOffset}`);
      checkCopyRange(plan.head);
      checkCopyRange(plan.tail);
    } catch (error) {
      await this.abort(plan, tables);
      throw error;
    }
    return plan;
  }

  // The plan record as the last planWrite left it.
  private readPlan(): WritePlan {
    const r = this.planRecord;
    return {
      kind: PLAN_KINDS[r[PlanField.KIND]], guestStart: r[PlanField.GUEST_START], guestEnd: r[PlanField.GUEST_END],
      hostStart: r[PlanField.HOST_START], takenHost: r[PlanField.TAKEN_HOST], takenClusters: r[PlanField.TAKEN_CLUSTERS],
      tailDeferrable: r[PlanField.TAIL_DEFERRABLE] !== 0, head: this.readCopy(PlanField.HEAD), tail: this.readCopy(PlanField.TAIL),
    };
  }

  // The copy record at field `at` of the plan record.
  private readCopy(at: number): CopyPlan {
    const r = this.planRecord;
    return {
      source: COPY_SOURCES[r[at + CopyField.SOURCE]], guestOffset: r[at + CopyField.GUEST_OFFSET], bytes: r[at + CopyField.BYTES],
      sourceBytes: r[at + CopyField.SOURCE_BYTES], hostOffset: r[at + CopyField.HOST_OFFSET],
      compressedBytes: r[at + CopyField.COMPRESSED_BYTES],
    };
  }

  /**
   * Where guest [guestOffset, guestOffset + bytes) (inside one cluster) reads from now, to copy
   * it to a cluster that reads as zeros by itself (`targetFresh`: zeros then need nothing) or
   * to any other place (zeros come back as 'zeros').
   */
  async describeContent(guestOffset: number, bytes: number, targetFresh: boolean, tables: Backend): Promise<CopyPlan> {
    let copy: CopyPlan | undefined;
    const status = await this.satisfy(() => {
      const result = this.x.describeContent(guestOffset, bytes, targetFresh ? 1 : 0);
      if (result === 0) copy = this.readCopy(PlanField.CONTENT);
      return result;
    }, tables);
    if (status !== 0 || !copy) throw this.statusError(status, `reading what guest offset ${guestOffset} holds`);
    checkCopyRange(copy);
    return copy;
  }

  /**
   * Records a written plan in the L2 entries: points them at new clusters ('allocate',
   * 'allocate-subclusters') and marks written subclusters allocated. Returns the host cluster
   * offsets the old entries referenced (release them after the new entries are on disk). When it
   * fails, no entry changed (a plan's entries are in one slice, changed in one step once it is
   * cached): the caller may abort() the plan.
   */
  async commit(plan: CommitRange, tables: Backend): Promise<number[]> {
    const clusterCount = (plan.guestEnd - plan.guestStart) / this.header.clusterSize;
    const isNew = plan.kind === 'allocate-subclusters' ? 1 : 0;
    let done = 0;
    const freed: number[] = [];
    const status = await this.satisfy(() => {
      const result = plan.kind === 'allocate'
        ? this.x.commitAllocation(plan.guestStart, clusterCount, plan.hostStart, done)
        : this.x.commitSubclusters(plan.guestStart, plan.guestEnd, plan.hostStart, isNew, done);
      done = this.x.committedCountOf();
      freed.push(...this.freed.subarray(0, this.x.freedCountOf()));
      return result;
    }, tables);
    if (status !== 0) throw this.statusError(status, `committing a write at guest offset ${plan.guestStart}`);
    return freed;
  }

  /**
   * Gives back the host clusters a plan took when its write failed before commit (QEMU's
   * qcow2_alloc_cluster_abort): their refcounts drop back to 0 (nothing points at them). The
   * clusters are not allocated again by this instance (allocation only moves forward), so bytes a
   * failed write left in them are never read.
   */
  async abort(plan: WritePlan, tables: Backend): Promise<void> {
    await this.releaseClusters(plan.takenHost, plan.takenClusters, tables);
  }

  /** Lowers the refcounts of `count` host clusters from `hostOffset` by one each. */
  async releaseClusters(hostOffset: number, count: number, tables: Backend): Promise<void> {
    for (let i = 0; i < count; i++) await this.release(hostOffset + i * this.header.clusterSize, tables);
  }

  /**
   * Makes whole guest clusters from `guestStart` read as zeros by metadata alone: with the zero
   * flag (`zeroFlag`; reads as zeros over a backing file) or by unallocating them. Returns the
   * host cluster offsets the old entries referenced (release them after the change is on disk).
   */
  async zeroClusters(guestStart: number, clusterCount: number, zeroFlag: boolean, tables: Backend): Promise<number[]> {
    let done = 0;
    const freed: number[] = [];
    const status = await this.satisfy(() => {
      const result = this.x.zeroClusters(guestStart, clusterCount, zeroFlag ? 0 : 1, done);
      done = this.x.committedCountOf();
      freed.push(...this.freed.subarray(0, this.x.freedCountOf()));
      return result;
    }, tables);
    if (status !== 0) throw this.statusError(status, `zeroing clusters at guest offset ${guestStart}`);
    return freed;
  }

  /**
   * Extended L2: makes the whole subclusters of [guestStart, guestEnd) (inside one cluster) read
   * as zeros by metadata alone. Returns false for a compressed cluster (write zeros instead).
   */
  async zeroSubclusters(guestStart: number, guestEnd: number, tables: Backend): Promise<boolean> {
    const status = await this.satisfy(() => this.x.zeroSubclusters(guestStart, guestEnd), tables);
    if (status === Status.UNSUPPORTED) return false;
    if (status !== 0) throw this.statusError(status, `zeroing subclusters at guest offset ${guestStart}`);
    return true;
  }

  /**
   * First step of copying the shared L2 table of L1 entry `l1Index`: allocates the cluster for
   * the copy (refcount 1). Returns where to copy from and to, or undefined when the entry needs no
   * copy (any more: another caller copied it). The caller writes the table's bytes to the new
   * cluster, makes them durable, then calls switchToTableCopy.
   */
  async allocateTableCopy(l1Index: number, tables: Backend): Promise<TableCopy | undefined> {
    let copy: TableCopy | undefined;
    const status = await this.satisfy(() => {
      const result = this.x.allocateTableCopy(l1Index);
      const targetHost = this.x.tableCopyTargetOf();
      copy = result === 0 && targetHost !== 0 ? { l1Index, sourceHost: this.x.tableCopySourceOf(), targetHost } : undefined;
      return result;
    }, tables);
    if (status !== 0) throw this.statusError(status, `allocating a copy of the L2 table of L1 entry ${l1Index}`);
    return copy;
  }

  /**
   * Last step of a table copy, once the copy is durable: points its L1 entry at the copy (with
   * COPIED), in memory; write-back writes it. The shared table's refcount is the caller's to
   * lower once that L1 entry is on disk.
   */
  switchToTableCopy(copy: TableCopy): void {
    if (this.x.switchToTableCopy(copy.l1Index, copy.sourceHost, copy.targetHost) !== 0) {
      throw new ImageError('WASM_INTERNAL', `L1 entry ${copy.l1Index} changed while its L2 table at host offset ${copy.sourceHost} was copied`);
    }
  }

  /** Lowers the refcount of the host cluster at `hostOffset` by one. */
  async release(hostOffset: number, tables: Backend): Promise<void> {
    const status = await this.satisfy(() => this.x.releaseCluster(hostOffset), tables);
    if (status !== 0) throw this.statusError(status, `releasing host cluster ${hostOffset}`);
  }

  /** Copies of the dirty slices of `cache`, with what markClean needs. */
  dirtySlices(cache: number): DirtySlice[] {
    const out: DirtySlice[] = [];
    const bytes = this.x.sliceBytes() >>> 0;
    const count = this.x.slotCount(cache);
    for (let slot = 0; slot < count; slot++) {
      if (!this.x.isSlotDirty(cache, slot)) continue;
      out.push({
        cache, slot, hostOffset: this.x.slotHostOffset(cache, slot), generation: this.x.slotGeneration(cache, slot) >>> 0,
        bytes: this.view(this.x.slotAddress(cache, slot) >>> 0, bytes).slice(),
      });
    }
    return out;
  }

  /** Marks a written slice clean unless it changed since it was copied. */
  markClean(slice: DirtySlice): void {
    this.x.markSlotClean(slice.cache, slice.slot, slice.generation);
  }

  /** A copy of the dirty part of the L1 table, or undefined: [first entry index, bytes, generation]. */
  dirtyL1(): { firstIndex: number; bytes: Uint8Array; generation: number } | undefined {
    const first = this.x.l1DirtyFirstOf();
    if (first < 0) return undefined;
    const end = this.x.l1DirtyEndOf();
    return { firstIndex: first, bytes: this.view(this.l1Offset + first * 8, (end - first) * 8).slice(), generation: this.x.l1ChangeCount() >>> 0 };
  }

  /** Marks the L1 table written unless it changed since `generation`. */
  markL1Clean(generation: number): void {
    this.x.markL1Clean(generation);
  }

  /** A copy of the refcount table when it has unwritten changes. */
  dirtyReftable(): { bytes: Uint8Array; generation: number } | undefined {
    if (!this.x.reftableDirty()) return undefined;
    const bytes = this.header.refcountTableClusters * this.header.clusterSize;
    return { bytes: this.view(this.reftableOffset, bytes).slice(), generation: this.x.reftableChangeCount() >>> 0 };
  }

  /**
   * Grows the refcount table into a refcount area at the next fresh cluster (assembly/refcount.ts
   * growReftable) and moves allocation past it. Returns where the new table is and the in-memory
   * table's bytes to write there, with the table's change counter at the copy (for
   * markReftableClean), or undefined when the refcount cache lacks clean slots for the new
   * blocks (nothing changed: write back and retry). Throws QCOW2_NO_SPACE when the table cannot
   * grow further.
   */
  growReftable(): { hostOffset: number; clusters: number; bytes: Uint8Array; generation: number } | undefined {
    const areaEnd = this.x.growReftable(this.x.allocationHintCluster(), this.reftableCapacity);
    if (areaEnd === -1) throw new ImageError('QCOW2_NO_SPACE', 'the refcount table cannot grow further (8 MiB, or the space reserved for it)');
    if (areaEnd < 0) return undefined;
    this.x.skipAllocationTo(areaEnd);
    const clusters = this.x.grownTableClusterCount();
    return {
      hostOffset: this.x.grownTableHostOffset(), clusters, generation: this.x.reftableChangeCount() >>> 0,
      bytes: this.view(this.reftableOffset, clusters * this.header.clusterSize).slice(),
    };
  }

  /** Marks the refcount table written unless it changed since `generation`. */
  markReftableClean(generation: number): void {
    this.x.markReftableClean(generation);
  }
}
