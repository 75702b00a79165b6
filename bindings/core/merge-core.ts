// SPDX-License-Identifier: MIT
// TypeScript face of the wasm merge core: writes request records into linear memory, runs
// mergeWrites, and exposes the extent, piece and request-map records as typed-array views.

import { float64Region, int32Region, type CoreInstance, CORE_CONSTANTS as C, Region, Status } from './wasm.js';
import { ImageError } from '../base/errors.js';

/**
 * How much the dispatcher merges: `'full'` (the default) merges overlapping, contained and
 * sequential requests and bridges gaps inside clusters a write allocates; `'adjacent'` merges
 * strictly sequential requests only (what virtio-blk does); `'off'` issues one host write per
 * request (QEMU's block layer), for comparison.
 */
export type MergeMode = 'off' | 'adjacent' | 'full';

// The record strides MergeCore reads (a type error when assembly/layout.ts changes them).
[C.REQUEST_STRIDE, C.PIECE_STRIDE, C.EXTENT_STRIDE, C.REQUEST_MAP_STRIDE] satisfies [16, 24, 32, 8];

/** Outcome of MergeCore.merge: the extent count, or 'output-full' (retry with fewer requests). */
export type MergeResult = number | 'output-full';

/**
 * One wasm core's merge entry point with views over its records. Record layouts (all f64 unless
 * stated): request (guestOffset, length); extent (guestOffset, length, firstPiece, pieceCount);
 * piece (requestIndex or GAP_REQUEST, offsetInRequest, length); request map (i32 firstExtent,
 * i32 extentCount). Views are valid until the next merge() call.
 */
export class MergeCore {
  /** Most requests one merge() call takes. */
  readonly maxBatchRequests: number;
  /** Piece requestIndex that marks a gap the format fills. */
  readonly gapRequest: number;
  /** Extent records, 4 f64 each. */
  readonly extents: Float64Array;
  /** Piece records, 3 f64 each. */
  readonly pieces: Float64Array;
  /** Request map records, 2 i32 each. */
  readonly requestMap: Int32Array;
  private readonly requests: Float64Array;
  private readonly core: CoreInstance;

  constructor(core: CoreInstance) {
    this.core = core;
    this.maxBatchRequests = C.MAX_BATCH_REQUESTS;
    this.gapRequest = C.GAP_REQUEST;
    this.requests = float64Region(core, Region.REQUESTS);
    this.extents = float64Region(core, Region.EXTENTS);
    this.pieces = float64Region(core, Region.PIECES);
    this.requestMap = int32Region(core, Region.REQUEST_MAP);
  }

  /**
   * Lets merges bridge a gap inside one aligned block of 2^blockBits bytes (for formats that
   * fill such gaps), or never (blockBits undefined; the default).
   */
  setGapWithinBlock(blockBits?: number): void {
    const ok = blockBits === undefined
      ? this.core.exports.setGapPolicy(C.GAP_POLICY_NEVER, 0)
      : this.core.exports.setGapPolicy(C.GAP_POLICY_WITHIN_BLOCK, blockBits);
    if (!ok) throw new ImageError('INVALID_ARGUMENT', `gap block bits ${blockBits} out of range 9..30`);
  }

  /**
   * qcow2 (this core must be the image's own qcow2 core): lets merges bridge a gap inside one
   * cluster of 2^clusterBits bytes that a write would allocate fresh, as the core's cached L2
   * entries tell at merge time. The image fills such gaps when the write runs.
   */
  setGapWithinFreshCluster(clusterBits: number): void {
    if (!this.core.exports.setGapPolicy(C.GAP_POLICY_WITHIN_FRESH_CLUSTER, clusterBits)) {
      throw new ImageError('INVALID_ARGUMENT', `cluster bits ${clusterBits} out of range 9..30`);
    }
  }

  /**
   * Merges requests [first, first + count) of the parallel arrays `offsets`/`lengths` (guest
   * bytes; count <= maxBatchRequests). Request i of the call is record i; results index the same.
   * Throws INVALID_ARGUMENT when the core refuses the input (a request offset or length that is
   * not a whole number of bytes inside 2^53, more than maxBatchRequests, or limits below 1: the
   * dispatcher checks requests before they get here).
   */
  merge(offsets: readonly number[], lengths: readonly number[], first: number, count: number,
        mode: MergeMode, maxIov: number, maxTransfer: number): MergeResult {
    const requests = this.requests;
    for (let i = 0; i < count; i++) {
      requests[2 * i] = offsets[first + i];
      requests[2 * i + 1] = lengths[first + i];
    }
    const modeCode = mode === 'full' ? C.MERGE_FULL : mode === 'adjacent' ? C.MERGE_ADJACENT : C.MERGE_OFF;
    const result = this.core.exports.mergeWrites(count, modeCode, maxIov, maxTransfer);
    if (result >= 0) return result;
    if (-result === Status.OUTPUT_FULL) return 'output-full';
    throw new ImageError('INVALID_ARGUMENT', `the merge core refused ${count} requests (mode ${mode}, maxIov ${maxIov}, maxTransfer ${maxTransfer}): ` +
      'an offset or length that is not a whole number of bytes inside 2^53, too many requests, or a limit below 1');
  }
}
