// SPDX-License-Identifier: MIT
// TypeScript face of one qcow2 image's wasm core, the part the read and write paths call:
// mapping guest ranges, write planning (the core's write plan record), commit and abort, zeroing,
// table copies and cluster release. Its bases hold the rest: the tables and the write-back's
// accessors (qcow2-core-tables.ts) and the loop that satisfies NEED records (qcow2-core-needs.ts).
// One slice load at a time; the caller orders everything else.

import type { Backend } from '../backends/backend.js';
import {
  byteRegion, float64Region, instantiateCore, type CoreInstance, CORE_CONSTANTS, CacheId, PlanField, Region, RunKind, Status,
  WriteState as WriteCode,
} from '../core/wasm.js';
import { ImageError } from '../base/errors.js';
import type { Qcow2Header } from './qcow2-header.js';
import { DEFAULT_CACHE_BYTES, Qcow2CoreTables } from './qcow2-core-tables.js';
import {
  checkCopyRange, checkImageHostRange, readCopyPlan, readWritePlan, type CommitRange, type CopyPlan, type WritePlan,
} from './qcow2-write-plan-record.js';

/** What a run of guest bytes reads as (assembly/mapping.ts RunKind). */
export { RunKind };
/** A dirty metadata slice copied out for write-back (Qcow2Core.dirtySlices). */
export type { DirtySlice } from './qcow2-core-tables.js';

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

/** A copy of a shared L2 table in progress: from the shared table to the new cluster (host offsets). */
export interface TableCopy { l1Index: number; sourceHost: number; targetHost: number }

/** The image's core: tables, caches, mapping and planning. */
export class Qcow2Core extends Qcow2CoreTables {
  /** The refcount and L2 cache ids (assembly/cache.ts CacheId). */
  static readonly CACHE_L2 = CacheId.L2;
  static readonly CACHE_REFCOUNT = CacheId.REFCOUNT;
  private readonly runs: Float64Array;
  private readonly freed: Float64Array;
  /** The write plan record (assembly/write-plan.ts). */
  private readonly planRecord: Float64Array;
  /** One u8 write state per cluster (assembly/write-state.ts classifyClusters). */
  private readonly clusterStates: Uint8Array;

  private constructor(core: CoreInstance, header: Qcow2Header) {
    super(core, header);
    this.runs = float64Region(core, Region.RUNS);
    this.freed = float64Region(core, Region.FREED);
    this.planRecord = float64Region(core, Region.PLAN);
    this.clusterStates = byteRegion(core, Region.CLUSTER_STATES);
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
    // One cluster of plain data (nearly every small read) needs no RUNS record.
    const inCluster = this.x.mapDataInCluster(guestOffset, length);
    if (inCluster >= 0) return Number.isSafeInteger(inCluster + length) ? inCluster : -1;
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
      if (result === 0) plan = readWritePlan(this.planRecord);
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

  /**
   * Where guest [guestOffset, guestOffset + bytes) (inside one cluster) reads from now, to copy
   * it to a cluster that reads as zeros by itself (`targetFresh`: zeros then need nothing) or
   * to any other place (zeros come back as 'zeros').
   */
  async describeContent(guestOffset: number, bytes: number, targetFresh: boolean, tables: Backend): Promise<CopyPlan> {
    let copy: CopyPlan | undefined;
    const status = await this.satisfy(() => {
      const result = this.x.describeContent(guestOffset, bytes, targetFresh ? 1 : 0);
      if (result === 0) copy = readCopyPlan(this.planRecord, PlanField.CONTENT);
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


}
