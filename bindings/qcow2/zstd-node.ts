// SPDX-License-Identifier: MIT
// node:zlib's zstd decoder (Node 22.15 and later) for compressed qcow2 clusters: native code,
// faster than the WebAssembly build, which remains the decoder on older Node.

import * as zlib from 'node:zlib';
import type { ZstdFrameDecoder } from './decompress.js';

type ZstdDecompressSync = (frame: Uint8Array, options: { maxOutputLength: number }) => Uint8Array;

/**
 * node:zlib's zstd decoder as a ZstdFrameDecoder (decodeFrame returns empty when the frame does
 * not decode or its output would exceed `capacityBytes`), or undefined when this Node has none.
 */
export function nodeZstdFrameDecoder(): ZstdFrameDecoder | undefined {
  const decompress = (zlib as unknown as { zstdDecompressSync?: ZstdDecompressSync }).zstdDecompressSync;
  if (typeof decompress !== 'function') return undefined;
  return {
    decodeFrame: (frame, capacityBytes) => {
      try {
        return decompress(frame, { maxOutputLength: capacityBytes });
      } catch {
        return new Uint8Array(0);
      }
    },
  };
}
