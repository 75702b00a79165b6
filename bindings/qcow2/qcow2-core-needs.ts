// SPDX-License-Identifier: MIT
// The I/O side of one qcow2 image's wasm core: its calls return a Status, and a NEED status asks
// TypeScript for something first (a metadata slice loaded from the file, a write-back when a
// cache holds only dirty slices, a grown refcount table, a copy of a shared L2 table), after
// which the call runs again. Qcow2CoreNeeds satisfies those records, one slice load at a time
// per image, and turns a final error Status into a typed error.

import type { Backend } from '../backends/backend.js';
import { type CoreExports, type CoreInstance, MappingCorruption, Status } from '../core/wasm.js';
import { ImageError } from '../base/errors.js';
import { checkImageHostRange } from './qcow2-write-plan-record.js';

const CORRUPTION_NAMES: Readonly<Record<number, string>> = {
  [MappingCorruption.L1_RESERVED_BITS]: 'reserved bits set in an L1 entry',
  [MappingCorruption.L2_TABLE_UNALIGNED]: 'L2 table offset not cluster-aligned',
  [MappingCorruption.L2_RESERVED_BITS]: 'reserved bits set in an L2 entry',
  [MappingCorruption.DATA_CLUSTER_UNALIGNED]: 'data cluster offset not cluster-aligned',
  [MappingCorruption.COMPRESSED_OFFSET_TOO_LARGE]: 'compressed cluster offset too large',
  [MappingCorruption.SUBCLUSTER_ALLOC_AND_ZERO]: 'subcluster both allocated and zero',
  [MappingCorruption.SUBCLUSTER_ALLOC_WITHOUT_CLUSTER]: 'subcluster allocated in an unallocated cluster',
  [MappingCorruption.EXTENDED_ENTRY_ZERO_FLAG]: 'zero flag set in an extended L2 entry',
} satisfies Record<Exclude<MappingCorruption, typeof MappingCorruption.NONE>, string>;

/** The wasm core of one image and the loop that satisfies its NEED records (base of Qcow2Core). */
export class Qcow2CoreNeeds {
  /** The core's linear memory. */
  readonly memory: WebAssembly.Memory;
  /** The wasm instance (the image's merge core runs in it too, so gap merges can see the L2 cache). */
  readonly instance: CoreInstance;
  /** The core's exports. */
  protected readonly x: CoreExports;
  /** The slice load in flight, if any (one per image). */
  protected sliceLoad: Promise<void> | undefined;
  /** Called when the refcount table is full: must grow it (Qcow2Writeback.growReftable). */
  onGrowthNeeded: () => Promise<void> = () => Promise.reject(new ImageError('QCOW2_NO_SPACE', 'the refcount table is full'));
  /** Called when a cache holds only dirty slices: must write metadata back. */
  onWritebackNeeded: () => Promise<void> = () => Promise.reject(new ImageError('WASM_INTERNAL', 'metadata cache full on a read-only image'));
  /**
   * Called when an L2 entry must change in a table shared with a snapshot (its L1 entry
   * `l1Index` lacks COPIED): must copy the table (allocateTableCopy ... switchToTableCopy).
   */
  onTableCopyNeeded: (l1Index: number) => Promise<void> = () => Promise.reject(new ImageError('WASM_INTERNAL', 'an L2 table copy on a read-only image'));

  protected constructor(core: CoreInstance) {
    this.memory = core.memory;
    this.instance = core;
    this.x = core.exports;
  }

  /** Bytes [offset, offset + length) of the core's memory (a view, valid until it grows). */
  protected view(offset: number, length: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, offset, length);
  }

  // Runs a core call (returning a Status) until it stops asking for I/O: loads slices (one at a
  // time per image) and writes metadata back when a cache is full of dirty slices. Returns the
  // final Status. Results in linear memory must be copied inside `call`: other calls may run
  // during any await.
  protected async satisfy(call: () => number, tables: Backend): Promise<number> {
    let status = call();
    for (;;) {
      if (status === Status.NEED_TABLE) status = (await this.loadNeededSlice(tables, call)) ?? call();
      else if (status === Status.NEED_WRITEBACK) {
        await this.onWritebackNeeded();
        status = call();
      } else if (status === Status.NEED_GROWTH) {
        await this.onGrowthNeeded();
        status = call();
      } else if (status === Status.NEED_TABLE_COPY) {
        await this.onTableCopyNeeded(this.x.needL1Index());
        status = call();
      } else return status;
    }
  }

  // Loads the slice the last NEED_TABLE named and retries `call` (again while it needs slices)
  // before any other caller may load, and so evict, a slice: with more callers than cache slots,
  // each would otherwise evict the others' slices before they used them, forever. Returns the
  // retry's status, or undefined when a load was already running (then it waits for it, and the
  // caller retries). The need is read at once, before any other call can replace it.
  private async loadNeededSlice(tables: Backend, call: () => number): Promise<number | undefined> {
    if (this.sliceLoad) {
      await this.sliceLoad;
      return undefined;
    }
    let status: number = Status.NEED_TABLE;
    this.sliceLoad = (async () => {
      while (status === Status.NEED_TABLE) {
        const cache = this.x.needCacheId();
        const hostOffset = this.x.needHostOffset();
        checkImageHostRange(hostOffset, this.x.sliceBytes() >>> 0, 'loading a metadata table');
        const slot = this.x.beginSliceLoad(cache);
        if (slot < 0) {
          await this.onWritebackNeeded();
          status = call();
          continue;
        }
        try {
          await tables.preadv(hostOffset, [this.view(this.x.slotAddress(cache, slot) >>> 0, this.x.sliceBytes() >>> 0)]);
        } catch (error) {
          this.x.abandonSliceLoad(cache, slot);
          throw error;
        }
        this.x.commitSliceLoad(cache, slot, hostOffset);
        status = call();
      }
    })().finally(() => { this.sliceLoad = undefined; });
    await this.sliceLoad;
    return status;
  }

  // An error for the final Status of a core call about `what`.
  protected statusError(status: number, what: string): ImageError {
    if (status === Status.CORRUPT) {
      const reason = CORRUPTION_NAMES[this.x.corruptReason()] ?? 'an invalid table entry';
      return new ImageError('QCOW2_CORRUPT', `${what}: ${reason} (guest offset ${this.x.corruptGuestOffset()})`);
    }
    if (status === Status.NO_SPACE) return new ImageError('QCOW2_NO_SPACE', `${what}: the refcount table is full (growing it is not implemented yet)`);
    return new ImageError('WASM_INTERNAL', `${what} failed with status ${status}`);
  }
}
