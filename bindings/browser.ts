// SPDX-License-Identifier: MIT
// Browser entry point `qcow2-wasm/browser`: everything of the neutral entry plus the backends
// browsers have: OPFS files (worker and main thread), files being saved (writable file streams),
// IndexedDB, Blobs and Files, HTTP Range, memory.
// Nothing reachable from here imports a `node:` module.

import { setClusterBatchDecoder, setNativeDeflateDecoder, setNativeZstdDecoder } from './qcow2/decompress.js';
import { streamDeflateDecoder } from './qcow2/inflate-stream.js';
import { createBrowserWorkerClusterDecoder } from './qcow2/decode-workers-browser.js';
import { setDefaultRemoteFetch } from './backends/remote-fetch.js';
import { createWorkerFetch } from './backends/worker-fetch.js';

export * from './index.js';

// Compressed clusters decode natively: zlib with the engine's DecompressionStream, zstd with the
// reference decoder built to WebAssembly (loaded at the first zstd cluster), instead of in
// JavaScript. Whole clusters read together decode on dedicated workers, off the thread that runs
// the emulator; where no worker can start, on this thread.
setNativeDeflateDecoder(streamDeflateDecoder());
setNativeZstdDecoder(() => import('./qcow2/zstd-wasm.js').then((module) => module.loadWasmZstdDecoder()));
setClusterBatchDecoder(createBrowserWorkerClusterDecoder());
// Remote images (HTTP Range, split parts) are fetched on a worker: a request made on this thread
// waits for the emulator's turns before it goes out. Where no worker starts, on this thread.
setDefaultRemoteFetch(createWorkerFetch());
export { openOpfsBackend, type OpfsBackendOptions, type OpfsMode } from './backends/opfs.js';
export { createWritableStreamBackend, type WritableStreamBackend } from './backends/opfs-writable-stream.js';
export { createBlobBackend } from './backends/blob.js';
export { openHttpBackend, type HttpBackendOptions } from './backends/http-range.js';
export { openIndexedDbBackend, deleteIndexedDbImage, type IndexedDbBackendOptions } from './backends/indexeddb.js';
export { type LockedPolicy } from './backends/image-lock.js';
export { openSplitBackend, type SplitBackend, type SplitBackendOptions } from './backends/split-parts.js';
export { writeSplitImage, type SplitWriteOptions } from './tools/split-writer.js';
export { SPLIT_MANIFEST_NAME, splitPartName, validateSplitManifest, type SplitManifest } from './backends/split-manifest.js';

// A tab's memory is scarcer than requests: convert reads and writes 2 MiB chunks here (where the
// default is 8 MiB), so an export's buffers and the HTTP responses and file reads filling them stay small.
import { setConvertChunkBytes } from './tools/convert-chunk-size.js';

setConvertChunkBytes(2 << 20);
