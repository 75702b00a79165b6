// SPDX-License-Identifier: MIT
// Decoding compressed qcow2 clusters (zlib and zstd) on Node worker threads: the clusters of one
// sequential read go to a worker in one message (decode-worker-source-node.ts), so decoding runs
// beside the main thread's I/O, on every core. Input and output travel through reused shared
// memory, so a batch allocates nothing large on the main thread (fresh buffers per batch cost
// page faults and garbage collections that took more time than the messages).

import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import type { ClusterBatchDecoder, CompressionType } from './decompress.js';
import { DECODE_WORKER_SOURCE } from './decode-worker-source-node.js';

/**
 * zstd batches waiting at every worker at which the pool declines more zstd batches (the caller
 * decodes them on its own thread with the same wasm decoder): the workers are behind, as when
 * other processes hold the cores, and decoding where the data already is costs less CPU than
 * queueing it. zlib batches are never declined: the caller would send their clusters one by one
 * to the thread pool, which costs more than waiting.
 */
const DECLINE_AT_QUEUED = 2;
/** Spare shared buffers kept for later batches (more in flight at once are made and dropped after). */
const SPARE_BUFFERS = 8;
/** The spare buffers are dropped after this long without a batch. */
const SPARE_IDLE_MS = 2000;
/**
 * end() ends the workers this long after it is called, unless a batch comes first: an image
 * closed and another opened right after (a converter's next file, a benchmark's next round) keep
 * their warm workers.
 */
const END_DELAY_MS = 1000;

interface Job { resolve: () => void; reject: (error: Error) => void }
interface PoolWorker { worker: Worker; jobs: Map<number, Job> }

// The module worker threads load the WebAssembly zstd decoder from.
const zstdModulePath = createRequire(import.meta.url).resolve('@foxglove/wasm-zstd/dist/wasm-zstd.js');

/**
 * A ClusterBatchDecoder on `workerCount` worker threads (default: the machine's available
 * parallelism), started at the first batch. Batches go to the worker with the fewest waiting.
 * A worker holds the process open only while it has batches. When every worker has
 * DECLINE_AT_QUEUED batches waiting, a zstd batch (in memory not lent) is declined: all flags 0.
 * A worker that fails rejects its batches (the caller then decodes them itself) and is replaced
 * at the next batch. Keeps up to
 * SPARE_BUFFERS shared buffers between batches, each as large as the largest batch it carried
 * (compressed input plus decoded clusters: about 1.3 MiB for a 1 MiB read) until SPARE_IDLE_MS
 * pass without a batch; inputBuffer lends one of them, so the caller reads a batch's input
 * straight into it. end() ends the workers END_DELAY_MS later unless a batch comes first (each
 * once its batches are over) and drops the spare buffers; the next batch starts them again.
 * runningWorkers() tells how many run now.
 */
export function createWorkerClusterDecoder(workerCount = Math.max(1, availableParallelism())): ClusterBatchDecoder & { runningWorkers(): number } {
  const workers: PoolWorker[] = [];
  const spare: SharedArrayBuffer[] = [];
  let nextId = 0;
  let batchesSinceCheck = 0;
  let idleCheck: ReturnType<typeof setTimeout> | undefined;
  /** Set when end() takes effect: workers end once their batches are over. */
  let ending = false;
  let endTimer: ReturnType<typeof setTimeout> | undefined;
  // Drops the spare buffers once a check finds no batch since the last one.
  const checkIdle = () => {
    idleCheck = undefined;
    if (batchesSinceCheck === 0) spare.length = 0;
    else armIdleCheck();
  };
  // Ends `pool`'s worker (it has no batches left).
  const retire = (pool: PoolWorker) => {
    const at = workers.indexOf(pool);
    if (at >= 0) workers.splice(at, 1);
    void pool.worker.terminate();
  };
  const armIdleCheck = () => {
    batchesSinceCheck = 0;
    idleCheck = setTimeout(checkIdle, SPARE_IDLE_MS);
    idleCheck.unref();
  };

  const start = (): PoolWorker => {
    const worker = new Worker(DECODE_WORKER_SOURCE, { eval: true, workerData: { zstdModulePath } });
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
      if (pool.jobs.size === 0) {
        worker.unref();
        if (ending) retire(pool);
      }
      job.resolve();
    });
    worker.on('error', (error) => fail(error));
    worker.on('exit', () => fail(new Error('the decoding worker exited')));
    // After the listeners: adding a 'message' listener refs the worker's port again.
    worker.unref();
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

  // Whether every worker has DECLINE_AT_QUEUED batches waiting.
  const behind = () => workers.length >= workerCount && workers.every((pool) => pool.jobs.size >= DECLINE_AT_QUEUED);
  // Where a batch's parts lie in its shared memory: decoded flags, clusters, then the input.
  const layout = (count: number, clusterBytes: number) => {
    const outputStart = Math.ceil(count / 8) * 8;
    return { outputStart, inputStart: outputStart + count * clusterBytes };
  };
  /** Shared memory lent for reading a batch's input into (decodeClusters then takes it as it is). */
  const lent = new WeakSet<ArrayBufferLike>();

  return {
    inputBuffer(type: CompressionType, inputBytes: number, clusterCount: number, clusterBytes: number): Uint8Array | undefined {
      if (type === 'zstd' && behind()) return undefined;
      const { inputStart } = layout(clusterCount, clusterBytes);
      const memory = take(inputStart + inputBytes);
      lent.add(memory);
      return new Uint8Array(memory, inputStart, inputBytes);
    },

    end(): void {
      clearTimeout(endTimer);
      endTimer = setTimeout(() => {
        ending = true;
        spare.length = 0;
        for (const idle of workers.filter((pool) => pool.jobs.size === 0)) retire(idle);
      }, END_DELAY_MS);
      endTimer.unref();
    },

    runningWorkers: () => workers.length,

    async decodeClusters(type: CompressionType, input: Uint8Array, pieces: Uint32Array, targets: readonly Uint8Array[]) {
      clearTimeout(endTimer);
      ending = false;
      while (workers.length < workerCount) workers.push(start());
      const pool = workers.reduce((best, candidate) => (candidate.jobs.size < best.jobs.size ? candidate : best));
      const count = targets.length;
      const clusterBytes = targets[0].byteLength;
      const { outputStart, inputStart } = layout(count, clusterBytes);
      // The caller's input in memory lent for it is taken as it is; other input is copied.
      const inPlace = lent.has(input.buffer) && input.byteOffset === inputStart;
      lent.delete(input.buffer);
      if (!inPlace && type === 'zstd' && behind()) return new Uint8Array(count);
      const memory = inPlace ? input.buffer as SharedArrayBuffer : take(inputStart + input.byteLength);
      const bytes = new Uint8Array(memory);
      if (!inPlace) bytes.set(input, inputStart);
      const id = nextId++;
      await new Promise<void>((resolve, reject) => {
        if (pool.jobs.size === 0) pool.worker.ref();
        pool.jobs.set(id, { resolve, reject });
        pool.worker.postMessage({ id, type, memory, outputStart, inputStart, pieces, clusterBytes });
      });
      const decoded = bytes.slice(0, count);
      let left = 0;
      for (let i = 0; i < count; i++) {
        if (decoded[i] === 1) targets[i].set(bytes.subarray(outputStart + i * clusterBytes, outputStart + (i + 1) * clusterBytes));
        else left++;
      }
      // Input the caller decodes itself from stays the caller's: that memory is not reused.
      if (!inPlace || left === 0) give(memory);
      return decoded;
    },
  };
}
