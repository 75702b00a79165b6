// SPDX-License-Identifier: MIT
// The code of a Node worker thread that decodes batches of compressed qcow2 clusters (zlib with
// node:zlib's synchronous raw inflate; zstd with node:zlib where Node has it, else the WebAssembly
// reference decoder), kept as a string so the pool evaluates it alike from the compiled package
// and from sources.

/**
 * Worker code, run with `workerData: { zstdModuleUrl }` (the URL of the zstddec module, imported
 * at the first zstd batch when node:zlib has no zstd decoder). Receives { id, type, memory,
 * outputStart, inputStart, pieces, clusterBytes }: memory (a SharedArrayBuffer) holds one
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
  if (typeof zlib.zstdDecompressSync === 'function') {
    return (frame, clusterBytes) => zlib.zstdDecompressSync(frame, { maxOutputLength: clusterBytes });
  }
  const { ZSTDDecoder } = await import(workerData.zstdModuleUrl);
  const decoder = new ZSTDDecoder();
  await decoder.init();
  return (frame, clusterBytes) => decoder.decode(frame, clusterBytes);
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
