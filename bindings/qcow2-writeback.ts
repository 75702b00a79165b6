// SPDX-License-Identifier: MIT
// Metadata write-back in QEMU's safe order (design §6): refcount blocks and the refcount table
// first, a barrier, then L2 slices, a barrier, then the L1 table, a barrier. Afterwards the
// clusters that committed writes stopped referencing are released: their refcounts drop only
// once no on-disk entry points at them. Slices are copied out before each write, and marked clean
// only if they did not change meanwhile.

import type { Backend } from './backend.js';
import type { ImageStats } from './image.js';
import type { Qcow2Header } from './qcow2-header.js';
import { Qcow2Core, type DirtySlice } from './qcow2-core.js';
import { allSettledOrThrow } from './settle.js';

/** Header byte offset of refcount_table_offset (u64), followed by refcount_table_clusters (u32). */
const REFCOUNT_TABLE_OFFSET_FIELD = 48;

/** Serialises metadata write-back for one image and keeps the clusters waiting for release. */
export class Qcow2Writeback {
  private running: Promise<void> | undefined;
  private growing: Promise<void> | undefined;
  private finishing: Promise<void> = Promise.resolve();
  private pendingReleases: number[] = [];

  constructor(private readonly core: Qcow2Core, private readonly backend: Backend,
              private readonly header: Qcow2Header, private readonly counters: ImageStats) {}

  /** Resolves when no write-back is running (commits wait on this: design §6 ordering). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /**
   * Makes every committed change durable and persists the refcounts of the clusters those
   * changes released: waits for a write-back in progress (which took its releases earlier),
   * runs one that takes every queued release, and one more that writes what they lowered.
   */
  async flushAll(): Promise<void> {
    await this.finishing.catch(() => undefined);
    await this.run();
    await this.run();
  }

  /** Queues host clusters whose last reference a commit removed (released after the next write-back). */
  releaseLater(hostOffsets: readonly number[]): void {
    for (const offset of hostOffsets) this.pendingReleases.push(offset);
  }

  /**
   * Writes every dirty metadata slice and table in the safe order and makes it durable, then
   * releases the clusters queued before it started (their entries are on disk by then; the
   * lowered refcounts reach the disk with the next write-back). Concurrent calls share one run.
   */
  run(): Promise<void> {
    this.start();
    return this.finishing;
  }

  /**
   * Like run(), but resolves once the metadata is written and durable, without waiting for the
   * releases (which may themselves need slice loads): for a cache that ran out of clean slots.
   */
  writeDirty(): Promise<void> {
    this.start();
    return this.running ?? Promise.resolve();
  }

  /**
   * Grows the refcount table (the core ran out of entries), crash-safely: metadata is written
   * back first, then, with every other metadata change held off, the new refcount blocks (which
   * count the new table and themselves) and the new table are written, a barrier, the header
   * switches to the new table (one 12-byte write), a barrier, and the old table's clusters are
   * queued for release. A crash before the header write leaves only unreferenced clusters.
   */
  growReftable(): Promise<void> {
    this.growing ??= (async () => {
      await this.run();
      while (this.running) await this.running;
      const growth = (async () => {
        const table = this.core.growReftable();
        await this.writeSlices(this.core.dirtySlices(Qcow2Core.CACHE_REFCOUNT));
        await this.write(table.hostOffset, table.bytes);
        await this.backend.flush();
        const pointer = new Uint8Array(12);
        const view = new DataView(pointer.buffer);
        view.setBigUint64(0, BigInt(table.hostOffset));
        view.setUint32(8, table.clusters);
        await this.write(REFCOUNT_TABLE_OFFSET_FIELD, pointer);
        await this.backend.flush();
        const old = { offset: this.header.refcountTableOffset, clusters: this.header.refcountTableClusters };
        this.header.refcountTableOffset = table.hostOffset;
        this.header.refcountTableClusters = table.clusters;
        this.core.markReftableClean(table.generation);
        for (let i = 0; i < old.clusters; i++) this.pendingReleases.push(old.offset + i * this.header.clusterSize);
      })();
      this.running = growth.finally(() => { this.running = undefined; });
      await this.running;
    })().finally(() => { this.growing = undefined; });
    return this.growing;
  }

  private start(): void {
    if (!this.running) {
      const releases = this.pendingReleases;
      this.pendingReleases = [];
      this.running = this.writeAll().finally(() => { this.running = undefined; });
      this.finishing = this.running.then(
        async () => { for (const offset of releases) await this.core.release(offset, this.backend); },
        (error: unknown) => {
          this.pendingReleases.unshift(...releases);
          throw error;
        });
    }
  }

  // 1. Refcount blocks (and new ones), then the refcount table; barrier. (The file is never
  //    resized here: a truncate could race with data writes to clusters allocated meanwhile.
  //    Every table is written before anything on disk points at it, so the file always covers
  //    the start of every referenced cluster.)
  // 2. L2 slices; barrier.
  // 3. The dirty part of the L1 table; barrier.
  private async writeAll(): Promise<void> {
    let wrote = await this.writeSlices(this.core.dirtySlices(Qcow2Core.CACHE_REFCOUNT));
    const reftable = this.core.dirtyReftable();
    if (reftable) {
      await this.write(this.header.refcountTableOffset, reftable.bytes);
      this.core.markReftableClean(reftable.generation);
      wrote = true;
    }
    if (wrote) await this.backend.flush();
    if (await this.writeSlices(this.core.dirtySlices(Qcow2Core.CACHE_L2))) await this.backend.flush();
    const l1 = this.core.dirtyL1();
    if (l1) {
      await this.write(this.header.l1TableOffset + l1.firstIndex * 8, l1.bytes);
      this.core.markL1Clean(l1.generation);
      await this.backend.flush();
    }
  }

  private async writeSlices(slices: DirtySlice[]): Promise<boolean> {
    await allSettledOrThrow(slices.map(async (slice) => {
      await this.write(slice.hostOffset, slice.bytes);
      this.core.markClean(slice);
    }));
    return slices.length > 0;
  }

  private write(hostOffset: number, bytes: Uint8Array): Promise<void> {
    this.counters.hostWriteCalls++;
    this.counters.hostWriteBytes += bytes.byteLength;
    return this.backend.pwritev(hostOffset, [bytes]);
  }
}
