// SPDX-License-Identifier: MIT
// Decoding compressed qcow2 clusters (zlib and zstd) on dedicated workers in browsers: the
// clusters of one read go to a worker (its script: decode-worker-source-browser.ts, started from a
// Blob) in one message, so their decoding does not run on the page's main thread, where an
// emulator runs. A read of a cluster or two decodes on the page: the round trip would cost more.
// Where no worker can start (a Content Security Policy that does not allow blob:
// workers), for a type the workers cannot decode (zlib where the engine's DecompressionStream
// cannot decode qcow2's clusters, zstd where its decoder's script does not load), or once a worker
// stops answering, the clusters decode on the calling thread as before.

import type { ClusterBatchDecoder, CompressionType } from './decompress.js';
import { decodeWorkerSource } from './decode-worker-source-browser.js';

/**
 * A batch for a decoding worker: `input` holds the compressed bytes of `type`, `pieces` [start,
 * end) pairs of it, one per cluster (a raw deflate stream, or one zstd frame). A zstd batch names
 * the decoder's script: its URL and the global it defines (ZSTDDecoder, zstddec's API).
 */
export interface DecodeBatchRequest {
  id: number;
  type: CompressionType;
  input: ArrayBuffer;
  pieces: Uint32Array;
  clusterBytes: number;
  zstdDecoder?: ZstdDecoderScript;
}

/** Where a worker loads the zstd decoder from: a classic script at `url` that defines global `globalName`. */
export interface ZstdDecoderScript { url: string; globalName: string }

/**
 * A worker's answer: `decoded[i]` is 1 when piece i decoded to exactly one cluster, now at
 * `output` bytes [i * clusterBytes, (i + 1) * clusterBytes); 0 when not (left to the caller).
 * `declined`: the worker cannot decode this batch's type in this engine (every flag 0).
 */
export interface DecodeBatchReply { id: number; output: ArrayBuffer; decoded: Uint8Array; declined?: boolean }

/**
 * By default a batch not answered within this long counts as lost: the worker is ended and its
 * batches decode on the calling thread. A batch takes milliseconds; this only catches a dead
 * worker (a browser tells the page nothing when a worker's thread dies).
 */
const DEFAULT_ANSWER_TIMEOUT_MS = 5000;
const DEFAULT_PAGE_DECODE_MAX_BYTES = 128 * 1024;
/** end() ends the workers this long after it is called, unless a batch comes first (an image closed and another opened keep them). */
const END_DELAY_MS = 1000;
/** Workers replaced after failing in a row (no batch answered in between) before the pool stops starting them. */
const MAX_FAILURES_IN_A_ROW = 3;

interface Job { resolve: (reply: DecodeBatchReply) => void; reject: (error: Error) => void; timer: ReturnType<typeof setTimeout> }
interface PoolWorker { worker: Worker; jobs: Map<number, Job>; run(request: DecodeBatchRequest): Promise<DecodeBatchReply> }

/** The pool createBrowserWorkerClusterDecoder makes: a ClusterBatchDecoder that tells how many workers run and what they decoded. */
export interface BrowserWorkerClusterDecoder extends ClusterBatchDecoder {
  /** Workers running now. */
  runningWorkers(): number;
  /** Clusters of `type` the workers decoded (the caller did not) since the pool was made. */
  decodedOnWorkers(type: CompressionType): number;
}

/** How the decoding workers run (every field optional). */
export interface DecodeWorkerOptions {
  /** Most workers at once (default: one fewer than the logical processors, one to two). */
  workerCount?: number;
  /** Starts a worker (default: a classic worker running decodeWorkerSource() from a Blob). */
  start?: () => Worker;
  /** A batch not answered within this many milliseconds fails its worker (default 5000). */
  answerTimeoutMs?: number;
  /**
   * A batch whose clusters hold at most this many bytes is left to the caller (every flag 0), who
   * decodes it on its own thread: posting it to a worker and waiting for the answer costs more
   * than decoding it, above all while an emulator keeps the page's thread busy and the answer
   * waits for its turn there (default 128 KiB, two 64 KiB clusters; 0: every batch goes to a
   * worker). A guest's small read then decodes at once, its read-ahead on the workers.
   */
  pageDecodeMaxBytes?: number;
  /**
   * Where the workers load the zstd decoder from, called at the first zstd batch (default: a
   * blob: URL of the built-in copy of zstddec, ZSTD_DECODER_SCRIPT, imported then).
   */
  zstdDecoder?: () => Promise<ZstdDecoderScript>;
}

/** A classic script's blob: URL. */
const blobScriptUrl = (source: string): string => URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));

let workerScriptUrl: string | undefined;

const startBlobWorker = (): Worker => {
  workerScriptUrl ??= blobScriptUrl(decodeWorkerSource());
  return new Worker(workerScriptUrl);
};

let builtInZstdDecoder: Promise<ZstdDecoderScript> | undefined;

// The built-in zstd decoder's script (about 75 KB), imported at the first zstd batch of the page.
const loadBuiltInZstdDecoder = (): Promise<ZstdDecoderScript> => {
  builtInZstdDecoder ??= import('./zstd-worker-decoder.generated.js')
    .then(({ ZSTD_DECODER_SCRIPT, ZSTD_DECODER_GLOBAL }) => ({ url: blobScriptUrl(ZSTD_DECODER_SCRIPT), globalName: ZSTD_DECODER_GLOBAL }));
  return builtInZstdDecoder;
};

/** The workers a page gets: one fewer than its logical processors (the emulator keeps one), one to two. */
function defaultWorkerCount(): number {
  const processors = typeof navigator === 'object' ? navigator.hardwareConcurrency : undefined;
  return Math.min(2, Math.max(1, (processors ?? 2) - 1));
}

/**
 * A ClusterBatchDecoder on up to `workerCount` dedicated workers started by `start` (see
 * DecodeWorkerOptions), or undefined where there is no Worker. It decodes zlib and zstd
 * clusters; a zstd batch names the decoder's script (`zstdDecoder`, asked for once, at the first
 * zstd batch). Workers start at the first batch; a batch goes to the worker with the fewest
 * waiting, as a copy of its input (the caller's buffers stay the caller's), and the decoded
 * clusters are copied into the targets.
 * Every outcome is one of: flags from the worker (what it left, e.g. a cluster that does not
 * decode, the caller decodes itself and reports), all flags 0 for a batch of at most
 * `pageDecodeMaxBytes` of clusters (no worker is involved), all flags 0 once the pool has given up or
 * declines the batch's type (after a worker declined it: its engine cannot decode qcow2's zlib
 * clusters, or the zstd decoder does not load there; also when `zstdDecoder` rejects), or a
 * rejection when the worker fails (an error event, or no answer within `answerTimeoutMs`: it is
 * ended), after which the caller decodes the batch itself; so no read waits on a dead worker for
 * longer than that. A failed worker is replaced at the next batch; the pool gives up (decodes
 * nothing more) when a worker fails before answering any batch (it cannot start here), when
 * starting one throws, or after MAX_FAILURES_IN_A_ROW failures in a row. end() ends the workers
 * END_DELAY_MS later unless a batch comes first; the next batch starts them again.
 * runningWorkers() tells how many run now; decodedOnWorkers(type) how many clusters of `type`
 * the workers decoded so far.
 */
export function createBrowserWorkerClusterDecoder(options: DecodeWorkerOptions = {}): BrowserWorkerClusterDecoder | undefined {
  if (typeof Worker !== 'function') return undefined;
  const { workerCount = defaultWorkerCount(), start = startBlobWorker, answerTimeoutMs = DEFAULT_ANSWER_TIMEOUT_MS } = options;
  const { zstdDecoder = loadBuiltInZstdDecoder, pageDecodeMaxBytes = DEFAULT_PAGE_DECODE_MAX_BYTES } = options;
  const workers: PoolWorker[] = [];
  const declined = new Set<CompressionType>();
  const decodedCounts: Record<CompressionType, number> = { zlib: 0, zstd: 0 };
  let zstdScript: Promise<ZstdDecoderScript | undefined> | undefined;
  let nextId = 0;
  let gaveUp = false;
  let failuresInARow = 0;
  let ending = false;
  let endTimer: ReturnType<typeof setTimeout> | undefined;

  const retire = (pool: PoolWorker) => {
    const at = workers.indexOf(pool);
    if (at >= 0) workers.splice(at, 1);
    pool.worker.terminate();
  };

  const launch = (): PoolWorker | undefined => {
    let worker: Worker;
    try {
      worker = start();
    } catch {
      gaveUp = true;
      return undefined;
    }
    const pool: PoolWorker = {
      worker,
      jobs: new Map(),
      run: (request) => new Promise((resolve, reject) => {
        const timer = setTimeout(() => fail(`no answer within ${answerTimeoutMs} ms`), answerTimeoutMs);
        pool.jobs.set(request.id, { resolve, reject, timer });
        try {
          worker.postMessage(request, [request.input]);
        } catch (error) {
          clearTimeout(timer);
          pool.jobs.delete(request.id);
          reject(error);
        }
      }),
    };
    let answered = false;
    let failed = false;
    const fail = (reason: string) => {
      if (failed) return;
      failed = true;
      retire(pool);
      failuresInARow++;
      if (!answered || failuresInARow >= MAX_FAILURES_IN_A_ROW) gaveUp = true;
      const error = new Error(`the cluster decoding worker failed: ${reason}`);
      for (const job of pool.jobs.values()) {
        clearTimeout(job.timer);
        job.reject(error);
      }
      pool.jobs.clear();
    };
    worker.onmessage = (event: MessageEvent<DecodeBatchReply>) => {
      const job = pool.jobs.get(event.data.id);
      if (job === undefined) return;
      answered = true;
      failuresInARow = 0;
      clearTimeout(job.timer);
      pool.jobs.delete(event.data.id);
      if (pool.jobs.size === 0 && (ending || gaveUp)) retire(pool);
      job.resolve(event.data);
    };
    worker.onerror = (event) => {
      event.preventDefault();
      fail(event.message || 'it could not be loaded');
    };
    worker.onmessageerror = () => fail('a message could not be read');
    return pool;
  };

  return {
    end(): void {
      clearTimeout(endTimer);
      endTimer = setTimeout(() => {
        ending = true;
        for (const idle of workers.filter((pool) => pool.jobs.size === 0)) retire(idle);
      }, END_DELAY_MS);
    },

    runningWorkers: () => workers.length,

    decodedOnWorkers: (type) => decodedCounts[type],

    async decodeClusters(type: CompressionType, input: Uint8Array, pieces: Uint32Array, targets: readonly Uint8Array[]): Promise<Uint8Array> {
      const none = () => new Uint8Array(targets.length);
      if (gaveUp || declined.has(type)) return none();
      if (targets.length * targets[0].byteLength <= pageDecodeMaxBytes) return none();
      clearTimeout(endTimer);
      ending = false;
      let script: ZstdDecoderScript | undefined;
      if (type === 'zstd') {
        zstdScript ??= zstdDecoder().catch(() => undefined);
        script = await zstdScript;
        if (script === undefined) {
          declined.add(type);
          return none();
        }
      }
      while (!gaveUp && workers.length < workerCount) {
        const started = launch();
        if (started !== undefined) workers.push(started);
      }
      if (gaveUp || workers.length === 0) return none();
      const pool = workers.reduce((best, candidate) => (candidate.jobs.size < best.jobs.size ? candidate : best));
      const clusterBytes = targets[0].byteLength;
      const reply = await pool.run({ id: nextId++, type, input: input.slice().buffer, pieces, clusterBytes, zstdDecoder: script });
      if (reply.declined === true) {
        declined.add(type);
        // Idle workers end; a batch of a type still taken starts them again.
        for (const idle of workers.filter((other) => other.jobs.size === 0)) retire(idle);
      }
      const output = new Uint8Array(reply.output);
      targets.forEach((target, i) => {
        if (reply.decoded[i] !== 1) return;
        target.set(output.subarray(i * clusterBytes, (i + 1) * clusterBytes));
        decodedCounts[type]++;
      });
      return reply.decoded;
    },
  };
}
