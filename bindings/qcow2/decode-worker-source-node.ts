// SPDX-License-Identifier: MIT
// The code of a Node worker thread that decodes batches of compressed qcow2 clusters (zlib with
// node:zlib's synchronous raw inflate; zstd with the reference library built to WebAssembly by
// @foxglove/wasm-zstd, called directly so a cluster is decoded in its memory and copied once,
// allocating nothing), kept as a string so the pool evaluates it alike from the compiled package
// and from sources.

/**
 * Worker code, run with `workerData: { zstdModulePath }` (the path of @foxglove/wasm-zstd's
 * Emscripten module factory, loaded at the first zstd batch; its `_decompress(output, capacity,
 * input, length)` decodes one-shot and returns the bytes produced, -1 on error). Receives { id,
 * type, memory, outputStart, inputStart, pieces, clusterBytes }: memory (a SharedArrayBuffer) holds one
 * decoded-flag byte per piece at 0, the clusters' outputs from `outputStart` (cluster i at
 * outputStart + i * clusterBytes) and the input at `inputStart`; pieces holds [start, end) pairs
 * of the input, each the raw deflate stream or the one zstd frame of a cluster (an empty range is
 * skipped). The worker sets flag i to 1 when piece i decoded to exactly one cluster (anything
 * else is left to the caller) and answers { id }.
 */
export const DECODE_WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const zlib = require('node:zlib');
const inflateOptions = (clusterBytes) => ({ finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: clusterBytes,
  chunkSize: Math.max(clusterBytes, zlib.constants.Z_MIN_CHUNK) });
const inflate = (input, clusterBytes) => zlib.inflateRawSync(input, inflateOptions(clusterBytes));
let zstdLoaded;
const loadZstd = async () => {
  const wasm = await require(workerData.zstdModulePath)();
  let inputPointer = 0;
  let inputCapacity = 0;
  let outputPointer = 0;
  let outputCapacity = 0;
  return (frame, clusterBytes) => {
    if (frame.byteLength > inputCapacity) {
      if (inputCapacity > 0) wasm._free(inputPointer);
      inputCapacity = Math.max(frame.byteLength, 2 * inputCapacity);
      inputPointer = wasm._malloc(inputCapacity);
    }
    if (clusterBytes > outputCapacity) {
      if (outputCapacity > 0) wasm._free(outputPointer);
      outputCapacity = clusterBytes;
      outputPointer = wasm._malloc(outputCapacity);
    }
    if (inputPointer === 0 || outputPointer === 0) throw new Error('out of wasm memory');
    wasm.HEAPU8.set(frame, inputPointer);
    const produced = wasm._decompress(outputPointer, clusterBytes, inputPointer, frame.byteLength);
    return wasm.HEAPU8.subarray(outputPointer, outputPointer + Math.max(0, produced));
  };
};
parentPort.on('message', async ({ id, type, memory, outputStart, inputStart, pieces, clusterBytes }) => {
  const count = pieces.length / 2;
  const bytes = new Uint8Array(memory);
  bytes.fill(0, 0, count);
  let decode = inflate;
  if (type === 'zstd') {
    zstdLoaded ??= loadZstd();
    decode = await zstdLoaded.catch(() => undefined);
  }
  for (let i = 0; i < count && decode !== undefined; i++) {
    const start = inputStart + pieces[2 * i];
    const end = inputStart + pieces[2 * i + 1];
    if (end === start) continue;
    try {
      const out = decode(bytes.subarray(start, end), clusterBytes);
      if (out.byteLength === clusterBytes) {
        bytes.set(out, outputStart + i * clusterBytes);
        bytes[i] = 1;
      }
    } catch {
      // Left to the caller, which reports or repairs it as the single-cluster path does.
    }
  }
  parentPort.postMessage({ id });
});
`;
