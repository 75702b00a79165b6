// SPDX-License-Identifier: MIT
// Per-cluster mutual exclusion for qcow2 metadata changes (QEMU's handle_dependencies): work that
// allocates a guest cluster, fills or completes a pending one, or forces its copy-on-write holds
// that cluster's lock, so one guest cluster is never allocated twice and never changes under a
// writer. Writes into clusters already written in place take no lock and run concurrently.

/** FIFO locks keyed by guest cluster index. */
export class ClusterLocks {
  private readonly tails = new Map<number, Promise<void>>();

  /**
   * Runs `body` holding the locks of `clusters` (guest cluster indexes, ascending and distinct:
   * taking them in ascending order is what keeps two multi-cluster holders from deadlocking).
   * `body` must not take a lock it already holds. Locks are released when `body` settles.
   */
  async run<T>(clusters: readonly number[], body: () => Promise<T>): Promise<T> {
    const releases: (() => void)[] = [];
    try {
      for (const cluster of clusters) releases.push(await this.acquire(cluster));
      return await body();
    } finally {
      for (const release of releases) release();
    }
  }

  // Queues behind the current holder and waiters of `cluster`; resolves with the release function.
  private async acquire(cluster: number): Promise<() => void> {
    const previous = this.tails.get(cluster);
    let release!: () => void;
    const held = new Promise<void>((resolve) => { release = resolve; });
    const tail = previous ? previous.then(() => held) : held;
    this.tails.set(cluster, tail);
    if (previous) await previous;
    return () => {
      release();
      if (this.tails.get(cluster) === tail) this.tails.delete(cluster);
    };
  }
}
