// SPDX-License-Identifier: MIT
// zstd cluster decoders side by side (`npm run bench:zstd-decoders`): the wasm reference decoder
// single-cluster reads of zstd images use on Node before 22.15 and in browsers (zstddec, one-shot
// into a buffer of one cluster, through decodeCluster), Node's decode workers (one worker, batches
// of 16 clusters through its shared memory, @foxglove/wasm-zstd), node:zlib's zstd where Node has
// it (22.15 and later; one-shot, bounded to a cluster), the pure-JavaScript decoder Deno uses (fzstd, through inflateCluster), and the wasm zstd build the
// package compresses with (@hpcc-js/wasm-zstd, streaming decompressChunk into one cluster, the
// only call of it that bounds its output). 64 KiB clusters, each one frame at QEMU's level, of
// 256-byte chunks: every fourth fillPattern data, the others the chunk before with one byte changed. CPU time of this process, which a shared machine disturbs less than wall time.

import { decodeCluster, inflateCluster, setNativeZstdDecoder } from '../bindings/qcow2/decompress.js';
import { loadWasmZstdDecoder } from '../bindings/qcow2/zstd-wasm.js';
import { loadZstd, zstdFrame } from '../bindings/qcow2/compress.js';
import * as zlib from 'node:zlib';
import { createWorkerClusterDecoder } from '../bindings/qcow2/decode-workers-node.js';
import { fillPattern, machineLine, median, printTable } from './harness.js';

const CLUSTER_BYTES = 64 * 1024;
const CLUSTERS = 256;
const BATCH_CLUSTERS = 16;
const ROUNDS = 5;

/** CPU milliseconds (user + system) of `run`. */
async function cpuMs(run: () => void | Promise<void>): Promise<number> {
  const before = process.cpuUsage();
  await run();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000;
}

/** `frames` as decodeClusters batches of BATCH_CLUSTERS: the frames back to back and their [start, end) pairs. */
function batchesOf(frames: readonly Uint8Array[]): { input: Uint8Array; pieces: Uint32Array }[] {
  const batches = [];
  for (let first = 0; first < frames.length; first += BATCH_CLUSTERS) {
    const batch = frames.slice(first, first + BATCH_CLUSTERS);
    const input = new Uint8Array(batch.reduce((sum, frame) => sum + frame.byteLength, 0));
    const pieces = new Uint32Array(batch.length * 2);
    let at = 0;
    batch.forEach((frame, i) => {
      input.set(frame, at);
      pieces.set([at, at + frame.byteLength], 2 * i);
      at += frame.byteLength;
    });
    batches.push({ input, pieces });
  }
  return batches;
}

async function main(): Promise<void> {
  const zstd = await loadZstd();
  const frames: Uint8Array[] = [];
  for (let i = 0; i < CLUSTERS; i++) {
    const cluster = new Uint8Array(CLUSTER_BYTES);
    for (let at = 0; at < CLUSTER_BYTES; at += 256) {
      if (at % 1024 === 0) fillPattern(cluster.subarray(at, at + 256), i * CLUSTER_BYTES + at);
      else {
        cluster.copyWithin(at, at - 256, at);
        cluster[at + (at % 251)]++;
      }
    }
    frames.push(zstdFrame(zstd, cluster));
  }
  const compressedBytes = frames.reduce((sum, frame) => sum + frame.byteLength, 0);
  const target = new Uint8Array(CLUSTER_BYTES);
  setNativeZstdDecoder(loadWasmZstdDecoder);
  const nodeZstd = (zlib as { zstdDecompressSync?: (frame: Uint8Array, options: { maxOutputLength: number }) => Uint8Array }).zstdDecompressSync;
  const workers = createWorkerClusterDecoder(1);
  const batches = batchesOf(frames);
  const targets = Array.from({ length: BATCH_CLUSTERS }, () => new Uint8Array(CLUSTER_BYTES));
  const samples = { zstddec: [] as number[], workers: [] as number[], node: [] as number[], fzstd: [] as number[], wasm: [] as number[] };
  for (let round = 0; round <= ROUNDS; round++) {
    const zstddec = await cpuMs(async () => { for (const frame of frames) await decodeCluster('zstd', frame, target, 0); });
    const onWorkers = await cpuMs(async () => {
      for (const { input, pieces } of batches) {
        const decoded = await workers.decodeClusters('zstd', input, pieces, targets);
        if (decoded.some((flag) => flag !== 1)) throw new Error('a cluster did not decode on the worker');
      }
    });
    const node = nodeZstd === undefined ? 0 : await cpuMs(() => { for (const frame of frames) target.set(nodeZstd(frame, { maxOutputLength: CLUSTER_BYTES })); });
    const fzstd = await cpuMs(() => { for (const frame of frames) inflateCluster('zstd', frame, target, 0); });
    const wasm = await cpuMs(() => {
      for (const frame of frames) {
        zstd.reset();
        if (zstd.decompressChunk(frame, CLUSTER_BYTES).byteLength !== CLUSTER_BYTES) throw new Error('short cluster');
      }
    });
    // Round 0 warms the JIT up and is not counted.
    if (round > 0) {
      samples.zstddec.push(zstddec);
      samples.workers.push(onWorkers);
      samples.node.push(node);
      samples.fzstd.push(fzstd);
      samples.wasm.push(wasm);
    }
  }
  const mbPerSecond = (ms: number) => ((CLUSTERS * CLUSTER_BYTES) / 1e6 / (ms / 1000)).toFixed(0);
  console.log(`zstd cluster decoders: ${CLUSTERS} clusters of ${CLUSTER_BYTES} bytes (${(compressedBytes / (CLUSTERS * CLUSTER_BYTES)).toFixed(2)} compressed/plain); ${machineLine()}`);
  printTable(['decoder', 'CPU ms', 'MB/s of CPU time'], [
    ['zstddec (wasm reference decoder, single clusters on Node before 22.15 and in browsers)', median(samples.zstddec).toFixed(0), mbPerSecond(median(samples.zstddec))],
    [`decode workers (batches of ${BATCH_CLUSTERS}, @foxglove/wasm-zstd; CPU of every thread)`, median(samples.workers).toFixed(0), mbPerSecond(median(samples.workers))],
    ...(nodeZstd === undefined ? [] : [['node:zlib zstd (Node 22.15 and later)', median(samples.node).toFixed(0), mbPerSecond(median(samples.node))]]),
    ['fzstd (pure JavaScript, used in Deno)', median(samples.fzstd).toFixed(0), mbPerSecond(median(samples.fzstd))],
    ['@hpcc-js/wasm-zstd decompressChunk', median(samples.wasm).toFixed(0), mbPerSecond(median(samples.wasm))],
  ]);
}

await main();
