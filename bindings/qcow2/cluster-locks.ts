// SPDX-License-Identifier: MIT
// Per-cluster mutual exclusion for qcow2 metadata changes (QEMU's handle_dependencies): work that
// allocates a guest cluster, fills or completes a pending one, or forces its copy-on-write holds
// that cluster's lock, so one guest cluster is never allocated twice and never changes under a
// writer. Writes into clusters already written in place take no lock and run concurrently.

/** FIFO locks keyed by guest cluster index. */
export class ClusterLocks {
  private readonly tails = new Map<number, Promise<void>>();

  /** True while someone holds or waits for the lock of `cluster`. */
  isHeld(cluster: number): boolean {
    return this.tails.has(cluster);
  }

  /**
   * Runs `body` holding the locks of `clusters` (guest cluster indexes, distinct). All of them
   * are queued for at once, synchronously, so holders are served in call order on every cluster
   * they share: no two callers can wait for each other (no deadlock), and a write dispatched
   * before another into the same cluster gets it first. `body` must not take a lock it holds.
   * Locks are released when `body` settles.
   */
  run<T>(clusters: readonly number[], body: () => Promise<T>): Promise<T> {
    return clusters.length === 1 ? this.runOne(clusters[0], body) : this.runMany(clusters, body);
  }

  // run() of one cluster (the usual case), without the lists.
  private async runOne<T>(cluster: number, body: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(cluster);
    let release!: () => void;
    const held = new Promise<void>((resolve) => { release = resolve; });
    // Released only after `previous` settled, so the next holder waiting for `held` waits for both.
    this.tails.set(cluster, held);
    try {
      if (previous) await previous;
      return await body();
    } finally {
      release();
      if (this.tails.get(cluster) === held) this.tails.delete(cluster);
    }
  }

  private async runMany<T>(clusters: readonly number[], body: () => Promise<T>): Promise<T> {
    const waits: Promise<void>[] = [];
    const releases: (() => void)[] = [];
    for (const cluster of clusters) {
      const previous = this.tails.get(cluster);
      let release!: () => void;
      const held = new Promise<void>((resolve) => { release = resolve; });
      const tail = previous ? previous.then(() => held) : held;
      this.tails.set(cluster, tail);
      if (previous) waits.push(previous);
      releases.push(() => {
        release();
        if (this.tails.get(cluster) === tail) this.tails.delete(cluster);
      });
    }
    try {
      if (waits.length > 0) await Promise.all(waits);
      return await body();
    } finally {
      for (const release of releases) release();
    }
  }
}
