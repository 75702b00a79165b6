// SPDX-License-Identifier: MIT
// Deferred copy-on-write: the bookkeeping of new qcow2 clusters whose tail is still pending.
//
// A sequential guest stream that is not cluster-aligned ends each batch a little way into a new
// cluster. Copying the rest of that cluster from the backing file at once (QEMU's COW) is wasted
// when the next batch overwrites it, which it nearly always does. So the image may leave such a
// cluster PENDING instead:
//
//   (no entry) --allocating write covers [0, f) of a new cluster, f < cluster size,
//                and the rest would need real data copied--> PENDING(filled = f)
//   PENDING(f) --write covering [a, b) with a <= f--> PENDING(max(f, b))
//                                                     or, when max(f, b) = cluster size, COMMITTED
//   PENDING(f) --forced (see below)--> COPY: bytes [f, cluster size) are copied from what the
//                                      cluster reads now, then COMMITTED
//   COMMITTED: the L2 entry points at the cluster; the entry is removed from this table.
//
// While PENDING the host cluster is allocated (its refcount raised) and bytes [0, f) are on it,
// but the L2 entry still says what it said before, so a crash can only leak the cluster; nothing
// reads the pending bytes until the entry is committed. The image forces the copy, always while
// it holds the cluster's guest range for itself, when: a read overlaps the cluster; a write
// would leave a hole (a > f) or is a gap fill in it; writeZeroes, discard or a metadata tool
// touches it; flush() or close() runs; more than maxPending clusters are pending (the oldest);
// or the cluster has been pending for delayMs. Every path ends in COMMITTED, so every pending
// cluster is committed by the next flush at the latest.

import type { DeferredCowOptions } from '../dispatch/image.js';

/** One new cluster whose bytes [0, filledBytes) are written and whose L2 entry is not yet. */
export interface PendingCluster {
  /** Guest offset of the cluster (cluster-aligned). */
  readonly guestStart: number;
  /** Host offset of its newly allocated cluster. */
  readonly hostStart: number;
  /** Bytes written from the cluster's start; the rest is pending copy-on-write. */
  filledBytes: number;
  /** When (performance.now() milliseconds) the timer forces it. */
  deadlineMs: number;
  /** Handed to the image's force callback by the timer or the cap (not timed again unless retried). */
  due: boolean;
}

const DEFAULT_MAX_PENDING = 64;
const DEFAULT_DELAY_MS = 50;

/**
 * The table of pending clusters of one image. It only keeps state and decides when a cluster is
 * due; the image does the copying through `force`, which must order itself against other I/O
 * on the cluster, commit it and call remove().
 */
export class DeferredCow {
  readonly maxPending: number;
  readonly delayMs: number;
  private readonly clusterBytes: number;
  private readonly pending = new Map<number, PendingCluster>();
  private readonly force: (cluster: PendingCluster) => void;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private disposed = false;

  /**
   * `force(cluster)` is called (never awaited) for clusters that are due by the timer or the cap;
   * it must not throw.
   */
  constructor(clusterBytes: number, options: DeferredCowOptions, force: (cluster: PendingCluster) => void) {
    this.clusterBytes = clusterBytes;
    this.maxPending = options.maxPending ?? DEFAULT_MAX_PENDING;
    this.delayMs = options.delayMs ?? DEFAULT_DELAY_MS;
    this.force = force;
  }

  /** Number of pending clusters. */
  get size(): number {
    return this.pending.size;
  }

  /** The pending cluster starting at guest `clusterStart`, if any. */
  get(clusterStart: number): PendingCluster | undefined {
    return this.pending.size === 0 ? undefined : this.pending.get(clusterStart);
  }

  /** Pending clusters that overlap guest [start, end). */
  overlapping(start: number, end: number): PendingCluster[] {
    if (this.pending.size === 0) return [];
    const out: PendingCluster[] = [];
    for (const cluster of this.pending.values()) {
      if (cluster.guestStart < end && start < cluster.guestStart + this.clusterBytes) out.push(cluster);
    }
    return out;
  }

  /** Guest start of the first pending cluster inside [start, end), or undefined. */
  firstStartIn(start: number, end: number): number | undefined {
    let first: number | undefined;
    for (const cluster of this.overlapping(start, end)) {
      if (cluster.guestStart >= start && (first === undefined || cluster.guestStart < first)) first = cluster.guestStart;
    }
    return first;
  }

  /** Every pending cluster, oldest first. */
  all(): PendingCluster[] {
    return [...this.pending.values()];
  }

  /**
   * Records a new pending cluster whose first `filledBytes` bytes are on its host cluster. Forces
   * the oldest when more than maxPending are pending.
   */
  add(guestStart: number, hostStart: number, filledBytes: number): void {
    const cluster: PendingCluster = { guestStart, hostStart, filledBytes, deadlineMs: performance.now() + this.delayMs, due: false };
    this.pending.set(guestStart, cluster);
    if (this.pending.size > this.maxPending) {
      for (const oldest of this.pending.values()) {
        if (!oldest.due) {
          this.makeDue(oldest);
          break;
        }
      }
    }
    this.armTimer();
  }

  /** After a failed forced copy: the cluster stays pending and is timed again. */
  retryLater(cluster: PendingCluster): void {
    if (this.pending.get(cluster.guestStart) !== cluster) return;
    cluster.due = false;
    cluster.deadlineMs = performance.now() + this.delayMs;
    this.armTimer();
  }

  /**
   * Records that bytes up to `filledEnd` (cluster-relative) are written; the caller has checked
   * that the write started at or before filledBytes. True when the cluster is now whole (the
   * caller commits it and calls remove()).
   */
  extend(cluster: PendingCluster, filledEnd: number): boolean {
    cluster.filledBytes = Math.max(cluster.filledBytes, filledEnd);
    return cluster.filledBytes >= this.clusterBytes;
  }

  /** Forgets a cluster that is committed. */
  remove(cluster: PendingCluster): void {
    if (this.pending.get(cluster.guestStart) === cluster) this.pending.delete(cluster.guestStart);
    if (this.pending.size === 0) this.disarmTimer();
  }

  /** Stops the timer for good (on close: the image completes what is pending itself). */
  dispose(): void {
    this.disposed = true;
    this.disarmTimer();
  }

  private armTimer(): void {
    if (this.timer !== undefined || this.disposed) return;
    let earliest = Infinity;
    for (const cluster of this.pending.values()) if (!cluster.due) earliest = Math.min(earliest, cluster.deadlineMs);
    if (earliest === Infinity) return;
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, earliest - performance.now()));
    // Node: a pending cluster alone must not keep the process alive (unflushed data may be lost).
    (this.timer as { unref?: () => void }).unref?.();
  }

  private disarmTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private onTimer(): void {
    this.timer = undefined;
    const now = performance.now();
    for (const cluster of this.pending.values()) {
      if (cluster.deadlineMs <= now && !cluster.due) this.makeDue(cluster);
    }
    this.armTimer();
  }

  private makeDue(cluster: PendingCluster): void {
    cluster.due = true;
    this.force(cluster);
  }
}
