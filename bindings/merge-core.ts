// SPDX-License-Identifier: MIT
// TypeScript face of the wasm merge core: writes request records into linear memory, runs
// mergeWrites, and exposes the extent, piece and request-map records as typed-array views.

import type { CoreInstance } from './wasm.js';
import { ImageError } from './errors.js';

/**
 * How much the dispatcher merges: `'full'` (the default) merges overlapping, contained and
 * sequential requests and bridges gaps inside clusters a write allocates; `'adjacent'` merges
 * strictly sequential requests only (what virtio-blk does); `'off'` issues one host write per
 * request (QEMU's block layer), for comparison.
 */
export type MergeMode = 'off' | 'adjacent' | 'full';

/** Layout constants read from the core's exported globals. */
interface CoreConstants {
  MAX_BATCH_REQUESTS: number; REQUEST_STRIDE: number; REQUEST_MAP_STRIDE: number;
  PIECE_STRIDE: number; EXTENT_STRIDE: number; REGION_REQUESTS: number; REGION_REQUEST_MAP: number;
  REGION_PIECES: number; REGION_EXTENTS: number; STATUS_INVALID: number; STATUS_OUTPUT_FULL: number;
  MERGE_OFF: number; MERGE_ADJACENT: number; MERGE_FULL: number; GAP_REQUEST: number;
  GAP_POLICY_NEVER: number; GAP_POLICY_WITHIN_BLOCK: number; GAP_POLICY_WITHIN_FRESH_CLUSTER: number;
}

function readConstants(core: CoreInstance): CoreConstants {
  const raw = core.exports as unknown as Record<string, WebAssembly.Global>;
  const get = (name: keyof CoreConstants): number => {
    const global = raw[name];
    if (!(global instanceof WebAssembly.Global)) throw new ImageError('WASM_INTERNAL', `wasm core lacks ${name}`);
    return global.value as number;
  };
  const names: (keyof CoreConstants)[] = [
    'MAX_BATCH_REQUESTS', 'REQUEST_STRIDE', 'REQUEST_MAP_STRIDE', 'PIECE_STRIDE', 'EXTENT_STRIDE',
    'REGION_REQUESTS', 'REGION_REQUEST_MAP', 'REGION_PIECES', 'REGION_EXTENTS', 'STATUS_INVALID',
    'STATUS_OUTPUT_FULL', 'MERGE_OFF', 'MERGE_ADJACENT', 'MERGE_FULL', 'GAP_REQUEST',
    'GAP_POLICY_NEVER', 'GAP_POLICY_WITHIN_BLOCK', 'GAP_POLICY_WITHIN_FRESH_CLUSTER',
  ];
  const constants = {} as CoreConstants;
  for (const name of names) constants[name] = get(name);
  return constants;
}

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
  private readonly constants: CoreConstants;

  constructor(core: CoreInstance) {
    this.core = core;
    const c = (this.constants = readConstants(core));
    if (c.REQUEST_STRIDE !== 16 || c.PIECE_STRIDE !== 24 || c.EXTENT_STRIDE !== 32 || c.REQUEST_MAP_STRIDE !== 8) {
      throw new ImageError('WASM_INTERNAL', 'wasm core record strides differ from what these bindings read');
    }
    this.maxBatchRequests = c.MAX_BATCH_REQUESTS;
    this.gapRequest = c.GAP_REQUEST;
    const buffer = core.memory.buffer;
    const view = (region: number, bytesPer: number) => {
      const offset = core.exports.regionOffset(region) >>> 0;
      const bytes = core.exports.regionBytes(region) >>> 0;
      return [offset, bytes / bytesPer] as const;
    };
    const [reqAt, reqLen] = view(c.REGION_REQUESTS, 8);
    this.requests = new Float64Array(buffer, reqAt, reqLen);
    const [extAt, extLen] = view(c.REGION_EXTENTS, 8);
    this.extents = new Float64Array(buffer, extAt, extLen);
    const [pieceAt, pieceLen] = view(c.REGION_PIECES, 8);
    this.pieces = new Float64Array(buffer, pieceAt, pieceLen);
    const [mapAt, mapLen] = view(c.REGION_REQUEST_MAP, 4);
    this.requestMap = new Int32Array(buffer, mapAt, mapLen);
  }

  /**
   * Lets merges bridge a gap inside one aligned block of 2^blockBits bytes (for formats that
   * fill such gaps), or never (blockBits undefined; the default).
   */
  setGapWithinBlock(blockBits?: number): void {
    const c = this.constants;
    const ok = blockBits === undefined
      ? this.core.exports.setGapPolicy(c.GAP_POLICY_NEVER, 0)
      : this.core.exports.setGapPolicy(c.GAP_POLICY_WITHIN_BLOCK, blockBits);
    if (!ok) throw new ImageError('INVALID_ARGUMENT', `gap block bits ${blockBits} out of range 9..30`);
  }

  /**
   * qcow2 (this core must be the image's own qcow2 core): lets merges bridge a gap inside one
   * cluster of 2^clusterBits bytes that a write would allocate fresh, as the core's cached L2
   * entries tell at merge time. The image fills such gaps when the write runs.
   */
  setGapWithinFreshCluster(clusterBits: number): void {
    if (!this.core.exports.setGapPolicy(this.constants.GAP_POLICY_WITHIN_FRESH_CLUSTER, clusterBits)) {
      throw new ImageError('INVALID_ARGUMENT', `cluster bits ${clusterBits} out of range 9..30`);
    }
  }

  /**
   * Merges requests [first, first + count) of the parallel arrays `offsets`/`lengths` (guest
   * bytes; count <= maxBatchRequests). Request i of the call is record i; results index the same.
   * Throws WASM_INTERNAL if the core rejects the input (the dispatcher validates beforehand).
   */
  merge(offsets: readonly number[], lengths: readonly number[], first: number, count: number,
        mode: MergeMode, maxIov: number, maxTransfer: number): MergeResult {
    const requests = this.requests;
    for (let i = 0; i < count; i++) {
      requests[2 * i] = offsets[first + i];
      requests[2 * i + 1] = lengths[first + i];
    }
    const c = this.constants;
    const modeCode = mode === 'full' ? c.MERGE_FULL : mode === 'adjacent' ? c.MERGE_ADJACENT : c.MERGE_OFF;
    const result = this.core.exports.mergeWrites(count, modeCode, maxIov, maxTransfer);
    if (result >= 0) return result;
    if (-result === c.STATUS_OUTPUT_FULL) return 'output-full';
    throw new ImageError('WASM_INTERNAL', `mergeWrites rejected its input (status ${-result})`);
  }
}
