// SPDX-License-Identifier: MIT
// The bytes of qcow2 tables for the metadata tools (snapshots, resize, amend, commit): reading and
// writing L1, L2 and refcount table entries and refcounts, through the wasm core
// (assembly/table-entries.ts), which alone interprets them. Tables stay in TypeScript-owned
// buffers; each operation places a part of one (at most the core's 64 KiB HEADER region, its
// "window") in the core, lets the core read or change the entries there, and copies changed parts
// back. Everything here is synchronous, so the shared core serves it between awaits.

import { byteRegion, sharedCore, type CoreExports, type CoreInstance, Region } from '../core/wasm.js';
import { ImageError } from '../base/errors.js';

/**
 * The HEADER region of `core` (64 KiB, the file's bytes from position 0 when a header is parsed):
 * the window the metadata tools place bytes in for the core to read or write.
 */
export function headerRegionView(core: CoreInstance): Uint8Array {
  return byteRegion(core, Region.HEADER);
}

/** Bytes of an L1 entry and of a refcount table entry. */
const POINTER_ENTRY_BYTES = 8;

/** What an L2 entry says, as the metadata tools need it. */
export interface L2EntryState {
  /** A compressed cluster descriptor. */
  compressed: boolean;
  /** Host offset of the data cluster of a standard entry (0: none; 0 for compressed entries). */
  hostOffset: number;
  /** The entry reads as zeros by its flags (zero flag, or every subcluster zero). */
  readsAsZeros: boolean;
}

/** The shape of the L2 tables of one image: entry width and what decoding their entries needs. */
export interface L2Geometry {
  /** log2 of the cluster size. */
  clusterBits: number;
  /** 16-byte entries with subcluster bitmaps. */
  extendedL2: boolean;
  /** Image version (2 or 3): version 2 has no zero flag. */
  version: number;
}

/** Table entry bytes in TypeScript buffers, read and written by the wasm core. */
export class TableCodec {
  private readonly x: CoreExports;
  private readonly window: Uint8Array;

  private constructor(core: CoreInstance) {
    this.x = core.exports;
    this.window = headerRegionView(core);
  }

  /** The codec over the shared core. */
  static async load(): Promise<TableCodec> {
    return new TableCodec(await sharedCore());
  }

  /** Bytes of an L1 table (or refcount table) of `entries` entries. */
  static pointerTableBytes(entries: number): number {
    return entries * POINTER_ENTRY_BYTES;
  }

  /** Bytes of one L2 entry. */
  static l2EntryBytes(geometry: L2Geometry): number {
    return geometry.extendedL2 ? 16 : 8;
  }

  // Places the entries of `stride` bytes from byte `start` to `end` of `table` in the window, as
  // many at a time as fit, calling `work` with each one's window position and index (from
  // `start`); copies a part back when `work` returned true for any of its entries. Returns
  // whether any did.
  private entries(table: Uint8Array, stride: number, start: number, end: number, work: (at: number, index: number) => boolean | void): boolean {
    const partBytes = this.window.length - (this.window.length % stride);
    let changedAny = false;
    for (let partStart = start; partStart < end; partStart += partBytes) {
      const part = table.subarray(partStart, Math.min(end, partStart + partBytes));
      this.window.set(part);
      let changed = false;
      const first = (partStart - start) / stride;
      for (let at = 0; at + stride <= part.length; at += stride) if (work(at, first + at / stride) === true) changed = true;
      if (changed) part.set(this.window.subarray(0, part.length));
      changedAny ||= changed;
    }
    return changedAny;
  }

  /** The host offsets in an L1 table (0: no L2 table). */
  l1Offsets(table: Uint8Array): number[] {
    const offsets: number[] = [];
    this.entries(table, POINTER_ENTRY_BYTES, 0, table.length, (at) => { offsets.push(this.x.entryHostOffset(at)); });
    return offsets;
  }

  /** The host offset of L1 entry `index` of `table` (0: no L2 table). */
  l1Offset(table: Uint8Array, index: number): number {
    let offset = 0;
    const start = index * POINTER_ENTRY_BYTES;
    this.entries(table, POINTER_ENTRY_BYTES, start, start + POINTER_ENTRY_BYTES, (at) => { offset = this.x.entryHostOffset(at); });
    return offset;
  }

  /**
   * Sets L1 entries `first`, `first + 1`, ... of `table` to the L2 tables at `offsets` (0: none),
   * with QCOW_OFLAG_COPIED on the nonzero ones when `copied`.
   */
  setL1Offsets(table: Uint8Array, first: number, offsets: readonly number[], copied: boolean): void {
    const start = first * POINTER_ENTRY_BYTES;
    this.entries(table, POINTER_ENTRY_BYTES, start, start + offsets.length * POINTER_ENTRY_BYTES, (at, i) => {
      this.x.setEntryHostOffset(at, offsets[i], copied && offsets[i] !== 0 ? 1 : 0);
      return true;
    });
  }

  /** What L2 entry `index` of `table` says. */
  l2Entry(table: Uint8Array, geometry: L2Geometry, index: number): L2EntryState {
    const stride = TableCodec.l2EntryBytes(geometry);
    let state: L2EntryState = { compressed: false, hostOffset: 0, readsAsZeros: false };
    this.entries(table, stride, index * stride, (index + 1) * stride, (at) => { state = this.describe(at, geometry); });
    return state;
  }

  private describe(at: number, geometry: L2Geometry): L2EntryState {
    const compressed = this.x.l2EntryIsCompressed(at) === 1;
    return {
      compressed,
      hostOffset: compressed ? 0 : this.x.entryHostOffset(at),
      readsAsZeros: this.x.l2EntryReadsAsZeros(at, geometry.extendedL2 ? 1 : 0, geometry.version) === 1,
    };
  }

  /**
   * Calls `count(hostOffset, bytes)` for every host range the entries of L2 table `table`
   * reference: a data or preallocated zero cluster (`clusterSize` bytes), or the 512-byte sectors
   * holding compressed data.
   */
  l2References(table: Uint8Array, geometry: L2Geometry, count: (hostOffset: number, bytes: number) => void): void {
    const clusterSize = 2 ** geometry.clusterBits;
    this.entries(table, TableCodec.l2EntryBytes(geometry), 0, table.length, (at) => {
      if (this.x.l2EntryIsCompressed(at) === 1) {
        count(this.x.compressedRunStart(at, geometry.clusterBits), this.x.compressedRunBytes(at, geometry.clusterBits));
        return;
      }
      const hostOffset = this.x.entryHostOffset(at);
      if (hostOffset !== 0) count(hostOffset, clusterSize);
    });
  }

  /**
   * Sets QCOW_OFLAG_COPIED on each standard entry of L2 table `table` with a host cluster exactly
   * when `isPrivate(hostOffset)`; returns true when a flag changed.
   */
  syncCopiedFlags(table: Uint8Array, geometry: L2Geometry, isPrivate: (hostOffset: number) => boolean): boolean {
    return this.entries(table, TableCodec.l2EntryBytes(geometry), 0, table.length, (at) => {
      if (this.x.l2EntryIsCompressed(at) === 1) return false;
      const hostOffset = this.x.entryHostOffset(at);
      return hostOffset !== 0 && this.x.setEntryCopied(at, isPrivate(hostOffset) ? 1 : 0) === 1;
    });
  }

  /**
   * Rewrites every standard entry of L2 table `table` that has the zero flag to point at
   * `replacement()` (0: unallocated) without flags; returns true when there was any.
   */
  replaceZeroFlagged(table: Uint8Array, geometry: L2Geometry, replacement: () => number): boolean {
    return this.entries(table, TableCodec.l2EntryBytes(geometry), 0, table.length, (at) => {
      if (this.x.l2EntryHasZeroFlag(at) !== 1) return false;
      this.x.setEntryHostOffset(at, replacement(), 0);
      return true;
    });
  }

  /**
   * The compressed data of L2 entry `index`: its exact host offset, and the 512-byte sectors
   * (start, bytes) that hold it. Undefined for a standard entry.
   */
  compressedRun(table: Uint8Array, geometry: L2Geometry, index: number): { hostOffset: number; runStart: number; runBytes: number } | undefined {
    const stride = TableCodec.l2EntryBytes(geometry);
    let run: { hostOffset: number; runStart: number; runBytes: number } | undefined;
    this.entries(table, stride, index * stride, (index + 1) * stride, (at) => {
      if (this.x.l2EntryIsCompressed(at) !== 1) return;
      const bits = geometry.clusterBits;
      run = { hostOffset: this.x.compressedDataOffset(at, bits), runStart: this.x.compressedRunStart(at, bits), runBytes: this.x.compressedRunBytes(at, bits) };
    });
    return run;
  }

  /**
   * Points L2 entry `index` at `hostOffset`, the cluster now holding its data: a standard entry
   * keeps its zero flag and subcluster bitmap and loses COPIED; a compressed one becomes a
   * standard entry with every subcluster allocated.
   */
  relocateL2Entry(table: Uint8Array, geometry: L2Geometry, index: number, hostOffset: number): void {
    this.changeL2Entry(table, geometry, index, (at, extendedL2) => this.x.relocateL2Entry(at, hostOffset, extendedL2));
  }

  /**
   * An L2 table (`clusterSize` bytes) whose first entries map whole data clusters at
   * `hostOffsets`, with COPIED and every subcluster allocated; the rest unallocated.
   */
  dataL2Table(geometry: L2Geometry, hostOffsets: readonly number[]): Uint8Array {
    const table = new Uint8Array(2 ** geometry.clusterBits);
    const stride = TableCodec.l2EntryBytes(geometry);
    this.entries(table, stride, 0, hostOffsets.length * stride, (at, i) => {
      this.x.setL2DataEntry(at, hostOffsets[i], 1, geometry.extendedL2 ? 1 : 0);
      return true;
    });
    return table;
  }

  // Lets `change` write L2 entry `index` of `table` at its window position.
  private changeL2Entry(table: Uint8Array, geometry: L2Geometry, index: number, change: (at: number, extendedL2: number) => void): void {
    const stride = TableCodec.l2EntryBytes(geometry);
    this.entries(table, stride, index * stride, (index + 1) * stride, (at) => {
      change(at, geometry.extendedL2 ? 1 : 0);
      return true;
    });
  }

  /** Writes L2 entry `index` of `table` as a whole data cluster at `hostOffset`, with COPIED and every subcluster allocated. */
  setDataL2Entry(table: Uint8Array, geometry: L2Geometry, index: number, hostOffset: number): void {
    this.changeL2Entry(table, geometry, index, (at, extendedL2) => this.x.setL2DataEntry(at, hostOffset, 1, extendedL2));
  }

  /**
   * Writes L2 entries `first` to `first + count - 1` of `table` as whole data clusters at
   * consecutive host clusters from `hostOffset`, as setDataL2Entry writes each.
   */
  setDataL2Entries(table: Uint8Array, geometry: L2Geometry, first: number, count: number, hostOffset: number): void {
    const stride = TableCodec.l2EntryBytes(geometry);
    const clusterBytes = 2 ** geometry.clusterBits;
    const extendedL2 = geometry.extendedL2 ? 1 : 0;
    this.entries(table, stride, first * stride, (first + count) * stride, (at, i) => {
      this.x.setL2DataEntry(at, hostOffset + i * clusterBytes, 1, extendedL2);
      return true;
    });
  }

  /**
   * Writes L2 entry `index` of `table` as `compressedBytes` bytes (1 to a cluster less one) of
   * compressed data at host byte `hostOffset`.
   */
  setCompressedL2Entry(table: Uint8Array, geometry: L2Geometry, index: number, hostOffset: number, compressedBytes: number): void {
    this.changeL2Entry(table, geometry, index,
      (at, extendedL2) => this.x.setL2CompressedEntry(at, hostOffset, compressedBytes, geometry.clusterBits, extendedL2));
  }

  /** Writes L2 entry `index` of `table` as reading zeros without a host cluster (version 3 images only). */
  setZeroL2Entry(table: Uint8Array, geometry: L2Geometry, index: number): void {
    this.changeL2Entry(table, geometry, index, (at, extendedL2) => this.x.setL2ZeroEntry(at, extendedL2));
  }

  /** The refcount block offsets in a refcount table (0: none). */
  reftableOffsets(table: Uint8Array): number[] {
    const offsets: number[] = [];
    this.entries(table, POINTER_ENTRY_BYTES, 0, table.length, (at) => { offsets.push(this.x.reftableEntryOffset(at)); });
    return offsets;
  }

  /**
   * A refcount table of `clusters` clusters (`clusterSize` bytes each) pointing at `blocks` (index →
   * block host offset). Throws INVALID_ARGUMENT for an index outside the table.
   */
  reftable(clusterSize: number, clusters: number, blocks: ReadonlyMap<number, number>): Uint8Array {
    const table = new Uint8Array(clusters * clusterSize);
    // Entry by entry, and only the present ones: a table of 8192 entries may point at one block.
    for (const [index, hostOffset] of blocks) {
      const start = index * POINTER_ENTRY_BYTES;
      if (!Number.isSafeInteger(index) || index < 0 || start >= table.length) {
        throw new ImageError('INVALID_ARGUMENT', `refcount block index ${index} lies outside a refcount table of ${table.length / POINTER_ENTRY_BYTES} entries`);
      }
      this.entries(table, POINTER_ENTRY_BYTES, start, start + POINTER_ENTRY_BYTES, (at) => {
        this.x.setReftableEntry(at, hostOffset);
        return true;
      });
    }
    return table;
  }

  // The parts of a refcount block that fit the window, each with the index of its first refcount.
  private *blockParts(block: Uint8Array, order: number): Generator<{ part: Uint8Array; first: number; count: number }> {
    const partBytes = this.window.length;
    for (let start = 0; start < block.length; start += partBytes) {
      const part = block.subarray(start, Math.min(block.length, start + partBytes));
      yield { part, first: (start * 8) / 2 ** order, count: (part.length * 8) / 2 ** order };
    }
  }

  /** Calls `visit(index, refcount)` for every nonzero refcount (of 2^`order` bits) of refcount block `block`. */
  refcounts(block: Uint8Array, order: number, visit: (index: number, refcount: number) => void): void {
    for (const { part, first, count } of this.blockParts(block, order)) {
      this.window.set(part);
      for (let i = 0; i < count; i++) {
        const refcount = this.x.refcountAt(0, i, order);
        if (refcount !== 0) visit(first + i, refcount);
      }
    }
  }

  /**
   * A refcount block of `clusterSize` bytes holding `refcountOf(index)` (2^`order` bits each) at
   * every index below `entries` (default: all), 0 from there on.
   */
  refcountBlock(clusterSize: number, order: number, refcountOf: (index: number) => number, entries = Infinity): Uint8Array {
    const block = new Uint8Array(clusterSize);
    for (const { part, first, count } of this.blockParts(block, order)) {
      if (first >= entries) break;
      this.window.fill(0, 0, part.length);
      for (let i = 0, end = Math.min(count, entries - first); i < end; i++) {
        const refcount = refcountOf(first + i);
        if (refcount !== 0) this.x.setRefcountAt(0, i, order, refcount);
      }
      part.set(this.window.subarray(0, part.length));
    }
    return block;
  }
}
