// SPDX-License-Identifier: MIT
// Node's native decoders for compressed clusters, installed by the Node entry and the command.

import { setClusterBatchDecoder, setNativeDeflateDecoder, setNativeZstdDecoder } from './decompress.js';
import { nodeDeflateDecoder } from './inflate-node.js';
import { loadWasmZstdDecoder } from './zstd-wasm.js';
import { createWorkerClusterDecoder } from './decode-workers-node.js';

let installed = false;

/**
 * Makes compressed clusters decode natively in this process, instead of in JavaScript: zlib with
 * node:zlib (a single cluster in the thread pool), zstd with the reference decoder built to
 * WebAssembly; several clusters of one read on worker threads (started at the first such read,
 * ended when idle). Calling it again does nothing. (node:zlib's zstd, in Node 22.15 and later,
 * costs more CPU per 64 KiB cluster than the WebAssembly decoder: bench:zstd-decoders.)
 */
export function installNodeDecoders(): void {
  if (installed) return;
  installed = true;
  setNativeDeflateDecoder(nodeDeflateDecoder);
  setNativeZstdDecoder(loadWasmZstdDecoder);
  setClusterBatchDecoder(createWorkerClusterDecoder());
}
