// SPDX-License-Identifier: MIT
// The qcow2 write path: executes the core's write plans. A merged extent is planned run by run
// (Qcow2Core.plan: in place, or new clusters with the copy-on-write of the uncovered head and
// tail named in the plan), the copies are read from where the plan says, runs whose host ranges
// continue each other go out as one host write, and new clusters are committed once written. A
// plan whose data write (or copy read) fails is aborted: its clusters are released, nothing
// leaks. Deferred copy-on-write (qcow2-deferred-cow.ts) keeps the tail of a last new cluster
// pending when the plan says it may. Nothing here interprets qcow2 metadata: the core decides.

import { COMPLETED, type Backend } from '../backends/backend.js';
import type { ImageStats } from '../dispatch/image.js';
import type { Qcow2Header } from './qcow2-header.js';
import type { Qcow2Core } from './qcow2-core.js';
import type { CommitRange, CopyPlan, WritePlan } from './qcow2-write-plan-record.js';
import type { Qcow2OverlapGuard } from './qcow2-overlap.js';
import type { Qcow2Writeback } from './qcow2-writeback.js';
import type { GapRange } from '../dispatch/multiwrite.js';
import type { DeferredCow, PendingCluster } from './qcow2-deferred-cow.js';
import { ClusterLocks } from './cluster-locks.js';
import { appendSlices, spliceVector } from '../base/iovec.js';
import { allSettledOrThrow } from '../base/settle.js';

/** What the write path needs from its image: reads of what guest bytes hold now, and host writes. */
export interface WritePathHost {
  /** The image's counters (cowBytes, gapBytes; host writes are counted by writeToBackend). */
  readonly counters: ImageStats;
  /** Reads guest bytes through the committed mapping (what they read now, pending clusters aside). */
  readMapped(guestOffset: number, target: Uint8Array): Promise<void>;
  /** Reads guest bytes from the backing file (zeros past its end or without one). */
  readBacking(guestOffset: number, target: Uint8Array): Promise<void>;
  /** The whole inflated cluster whose compressed data is `compressedBytes` at host `hostOffset`. */
  inflated(hostOffset: number, compressedBytes: number): Promise<Uint8Array>;
  /** Writes `buffers` to `backend` at `position`, split to the backend's limits, counted. */
  writeToBackend(backend: Backend, position: number, buffers: Uint8Array[]): Promise<void>;
}

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

/** The write path of one qcow2 image. */
export class Qcow2WritePath {
  private readonly locks = new ClusterLocks();

  /**
   * Writes go to `dataBackend` (the image file, or its external data file); metadata slices are
   * loaded from `backend`. `deferred` is the table of pending clusters (undefined: deferred
   * copy-on-write is off).
   */
  constructor(private readonly core: Qcow2Core, private readonly backend: Backend, private readonly dataBackend: Backend,
              private readonly header: Qcow2Header, private readonly overlap: Qcow2OverlapGuard,
              private readonly writeback: Qcow2Writeback, readonly deferred: DeferredCow | undefined,
              private readonly host: WritePathHost) {}

  /**
   * Writes one merged extent (ordered by the caller behind every earlier overlapping read and
   * write). The usual rewrite, with nothing pending nearby and cached metadata saying so, goes in
   * place with one host write and no lock. Otherwise it holds the locks of every cluster whose
   * metadata it may change (those the core does not call in place, and pending ones), fills the
   * merge's gaps with what they read now, and writes plan by plan.
   */
  writeExtent(guestOffset: number, length: number, buffers: Uint8Array[], gaps: readonly GapRange[]): Promise<void> {
    if (gaps.length === 0 && !this.hasPendingIn(guestOffset, guestOffset + length)) {
      const hostOffset = this.core.inPlaceHostOffset(guestOffset, length);
      if (hostOffset >= 0) {
        return this.overlap.isClear('data', hostOffset, length)
          ? this.host.writeToBackend(this.dataBackend, hostOffset, buffers)
          : this.overlap.check('data', hostOffset, length).then(() => this.host.writeToBackend(this.dataBackend, hostOffset, buffers));
      }
    }
    if (gaps.length === 0) {
      const extended = this.extendPending(guestOffset, length, buffers, false);
      if (extended) return extended;
    }
    const locked: number[] = [];
    this.core.clustersNotInPlace(guestOffset, length, locked);
    // A pending cluster is locked even when its entry already reads in place: its commit may be
    // in progress (the entry set, the cluster not yet out of the pending table).
    const pending = this.deferred?.overlapping(guestOffset, guestOffset + length) ?? [];
    if (pending.length > 0) {
      const distinct = new Set(locked);
      for (const cluster of pending) distinct.add(cluster.guestStart / this.header.clusterSize);
      locked.splice(0, locked.length, ...distinct);
    }
    const write = async () => {
      // Behind a writer of the same cluster (a sequential guest's next piece): usually an extension now.
      const extended = gaps.length === 0 ? this.extendPending(guestOffset, length, buffers, true) : undefined;
      if (extended) return extended;
      const data = gaps.length === 0 ? buffers : await this.fillGaps(guestOffset, length, buffers, gaps);
      await this.writeRuns(guestOffset, length, data);
    };
    return locked.length === 0 ? write() : this.locks.run(locked, write);
  }

  // The next bytes of a pending cluster, short of its end (a sequential guest writing a new
  // cluster piece by piece), written with one host write and recorded, without the general path's
  // planning. `holdsLock`: the caller holds the cluster's lock. Otherwise it applies only when
  // nobody holds it: a host write that finishes before returning (COMPLETED) needs no lock, as
  // nothing else can run in between; one still in flight takes the (free) lock until it is
  // recorded. Undefined when it does not apply: the general path takes the write.
  private extendPending(guestOffset: number, length: number, buffers: Uint8Array[], holdsLock: boolean): Promise<void> | undefined {
    if (this.deferred === undefined || this.deferred.size === 0) return undefined;
    const clusterBytes = this.header.clusterSize;
    const clusterStart = Math.floor(guestOffset / clusterBytes) * clusterBytes;
    const pending = this.deferred.get(clusterStart);
    const filledEnd = guestOffset + length - clusterStart;
    const cluster = clusterStart / clusterBytes;
    if (pending === undefined || guestOffset - clusterStart > pending.filledBytes || filledEnd >= clusterBytes) return undefined;
    if (!holdsLock && this.locks.isHeld(cluster)) return undefined;
    const hostStart = pending.hostStart + (guestOffset - clusterStart);
    if (!this.overlap.isClear('data', hostStart, length)) return undefined;
    const written = this.host.writeToBackend(this.dataBackend, hostStart, buffers);
    const record = () => { this.deferred!.extend(pending, filledEnd); };
    if (written === COMPLETED) {
      record();
      return written;
    }
    return holdsLock ? written.then(record) : this.locks.run([cluster], () => written.then(record));
  }

  /** Whether a pending cluster (deferred copy-on-write) overlaps guest [start, end). */
  hasPendingIn(start: number, end: number): boolean {
    if (this.deferred === undefined || this.deferred.size === 0) return false;
    const clusterBytes = this.header.clusterSize;
    return this.deferred.firstStartIn(Math.floor(start / clusterBytes) * clusterBytes, end) !== undefined;
  }

  /** Completes every pending cluster overlapping guest [start, end) (before a metadata-only change). */
  settlePending(start: number, end: number): Promise<void> {
    const due = this.deferred?.overlapping(start, end) ?? [];
    return due.length === 0 ? Promise.resolve() : this.completePendingLocked(due);
  }

  /** Completes pending clusters, taking their locks. */
  completePendingLocked(clusters: readonly PendingCluster[]): Promise<void> {
    const clusterBytes = this.header.clusterSize;
    return allSettledOrThrow([...clusters].sort((a, b) => a.guestStart - b.guestStart).map((cluster) =>
      this.locks.run([cluster.guestStart / clusterBytes], () => this.completePending(cluster))));
  }

  // Replaces the zero placeholders of the gaps with what the gaps read now, unless the core says
  // that is zeros (a fresh cluster without backing data: the common case, nothing to read). A
  // pending cluster under a gap is completed first. The caller holds the gaps' cluster locks.
  private async fillGaps(guestOffset: number, length: number, buffers: Uint8Array[], gaps: readonly GapRange[]): Promise<Uint8Array[]> {
    const replacements: { offset: number; data: Uint8Array }[] = [];
    for (const gap of gaps) {
      this.host.counters.gapBytes += gap.end - gap.start;
      for (const cluster of this.deferred?.overlapping(gap.start, gap.end) ?? []) await this.completePending(cluster);
      const copy = await this.core.describeContent(gap.start, gap.end - gap.start, false, this.backend);
      if (copy.source === 'none' || copy.source === 'zeros') continue;
      replacements.push({ offset: gap.start - guestOffset, data: await this.readCopy(copy) });
    }
    return replacements.length === 0 ? buffers : spliceVector(buffers, length, replacements);
  }

  // The bytes a copy asks for, read from its source (zeros past sourceBytes, and for 'none' and 'zeros').
  private async readCopy(copy: CopyPlan): Promise<Uint8Array> {
    const buffer = new Uint8Array(copy.bytes);
    const target = buffer.subarray(0, copy.sourceBytes);
    switch (copy.source) {
      case 'none':
      case 'zeros':
        break;
      case 'backing':
        await this.host.readBacking(copy.guestOffset, target);
        break;
      case 'data':
        this.host.counters.hostReadCalls++;
        this.host.counters.hostReadBytes += target.byteLength;
        await this.dataBackend.preadv(copy.hostOffset, [target]);
        break;
      case 'compressed': {
        const cluster = await this.host.inflated(copy.hostOffset, copy.compressedBytes);
        const inCluster = copy.guestOffset % this.header.clusterSize;
        target.set(cluster.subarray(inCluster, inCluster + target.byteLength));
        break;
      }
      case 'mapped':
        await this.host.readMapped(copy.guestOffset, target);
        break;
    }
    return buffer;
  }

  // Plans the extent run by run and writes the runs, host-contiguous ones as one host write. When
  // planning or a copy read fails, the runs planned so far are aborted.
  private async writeRuns(guestOffset: number, length: number, buffers: Uint8Array[]): Promise<void> {
    const end = guestOffset + length;
    const clusterBytes = this.header.clusterSize;
    const runs: PreparedRun[] = [];
    try {
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
        if (plan.kind === 'in-place') {
          runs.push({ hostStart: plan.hostStart, vector: data, bytes: runEnd - position, after: { kind: 'none' } });
        } else {
          try {
            runs.push(await this.prepareAllocated(plan, data, runEnd - position));
          } catch (error) {
            await this.abortPlan(plan);
            throw error;
          }
        }
        position = runEnd;
      }
    } catch (error) {
      await this.abortRuns(runs);
      throw error;
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

  // The run of an allocating plan: its head and tail copies around the data, except a tail the
  // plan lets stay pending (deferred copy-on-write) and copies the plan says need nothing.
  private async prepareAllocated(plan: WritePlan, data: Uint8Array[], dataBytes: number): Promise<PreparedRun> {
    const { head, tail } = plan;
    const defer = plan.tailDeferrable && this.deferred !== undefined;
    const vector: Uint8Array[] = [];
    let hostStart = plan.hostStart + head.bytes;
    let bytes = dataBytes;
    if (head.source !== 'none') {
      vector.push(await this.readCopy(head));
      hostStart = plan.hostStart;
      bytes += head.bytes;
      this.host.counters.cowBytes += head.bytes;
    }
    vector.push(...data);
    if (tail.source !== 'none' && !defer) {
      vector.push(await this.readCopy(tail));
      bytes += tail.bytes;
      this.host.counters.cowBytes += tail.bytes;
    }
    const lastClusterStart = plan.guestEnd - this.header.clusterSize;
    const after: PreparedRun['after'] = defer ? { kind: 'commit-defer-last', plan, filledBytes: tail.guestOffset - lastClusterStart } : { kind: 'commit', plan };
    return { hostStart, vector, bytes, after };
  }

  // Writes one group of host-contiguous runs, then records them. A failed write aborts the
  // group's plans; a failed commit aborts its plan and the ones after it.
  private async writeGroup(group: PreparedRun[]): Promise<void> {
    try {
      await this.overlap.check('data', group[0].hostStart, group.reduce((bytes, run) => bytes + run.bytes, 0));
      await this.host.writeToBackend(this.dataBackend, group[0].hostStart, group.flatMap((run) => run.vector));
    } catch (error) {
      await this.abortRuns(group);
      throw error;
    }
    // The data is on the backend: now the L2 entries may point at it.
    for (const [index, { after }] of group.entries()) {
      try {
        await this.recordWritten(after);
      } catch (error) {
        await this.abortRuns(group.slice(after.kind === 'extend' ? index + 1 : index));
        throw error;
      }
    }
  }

  // What a written run leaves behind: committed entries, a pending cluster, or a longer one.
  private async recordWritten(after: PreparedRun['after']): Promise<void> {
    switch (after.kind) {
      case 'none':
        return;
      case 'commit':
        return this.commitPlan(after.plan);
      case 'commit-defer-last': {
        const { plan } = after;
        const clusterBytes = this.header.clusterSize;
        const lastStart = plan.guestEnd - clusterBytes;
        const lastHost = plan.hostStart + (lastStart - plan.guestStart);
        if (lastStart > plan.guestStart) await this.commitPlan({ ...plan, guestEnd: lastStart });
        this.deferred!.add(lastStart, lastHost, after.filledBytes);
        return;
      }
      case 'extend':
        if (this.deferred!.extend(after.pending, after.filledEnd)) await this.commitPending(after.pending);
        return;
    }
  }

  // Gives back the clusters of prepared runs that will not be committed (a pending cluster's
  // continuation takes none: the cluster stays pending as it was).
  private async abortRuns(runs: readonly PreparedRun[]): Promise<void> {
    for (const { after } of runs) {
      if (after.kind === 'commit' || after.kind === 'commit-defer-last') await this.abortPlan(after.plan);
    }
  }

  // Aborts one plan; a failure to release leaves its clusters leaked (check -r repairs that), and
  // the write's own error is the one reported.
  private async abortPlan(plan: WritePlan): Promise<void> {
    await this.core.abort(plan, this.backend).catch(() => undefined);
  }

  // Points the plan's L2 entries at its written clusters and releases what they replaced once
  // that is on disk. (No wait for a write-back in progress: bindings/qcow2/qcow2-writeback.ts, THE RULE.)
  private async commitPlan(plan: WritePlan): Promise<void> {
    this.writeback.releaseLater(await this.core.commit(plan, this.backend));
  }

  // Commits a pending cluster whose bytes are all written. On failure it stays pending (its
  // earlier bytes were acknowledged): a later completion commits it.
  private async commitPending(cluster: PendingCluster): Promise<void> {
    const clusterBytes = this.header.clusterSize;
    const range: CommitRange = { kind: 'allocate', guestStart: cluster.guestStart, guestEnd: cluster.guestStart + clusterBytes, hostStart: cluster.hostStart };
    this.writeback.releaseLater(await this.core.commit(range, this.backend));
    this.deferred!.remove(cluster);
  }

  // Completes a pending cluster (deferred copy-on-write, forced): copies its unwritten part from
  // what it reads now (nothing when the core says the new cluster already holds it) and commits
  // it. The caller holds the cluster's lock; a cluster committed meanwhile is skipped.
  private async completePending(cluster: PendingCluster): Promise<void> {
    if (this.deferred?.get(cluster.guestStart) !== cluster) return;
    const from = cluster.guestStart + cluster.filledBytes;
    const copy = await this.core.describeContent(from, this.header.clusterSize - cluster.filledBytes, true, this.backend);
    if (copy.source !== 'none') {
      this.host.counters.cowBytes += copy.bytes;
      const content = await this.readCopy(copy);
      await this.overlap.check('data', cluster.hostStart + cluster.filledBytes, copy.bytes);
      await this.host.writeToBackend(this.dataBackend, cluster.hostStart + cluster.filledBytes, [content]);
    }
    await this.commitPending(cluster);
  }
}
