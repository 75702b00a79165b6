// SPDX-License-Identifier: MIT
// The tables of one qcow2 image's wasm core as TypeScript sees them: placing the L1 and refcount
// tables in the core's memory and reading them from the file (again after the metadata was
// rewritten), and the accessors the metadata write-back uses: copies of dirty L2 and refcount
// slices, of the dirty part of the L1 table and of the refcount table (grown when full), each
// marked clean afterwards unless it changed since the copy.

import type { Backend } from '../backends/backend.js';
import { regionBounds, type CoreInstance, Region } from '../core/wasm.js';
import { ImageError } from '../base/errors.js';
import type { Qcow2Header } from './qcow2-header.js';
import { Qcow2CoreNeeds } from './qcow2-core-needs.js';

/** Default L2 cache size: 1 MiB, which maps 8 GiB of guest space with 64 KiB clusters. */
export const DEFAULT_CACHE_BYTES = 1 << 20;

/** A dirty metadata slice copied out for write-back. */
export interface DirtySlice { cache: number; slot: number; hostOffset: number; generation: number; bytes: Uint8Array }

/** The image's tables in its core, and the write-back's view of them (base of Qcow2Core). */
export class Qcow2CoreTables extends Qcow2CoreNeeds {
  /** The header this core and its image share (reload updates it in place). */
  protected readonly header: Qcow2Header;
  /** L2 cache bytes the core was configured with. */
  protected cacheBytes = DEFAULT_CACHE_BYTES;
  private l1Offset = 0;
  private reftableOffset = 0;
  private reftableCapacity = 0;

  protected constructor(core: CoreInstance, header: Qcow2Header) {
    super(core);
    this.header = header;
  }

  // The table regions exist once configureImage has placed them.
  private locateTables(): void {
    this.l1Offset = regionBounds(this.instance, Region.L1_TABLE).offset;
    ({ offset: this.reftableOffset, bytes: this.reftableCapacity } = regionBounds(this.instance, Region.REFTABLE));
  }

  // Places the tables for `header` (dropping every cached slice) and reads the L1 and refcount tables.
  protected async configure(header: Qcow2Header, backend: Backend, fileSize: number): Promise<void> {
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
