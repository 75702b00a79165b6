// SPDX-License-Identifier: MIT
// Copy-on-write of shared L2 tables (QEMU's l2_allocate for an L1 entry without COPIED). Right
// after an internal snapshot, the active L1 table and the snapshot's point at the same L2 tables
// (refcount 2, the active L1 entries without COPIED). The wasm core never changes an entry of
// such a table (it answers NEED_TABLE_COPY); this copies the table first, in the safe order: a
// new cluster (refcount 1) gets the table's bytes and a barrier makes them durable, then the L1
// entry points at the copy with COPIED (write-back writes it after the new refcount), and the
// shared table's refcount drops only after that L1 entry is on disk. A crash at any point leaves
// the snapshot intact and at most a leaked cluster; a copy that fails gives its cluster back.

import type { Backend } from '../backends/backend.js';
import type { ImageStats } from '../dispatch/image.js';
import type { Qcow2Header } from './qcow2-header.js';
import type { Qcow2Core } from './qcow2-core.js';
import type { Qcow2OverlapGuard } from './qcow2-overlap.js';
import type { Qcow2Writeback } from './qcow2-writeback.js';

/** Copies the shared L2 tables of one image, one copy per L1 entry at a time. */
export class Qcow2TableCopies {
  /** Copies in progress by L1 entry index: callers needing the same table wait for one copy. */
  private readonly running = new Map<number, Promise<void>>();

  constructor(private readonly core: Qcow2Core, private readonly backend: Backend, private readonly header: Qcow2Header,
              private readonly counters: ImageStats, private readonly overlap: Qcow2OverlapGuard,
              private readonly writeback: Qcow2Writeback) {}

  /**
   * Gives L1 entry `l1Index` an L2 table of its own (Qcow2Core.onTableCopyNeeded): copies the
   * table it shares, unless that is done already. Concurrent calls for one entry share one copy.
   * Rejects with the backend's error; the entry then keeps the shared table and the cluster
   * allocated for the copy is released (it is not allocated again by this instance).
   */
  copy(l1Index: number): Promise<void> {
    let copy = this.running.get(l1Index);
    if (!copy) {
      copy = this.copyOnce(l1Index).finally(() => this.running.delete(l1Index));
      this.running.set(l1Index, copy);
    }
    return copy;
  }

  private async copyOnce(l1Index: number): Promise<void> {
    const copy = await this.core.allocateTableCopy(l1Index, this.backend);
    if (!copy) return;
    try {
      // The shared table is never changed in memory (only copies are), so the file holds it as is.
      const table = new Uint8Array(this.header.clusterSize);
      this.counters.hostReadCalls++;
      this.counters.hostReadBytes += table.byteLength;
      await this.backend.preadv(copy.sourceHost, [table]);
      await this.overlap.check('l2', copy.targetHost, table.byteLength);
      this.counters.hostWriteCalls++;
      this.counters.hostWriteBytes += table.byteLength;
      await this.backend.pwritev(copy.targetHost, [table]);
      await this.backend.flush();
      this.core.switchToTableCopy(copy);
    } catch (error) {
      // Nothing points at the new cluster yet: give it back (a failed release leaves it leaked).
      await this.core.release(copy.targetHost, this.backend).catch(() => undefined);
      throw error;
    }
    this.writeback.releaseLater([copy.sourceHost]);
  }
}
