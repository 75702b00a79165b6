// SPDX-License-Identifier: MIT
// Decoding compressed qcow2 zlib clusters on Node worker threads: the clusters of one sequential
// read go to a worker in one message (node:zlib's synchronous raw inflate), so decoding runs
// beside the main thread's I/O, on every core. Input and output travel through reused shared
// memory, so a batch allocates nothing large on the main thread (fresh buffers per batch cost
// page faults and garbage collections that took more time than the messages). The worker's code
// is evaluated from a string so the same module works from the compiled package and from sources.

import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import type { DeflateBatchDecoder } from './decompress.js';

// Receives { id, memory, inputStart, pieces, clusterBytes }: memory (a SharedArrayBuffer) holds
// one decoded-flag byte per piece at 0, the clusters' outputs from `outputStart` (cluster i at
// outputStart + i * clusterBytes) and the input at `inputStart`; pieces holds [start, end) pairs
// of the input, each the raw deflate stream of one cluster. The worker sets flag i to 1 when
// piece i decoded to exactly one cluster (anything else is left to the caller) and answers { id }.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const zlib = require('node:zlib');
parentPort.on('message', ({ id, memory, outputStart, inputStart, pieces, clusterBytes }) => {
  const count = pieces.length / 2;
  const bytes = new Uint8Array(memory);
  const options = { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: clusterBytes,
    chunkSize: Math.max(clusterBytes, zlib.constants.Z_MIN_CHUNK) };
  for (let i = 0; i < count; i++) {
    bytes[i] = 0;
    try {
      const out = zlib.inflateRawSync(bytes.subarray(inputStart + pieces[2 * i], inputStart + pieces[2 * i + 1]), options);
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

/** Spare shared buffers kept for later batches (more in flight at once are made and dropped after). */
const SPARE_BUFFERS = 8;
/** Spare buffers are dropped after this long without a batch. */
const SPARE_IDLE_MS = 2000;

interface Job { resolve: () => void; reject: (error: Error) => void }
interface PoolWorker { worker: Worker; jobs: Map<number, Job> }

/**
 * A DeflateBatchDecoder on `workerCount` worker threads (default: the machine's available
 * parallelism), started at the first batch. Batches go to the worker with the fewest waiting.
 * A worker holds the process open only while it has batches. A worker that fails rejects its
 * batches (the caller then decodes them itself) and is replaced at the next batch. Keeps up to
 * SPARE_BUFFERS shared buffers between batches, each as large as the largest batch it carried
 * (compressed input plus decoded clusters: about 1.3 MiB for a 1 MiB read), until SPARE_IDLE_MS
 * pass without a batch.
 */
export function createWorkerDeflateDecoder(workerCount = Math.max(1, availableParallelism())): DeflateBatchDecoder {
  const workers: PoolWorker[] = [];
  const spare: SharedArrayBuffer[] = [];
  let nextId = 0;
  let batchesSinceCheck = 0;
  let idleCheck: ReturnType<typeof setTimeout> | undefined;
  // Drops the spare buffers once a check finds no batch since the last one.
  const checkIdle = () => {
    idleCheck = undefined;
    if (batchesSinceCheck === 0) spare.length = 0;
    else armIdleCheck();
  };
  const armIdleCheck = () => {
    batchesSinceCheck = 0;
    idleCheck = setTimeout(checkIdle, SPARE_IDLE_MS);
    idleCheck.unref();
  };

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
    worker.on('message', (message: { id: number }) => {
      const job = pool.jobs.get(message.id);
      if (!job) return;
      pool.jobs.delete(message.id);
      if (pool.jobs.size === 0) worker.unref();
      job.resolve();
    });
    worker.on('error', (error) => fail(error));
    worker.on('exit', () => fail(new Error('the decoding worker exited')));
    return pool;
  };

  // A spare buffer of at least `bytes` (the smallest that fits), else a new one.
  const take = (bytes: number): SharedArrayBuffer => {
    let best = -1;
    for (let i = 0; i < spare.length; i++) {
      if (spare[i].byteLength >= bytes && (best < 0 || spare[i].byteLength < spare[best].byteLength)) best = i;
    }
    if (best < 0) return new SharedArrayBuffer(bytes);
    return spare.splice(best, 1)[0];
  };
  // Keeps `memory` for later batches, dropping the smallest spare when there are too many.
  const give = (memory: SharedArrayBuffer) => {
    batchesSinceCheck++;
    if (idleCheck === undefined) armIdleCheck();
    spare.push(memory);
    if (spare.length > SPARE_BUFFERS) {
      spare.sort((a, b) => b.byteLength - a.byteLength);
      spare.length = SPARE_BUFFERS;
    }
  };

  return {
    async decodeClusters(input: Uint8Array, pieces: Uint32Array, targets: readonly Uint8Array[]) {
      while (workers.length < workerCount) workers.push(start());
      const pool = workers.reduce((best, candidate) => (candidate.jobs.size < best.jobs.size ? candidate : best));
      const count = targets.length;
      const clusterBytes = targets[0].byteLength;
      const outputStart = Math.ceil(count / 8) * 8;
      const inputStart = outputStart + count * clusterBytes;
      const memory = take(inputStart + input.byteLength);
      const bytes = new Uint8Array(memory);
      bytes.set(input, inputStart);
      const id = nextId++;
      await new Promise<void>((resolve, reject) => {
        if (pool.jobs.size === 0) pool.worker.ref();
        pool.jobs.set(id, { resolve, reject });
        pool.worker.postMessage({ id, memory, outputStart, inputStart, pieces, clusterBytes });
      });
      const decoded = bytes.slice(0, count);
      for (let i = 0; i < count; i++) {
        if (decoded[i] === 1) targets[i].set(bytes.subarray(outputStart + i * clusterBytes, outputStart + (i + 1) * clusterBytes));
      }
      give(memory);
      return decoded;
    },
  };
}
