// SPDX-License-Identifier: MIT
// Decoding compressed qcow2 clusters on Node worker threads: the clusters of one sequential read
// go to a worker in one message (node:zlib's synchronous inflate for zlib, the wasm zstd decoder
// for zstd), so decoding runs beside the main thread's I/O, on every core. The worker's code is
// evaluated from a string so the same module works from the compiled package and from sources.

import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import type { ClusterBatchDecoder, CompressionType } from './decompress.js';

// Receives { id, type, input, pieces, clusterBytes }: pieces holds [start, end) pairs of input,
// each the compressed bytes of one cluster (for zstd exactly one frame). Answers { id, input,
// output, decoded }: cluster i at output[i * clusterBytes], decoded[i] = 1 when the piece decoded
// to exactly one cluster (anything else is left to the caller).
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const zlib = require('node:zlib');
let zstd;
const inflateOptions = (clusterBytes) => ({ finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: clusterBytes,
  chunkSize: Math.max(clusterBytes, zlib.constants.Z_MIN_CHUNK) });
parentPort.on('message', async ({ id, type, input, pieces, clusterBytes }) => {
  const count = pieces.length / 2;
  const output = new Uint8Array(count * clusterBytes);
  const decoded = new Uint8Array(count);
  try {
    if (type === 'zstd' && !zstd) {
      const { ZSTDDecoder } = await import(workerData.zstddecUrl);
      const decoder = new ZSTDDecoder();
      await decoder.init();
      zstd = decoder;
    }
    for (let i = 0; i < count; i++) {
      const piece = input.subarray(pieces[2 * i], pieces[2 * i + 1]);
      try {
        const out = type === 'zstd' ? zstd.decode(piece, clusterBytes) : zlib.inflateRawSync(piece, inflateOptions(clusterBytes));
        if (out.byteLength === clusterBytes) {
          output.set(out, i * clusterBytes);
          decoded[i] = 1;
        }
      } catch {
        // Left to the caller, which reports or repairs it as the single-cluster path does.
      }
    }
  } catch {
    // The zstd decoder did not load: every cluster is left to the caller.
  }
  parentPort.postMessage({ id, output, decoded }, [output.buffer, decoded.buffer]);
});
`;

interface Job { resolve: (clusters: (Uint8Array | undefined)[]) => void; reject: (error: Error) => void }
interface PoolWorker { worker: Worker; jobs: Map<number, Job> }

/**
 * A ClusterBatchDecoder on `workerCount` worker threads (default: the machine's available
 * parallelism), started at the first batch. Batches go to the worker with the fewest waiting.
 * A worker holds the process open only while it has batches. A worker that fails rejects its
 * batches (the caller then decodes them itself) and is replaced at the next batch.
 */
export function createWorkerClusterDecoder(workerCount = Math.max(1, availableParallelism())): ClusterBatchDecoder {
  const zstddecUrl = pathToFileURL(createRequire(import.meta.url).resolve('zstddec')).href;
  const workers: PoolWorker[] = [];
  let nextId = 0;

  const start = (): PoolWorker => {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { zstddecUrl } });
    worker.unref();
    const pool: PoolWorker = { worker, jobs: new Map() };
    const fail = (error: Error) => {
      const at = workers.indexOf(pool);
      if (at >= 0) workers.splice(at, 1);
      for (const job of pool.jobs.values()) job.reject(error);
      pool.jobs.clear();
    };
    worker.on('message', (message: { id: number; output: Uint8Array; decoded: Uint8Array }) => {
      const job = pool.jobs.get(message.id);
      if (!job) return;
      pool.jobs.delete(message.id);
      if (pool.jobs.size === 0) worker.unref();
      const clusterBytes = message.output.byteLength / Math.max(1, message.decoded.length);
      const clusters = Array.from(message.decoded, (ok, i) => (ok ? message.output.subarray(i * clusterBytes, (i + 1) * clusterBytes) : undefined));
      job.resolve(clusters);
    });
    worker.on('error', (error) => fail(error));
    worker.on('exit', () => fail(new Error('the decoding worker exited')));
    return pool;
  };

  return {
    decodeClusters(type: CompressionType, input: Uint8Array, pieces: Uint32Array, clusterBytes: number) {
      while (workers.length < workerCount) workers.push(start());
      const pool = workers.reduce((best, candidate) => (candidate.jobs.size < best.jobs.size ? candidate : best));
      // The worker gets its own copy (Buffer's slice() would share memory): the caller's stays usable.
      const owned = new Uint8Array(input);
      const id = nextId++;
      return new Promise((resolve, reject) => {
        if (pool.jobs.size === 0) pool.worker.ref();
        pool.jobs.set(id, { resolve, reject });
        pool.worker.postMessage({ id, type, input: owned, pieces, clusterBytes }, [owned.buffer as ArrayBuffer]);
      });
    },
  };
}
