// SPDX-License-Identifier: MIT
// A WebAssembly build of the reference zstd decoder (the zstddec package) for compressed qcow2
// clusters: one-shot decoding of whole frames into a buffer of bounded size, several times faster
// than the pure-JavaScript decoder. Installed by the Node and browser entry points.

import { ZSTDDecoder } from 'zstddec';
import type { ZstdFrameDecoder } from './decompress.js';

/**
 * Loads the wasm zstd decoder (its module is instantiated once per thread). decodeFrame returns
 * a copy of the frame's output, empty when the frame does not decode or its output would exceed
 * `capacityBytes` (the reference decoder's one-shot call reports both as an error).
 */
export async function loadWasmZstdDecoder(): Promise<ZstdFrameDecoder> {
  const decoder = new ZSTDDecoder();
  await decoder.init();
  return { decodeFrame: (frame, capacityBytes) => decoder.decode(frame, capacityBytes) };
}
