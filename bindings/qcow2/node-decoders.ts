// SPDX-License-Identifier: MIT
// Node's native decoders for compressed clusters, installed by the Node entry and the command.

import { setDeflateBatchDecoder, setNativeDeflateDecoder, setNativeZstdDecoder } from './decompress.js';
import { nodeDeflateDecoder } from './inflate-node.js';
import { loadWasmZstdDecoder } from './zstd-wasm.js';
import { createWorkerDeflateDecoder } from './decode-workers-node.js';

let installed = false;

/**
 * Makes compressed clusters decode natively in this process: zlib with node:zlib (several
 * clusters of one read on worker threads, started at the first such read; a single cluster in
 * the thread pool), zstd with the reference decoder built to WebAssembly, instead of in
 * JavaScript. Calling it again does nothing.
 */
export function installNodeDecoders(): void {
  if (installed) return;
  installed = true;
  setNativeDeflateDecoder(nodeDeflateDecoder);
  setNativeZstdDecoder(loadWasmZstdDecoder);
  setDeflateBatchDecoder(createWorkerDeflateDecoder());
}
