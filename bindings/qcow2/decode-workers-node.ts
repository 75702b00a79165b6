// SPDX-License-Identifier: MIT
// Decoding compressed qcow2 zlib clusters on Node worker threads: the clusters of one sequential
// read go to a worker in one message (node:zlib's synchronous raw inflate), so decoding runs
// beside the main thread's I/O, on every core. The worker's code is evaluated from a string so
// the same module works from the compiled package and from sources.

import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import type { DeflateBatchDecoder } from './decompress.js';

// Receives { id, input, pieces, clusterBytes }: pieces holds [start, end) pairs of input, each the
// raw deflate stream of one cluster. Answers { id, output, decoded }: cluster i at
// output[i * clusterBytes], decoded[i] = 1 when the piece decoded to exactly one cluster
// (anything else is left to the caller).
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const zlib = require('node:zlib');
parentPort.on('message', ({ id, input, pieces, clusterBytes }) => {
  const count = pieces.length / 2;
  const output = new Uint8Array(count * clusterBytes);
  const decoded = new Uint8Array(count);
  const options = { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: clusterBytes,
    chunkSize: Math.max(clusterBytes, zlib.constants.Z_MIN_CHUNK) };
  for (let i = 0; i < count; i++) {
    try {
      const out = zlib.inflateRawSync(input.subarray(pieces[2 * i], pieces[2 * i + 1]), options);
      if (out.byteLength === clusterBytes) {
        output.set(out, i * clusterBytes);
        decoded[i] = 1;
      }
    } catch {
      // Left to the caller, which reports or repairs it as the single-cluster path does.
    }
  }
  parentPort.postMessage({ id, output, decoded }, [output.buffer, decoded.buffer]);
});
`;

interface Job { clusterBytes: number; resolve: (clusters: (Uint8Array | undefined)[]) => void; reject: (error: Error) => void }
interface PoolWorker { worker: Worker; jobs: Map<number, Job> }

/**
 * A DeflateBatchDecoder on `workerCount` worker threads (default: the machine's available
 * parallelism), started at the first batch. Batches go to the worker with the fewest waiting.
 * A worker holds the process open only while it has batches. A worker that fails rejects its
 * batches (the caller then decodes them itself) and is replaced at the next batch.
 */
export function createWorkerDeflateDecoder(workerCount = Math.max(1, availableParallelism())): DeflateBatchDecoder {
  const workers: PoolWorker[] = [];
  let nextId = 0;

  const start = (): PoolWorker => {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
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
      const { clusterBytes } = job;
      const clusters = Array.from(message.decoded, (ok, i) => (ok ? message.output.subarray(i * clusterBytes, (i + 1) * clusterBytes) : undefined));
      job.resolve(clusters);
    });
    worker.on('error', (error) => fail(error));
    worker.on('exit', () => fail(new Error('the decoding worker exited')));
    return pool;
  };

  return {
    decodeClusters(input: Uint8Array, pieces: Uint32Array, clusterBytes: number) {
      while (workers.length < workerCount) workers.push(start());
      const pool = workers.reduce((best, candidate) => (candidate.jobs.size < best.jobs.size ? candidate : best));
      // The worker gets its own copy (Buffer's slice() would share memory): the caller's stays usable.
      const owned = new Uint8Array(input);
      const id = nextId++;
      return new Promise((resolve, reject) => {
        if (pool.jobs.size === 0) pool.worker.ref();
        pool.jobs.set(id, { clusterBytes, resolve, reject });
        pool.worker.postMessage({ id, input: owned, pieces, clusterBytes }, [owned.buffer as ArrayBuffer]);
      });
    },
  };
}
