// SPDX-License-Identifier: MIT
// Helpers of the decoding-worker tests (decode-workers*.test.ts): workers from source text, pools
// that count the workers they start, a worker's raw replies to batches posted to it, and batches
// of compressed clusters, decoded through the pool or as the caller decodes them.

import { decodeClusters, type ClusterPiece, type CompressionType } from '../../bindings/qcow2/decompress.js';
import { CLUSTER_BYTES, concatBytes } from '../helpers/compressed-clusters.js';
import { createBrowserWorkerClusterDecoder, type BrowserWorkerClusterDecoder, type DecodeBatchReply, type DecodeBatchRequest, type DecodeWorkerOptions } from '../../bindings/qcow2/decode-workers-browser.js';

/** Pool options that send every batch to a worker, however small (the tests' batches hold a cluster or a few). */
export const EVERY_BATCH: DecodeWorkerOptions = { pageDecodeMaxBytes: 0 };

/** A classic worker running `source`. */
export function blobWorker(source: string): Worker {
  return new Worker(URL.createObjectURL(new Blob([source], { type: 'text/javascript' })));
}

/** A one-worker pool over workers from `start` (with EVERY_BATCH and `options`), counting how many it starts. */
export function countingPool(start: () => Worker, answerTimeoutMs = 5000, options: DecodeWorkerOptions = {}): { pool: BrowserWorkerClusterDecoder; started: () => number } {
  let started = 0;
  const pool = createBrowserWorkerClusterDecoder({ ...EVERY_BATCH, ...options, workerCount: 1, answerTimeoutMs, start: () => { started++; return start(); } })!;
  return { pool, started: () => started };
}

/** Posts `requests` (without ids: numbered from 1) to `worker` and resolves its replies, in the order they came, once all came or 5 seconds passed. */
export async function repliesTo(worker: Worker, requests: Omit<DecodeBatchRequest, 'id'>[]): Promise<DecodeBatchReply[]> {
  const replies: DecodeBatchReply[] = [];
  const answered = new Promise<void>((resolve) => {
    worker.onmessage = (event: MessageEvent<DecodeBatchReply>) => {
      replies.push(event.data);
      if (replies.length === requests.length) resolve();
    };
  });
  requests.forEach((request, i) => worker.postMessage({ ...request, id: i + 1 }, [request.input]));
  await Promise.race([answered, new Promise((resolve) => setTimeout(resolve, 5000))]);
  return replies;
}

/** `streams` packed back to back, each followed by `paddingBytes` of 0x5a (as the next one's bytes in a qcow2 file); their [start, end) pairs (padding included); a cluster for each. */
export function packed(paddingBytes: number, ...streams: Uint8Array[]): { input: Uint8Array; pieces: Uint32Array; targets: Uint8Array[] } {
  const padded = streams.map((stream) => concatBytes(stream, new Uint8Array(paddingBytes).fill(0x5a)));
  const pieces = new Uint32Array(2 * streams.length);
  let at = 0;
  padded.forEach((stream, i) => {
    pieces[2 * i] = at;
    pieces[2 * i + 1] = at + stream.byteLength;
    at += stream.byteLength;
  });
  return { input: concatBytes(...padded), pieces, targets: streams.map(() => new Uint8Array(CLUSTER_BYTES)) };
}

/** decodeClusters (the caller's side) over `input` with `pieces` (piece i at host offset 4096 * (i + 1)), into new clusters. */
export async function decodeAll(type: CompressionType, input: Uint8Array, pieces: Uint32Array): Promise<Uint8Array[]> {
  const items: ClusterPiece[] = [];
  for (let i = 0; i < pieces.length / 2; i++) items.push({ start: pieces[2 * i], end: pieces[2 * i + 1], hostOffset: 4096 * (i + 1), cluster: new Uint8Array(CLUSTER_BYTES) });
  await decodeClusters(type, input, items);
  return items.map((item) => item.cluster);
}
