// SPDX-License-Identifier: MIT
// Test helper: runs the wasm merge core on plain request lists and decodes its records.

import { MergeCore, type MergeMode } from '../../bindings/core/merge-core.js';
import { instantiateCore } from '../../bindings/core/wasm.js';

export interface DecodedExtent {
  offset: number;
  length: number;
  /** [requestIndex (-1 = gap), offsetInRequest, length] */
  pieces: [number, number, number][];
}

export interface DecodedMerge {
  extents: DecodedExtent[];
  /** per request: [firstExtent, extentCount] */
  requestMap: [number, number][];
}

/** A fresh core for tests. */
export async function newMergeCore(): Promise<MergeCore> {
  return new MergeCore(await instantiateCore());
}

/** Merges [offset, length] requests and decodes the result ('output-full' passes through). */
export function runMerge(core: MergeCore, requests: [number, number][], mode: MergeMode = 'full',
                         maxIov = 1024, maxTransfer = 2 ** 31): DecodedMerge | 'output-full' {
  const result = core.merge(requests.map((r) => r[0]), requests.map((r) => r[1]), 0, requests.length, mode, maxIov, maxTransfer);
  if (result === 'output-full') return result;
  const extents: DecodedExtent[] = [];
  for (let e = 0; e < result; e++) {
    const [offset, length, firstPiece, pieceCount] = core.extents.subarray(4 * e, 4 * e + 4);
    const pieces: [number, number, number][] = [];
    for (let p = firstPiece; p < firstPiece + pieceCount; p++) {
      pieces.push([core.pieces[3 * p], core.pieces[3 * p + 1], core.pieces[3 * p + 2]]);
    }
    extents.push({ offset, length, pieces });
  }
  const requestMap: [number, number][] = requests.map((_, r) => [core.requestMap[2 * r], core.requestMap[2 * r + 1]]);
  return { extents, requestMap };
}
