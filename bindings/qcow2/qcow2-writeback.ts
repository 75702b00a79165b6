// SPDX-License-Identifier: MIT
// Metadata write-back in QEMU's safe order: new refcount blocks, a barrier, the
// refcount table; refcount blocks; a barrier; L2 slices, a barrier, then the L1 table, a barrier.
// Afterwards the clusters that committed writes stopped referencing are released: their
// refcounts drop only once no on-disk entry points at them. A barrier that failed stays owed:
// the next write-back flushes before anything that depends on it, since a failed flush makes no
// promise about the writes before it.
//
// THE RULE for metadata changes against a running write-back (allocation, commits, zero flags,
// discard, refcount growth and releases, deferred copy-on-write commits, table copies): a
// write-back copies ALL the dirty metadata it will write (L1 part, refcount table, refcount
// slices, L2 slices, the list of new L2 tables) in one synchronous step when it starts, before
// its first await. A change made after that step is not in the copy: its slice or table keeps a
// newer change counter, so the write-back does not mark it clean, and the next write-back writes
// it. Every metadata change happens inside a synchronous core call, so a copy sees each change
// whole or not at all, and whatever it sees is self-consistent: a cluster's refcount is raised
// before any entry points at it, a new L2 table is in the L1 table (and in the core's list of new
// tables) from the call that creates its first slice. So metadata changes never wait for a
// write-back and callers check nothing; the only exclusion is refcount-table growth, which runs
// as a write-back itself (see growReftable).

import type { Backend } from '../backends/backend.js';
import { ImageError } from '../base/errors.js';
import type { ImageStats } from '../dispatch/image.js';
import type { Qcow2Header } from './qcow2-header.js';
import { Qcow2Core, type DirtySlice } from './qcow2-core.js';
import { allSettledOrThrow } from '../base/settle.js';
import type { HostWriteKind, Qcow2OverlapGuard } from './qcow2-overlap.js';
import { reftablePointerPatch } from './qcow2-header-write.js';

/** Write-backs growReftable runs to free refcount cache slots before it gives up. */
const MAX_GROWTH_ATTEMPTS = 16;

/** An L2 table allocated empty whose L1 entry is not on disk yet (assembly/new-tables.ts). */
interface NewTable { l1Index: number; hostOffset: number }

/** Serialises metadata write-back for one image and keeps the clusters waiting for release. */
export class Qcow2Writeback {
  private running: Promise<void> | undefined;
  private growing: Promise<void> | undefined;
  private finishing: Promise<void> = Promise.resolve();
  private pendingReleases: number[] = [];
  /**
   * A metadata write completed (or failed) since the last backend flush was called, or that flush
   * failed. Set when a write settles: a flush called while a write is in flight does not cover it.
   */
  private flushOwed = false;
  /** Backend flushes begun (flushAll checks that one began after it was called). */
  private flushesStarted = 0;
  /** The backend flush in progress, if any (a barrier that finds nothing owed still waits for it). */
  private backendFlush: Promise<void> | undefined;

  /**
   * `dataBackend` holds the guest data (the image file itself, or its external data file): the
   * barrier before L2 entries are written covers it too.
   */
  constructor(private readonly core: Qcow2Core, private readonly backend: Backend,
              private readonly dataBackend: Backend, private readonly header: Qcow2Header,
              private readonly counters: ImageStats, private readonly overlap?: Qcow2OverlapGuard) {}

  /**
   * Makes every committed change durable and persists the refcounts of the clusters those
   * changes released: waits for a write-back in progress (which took its releases earlier),
   * runs one that takes every queued release, and one more that writes what they lowered.
   * Ends with a completed backend flush that began during the call (its own unless another one
   * did: then it waits for that one, and flushes itself if that failed): data written in place
   * needs one even when no metadata changed.
   */
  async flushAll(): Promise<void> {
    const flushesBefore = this.flushesStarted;
    await this.writeBackAll();
    if (this.flushesStarted === flushesBefore) this.flushOwed = true;
    await this.barrier();
  }

  /**
   * flushAll without its final barrier: every committed change and the refcounts of what it
   * released reach the file in the safe order (for the loss window's timer).
   */
  async writeBackAll(): Promise<void> {
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
   * back first, then, as the one write-back running, the new refcount blocks (which count the
   * new table and themselves) and the new table are written, a barrier, the header switches to
   * the new table (one 12-byte write), a barrier, and the old table's clusters are queued for
   * release. A crash before the header write leaves only unreferenced clusters. The table is
   * grown in memory in the same synchronous step that copies it and the refcount slices (THE
   * RULE); changes made while it is written stay dirty for the next write-back.
   */
  growReftable(): Promise<void> {
    this.growing ??= (async () => {
      for (let attempt = 1; ; attempt++) {
        await this.run();
        while (this.running) await this.running;
        const table = this.core.growReftable();
        if (!table) {
          // Releases (or other changes) dirtied the refcount slots the new blocks need: again,
          // unless the cache has too few refcount slots for them at all.
          if (attempt === MAX_GROWTH_ATTEMPTS) {
            throw new ImageError('INVALID_ARGUMENT', 'the metadata cache is too small to grow the refcount table: open the image with a larger cacheBytes');
          }
          continue;
        }
        this.running = this.writeGrownTable(table).finally(() => { this.running = undefined; });
        await this.running;
        return;
      }
    })().finally(() => { this.growing = undefined; });
    return this.growing;
  }

  private async writeGrownTable(table: { hostOffset: number; clusters: number; bytes: Uint8Array; generation: number }): Promise<void> {
    await this.writeSlices(this.core.dirtySlices(Qcow2Core.CACHE_REFCOUNT));
    await this.write(table.hostOffset, table.bytes, 'refcount-table');
    await this.barrier();
    const pointer = reftablePointerPatch(this.core.instance, table.hostOffset, table.clusters);
    await this.write(pointer.headerOffset, pointer.bytes, 'header');
    await this.barrier();
    const old = { offset: this.header.refcountTableOffset, clusters: this.header.refcountTableClusters };
    this.header.refcountTableOffset = table.hostOffset;
    this.header.refcountTableClusters = table.clusters;
    this.core.markReftableClean(table.generation);
    for (let i = 0; i < old.clusters; i++) this.pendingReleases.push(old.offset + i * this.header.clusterSize);
  }

  /**
   * Resolves (never rejects) once no write-back, growth or release is running: for close(),
   * after which nothing may touch the backend. (`finishing` covers every earlier run's releases.)
   */
  async quiesce(): Promise<void> {
    for (;;) {
      const finishing = this.finishing;
      await Promise.allSettled([this.running, this.growing, finishing]);
      if (!this.running && !this.growing && this.finishing === finishing) return;
    }
  }

  private start(): void {
    if (!this.running) {
      const releases = this.pendingReleases;
      this.pendingReleases = [];
      this.running = this.writeAll().finally(() => { this.running = undefined; });
      const own = this.running.then(
        async () => { for (const offset of releases) await this.core.release(offset, this.backend); },
        (error: unknown) => {
          this.pendingReleases.unshift(...releases);
          throw error;
        });
      // An earlier run's releases may still be going (a release that needed a write-back
      // started this run): finishing covers them too, with this run's outcome.
      const earlier = this.finishing.catch(() => undefined);
      this.finishing = own.then(() => earlier, async (error: unknown) => {
        await earlier;
        throw error;
      });
      // writeDirty() callers wait for the writing only: a failure is theirs, or the next run()'s.
      this.finishing.catch(() => undefined);
    }
  }

  // The copy of everything dirty is taken first, in one synchronous step (THE RULE above). Then:
  // 1. Refcount blocks; when the refcount table changed, a barrier and the table (it may point
  //    at blocks just written); barrier. (The file is never resized here: a truncate could race
  //    with data writes to clusters allocated meanwhile. Every table is written before anything
  //    on disk points at it, so the file always covers the start of every referenced cluster.)
  // 2. L2 slices, after a barrier even when no refcount was written: data writes that completed
  //    since the last flush (a new cluster's data and copy-on-write) must be durable before an
  //    entry points at them; with an external data file that file is flushed too. New L2 tables get zeros in their slices the copy lacks first; barrier.
  // 3. The dirty part of the L1 table; barrier.
  private async writeAll(): Promise<void> {
    const l1 = this.core.dirtyL1();
    const reftable = this.core.dirtyReftable();
    const refcountSlices = this.core.dirtySlices(Qcow2Core.CACHE_REFCOUNT);
    const l2 = this.core.dirtySlices(Qcow2Core.CACHE_L2);
    if (l2.length > 0) this.flushOwed = true;
    const newTables = this.newL2Tables();
    await this.writeSlices(refcountSlices);
    if (reftable) {
      await this.barrier();
      await this.write(this.header.refcountTableOffset, reftable.bytes, 'refcount-table');
      this.core.markReftableClean(reftable.generation);
    }
    await allSettledOrThrow(l2.length > 0 ? [this.barrier(), this.dataBarrier()] : [this.barrier()]);
    await this.zeroFillTables(newTables, l2);
    await this.writeSlices(l2);
    await this.barrier();
    if (l1) {
      await this.write(this.header.l1TableOffset + l1.firstIndex * 8, l1.bytes, 'l1');
      this.core.markL1Clean(l1.generation);
      await this.barrier();
    }
  }

  // The L2 tables allocated empty and not yet written whole (by an earlier write-back whose L1
  // write failed, say), as the core tracks them: every one is in the L1 copy taken with it.
  private newL2Tables(): NewTable[] {
    const x = this.core.instance.exports;
    const tables: NewTable[] = [];
    for (let l1Index = x.newTableFrom(0); l1Index >= 0; l1Index = x.newTableFrom(l1Index + 1)) {
      tables.push({ l1Index, hostOffset: x.l1TableHostOffset(l1Index) });
    }
    return tables;
  }

  // A new L2 table reaches the disk whole before the L1 entry that points at it (QEMU's order):
  // its slices that are not in this write-back's copy get zeros, so the file covers the table
  // even when no entry of it has been set yet (otherwise the L1 entry could point past the end of
  // the file). This happens once per table, before any of its slices is written: a slice written
  // by an earlier run (its L1 write failed, say) is never overwritten with zeros.
  private async zeroFillTables(tables: readonly NewTable[], copied: readonly DirtySlice[]): Promise<void> {
    const x = this.core.instance.exports;
    const clusterBytes = this.header.clusterSize;
    const sliceBytes = x.sliceBytes() >>> 0;
    const inCopy = new Set(copied.map((slice) => slice.hostOffset));
    const zeros = new Uint8Array(sliceBytes);
    await allSettledOrThrow(tables.map(async ({ l1Index, hostOffset }) => {
      const writes: Promise<void>[] = [];
      for (let slice = hostOffset; slice < hostOffset + clusterBytes; slice += sliceBytes) {
        if (!inCopy.has(slice)) writes.push(this.write(slice, zeros, 'l2'));
      }
      await allSettledOrThrow(writes);
      x.markTableWritten(l1Index, hostOffset);
    }));
  }

  // Flushes when anything was written since the last successful flush; otherwise waits for a
  // backend flush in progress (the writes before it are durable only once it completes), and
  // flushes itself if that one failed.
  private async barrier(): Promise<void> {
    for (;;) {
      if (this.flushOwed) {
        this.flushOwed = false;
        this.flushesStarted++;
        const flush = this.backend.flush();
        this.backendFlush = flush;
        try {
          await flush;
        } catch (error) {
          this.flushOwed = true;
          throw error;
        } finally {
          if (this.backendFlush === flush) this.backendFlush = undefined;
        }
        return;
      }
      if (!this.backendFlush) return;
      await this.backendFlush.catch(() => undefined);
    }
  }

  // Guest data in an external data file: the L2 slices of a write-back may point at any data
  // written there since the last write-back, so it is flushed before they are written (a failed
  // flush throws, and the slices stay dirty for the next write-back, which flushes again).
  private async dataBarrier(): Promise<void> {
    if (this.dataBackend !== this.backend) await this.dataBackend.flush();
  }

  private async writeSlices(slices: DirtySlice[]): Promise<boolean> {
    await allSettledOrThrow(slices.map(async (slice) => {
      await this.write(slice.hostOffset, slice.bytes, slice.cache === Qcow2Core.CACHE_L2 ? 'l2' : 'refcount-block');
      this.core.markClean(slice);
    }));
    return slices.length > 0;
  }

  private async write(hostOffset: number, bytes: Uint8Array, kind: HostWriteKind): Promise<void> {
    await this.overlap?.check(kind, hostOffset, bytes.byteLength);
    this.counters.hostWriteCalls++;
    this.counters.hostWriteBytes += bytes.byteLength;
    try {
      await this.backend.pwritev(hostOffset, [bytes]);
    } finally {
      this.flushOwed = true;
    }
  }
}
