// SPDX-License-Identifier: MIT
// The wasm merge core (MergeCore.merge plus reading every record back) against the plain
// TypeScript version of the same algorithm (bench/reference-merge.ts), on sequential and random
// 4 KiB write batches of 1 to 256 requests. Checks both agree before timing anything.
// `--core FILE` benchmarks another build of the core (e.g. an experimental variant).

import { readFile } from 'node:fs/promises';
import { Bench } from 'tinybench';
import { MergeCore, type MergeMode } from '../bindings/core/merge-core.js';
import { init, instantiateCore } from '../bindings/core/wasm.js';
import { machineInfo, machineLine, makeRandom, median, printResult, printTable } from './harness.js';
import { referenceMerge, type MergeRequest, type ReferenceMergeOutput } from './reference-merge.js';

const REQUEST_BYTES = 4096;
const SECTOR_BYTES = 512;
const UNALIGNED_START_BYTES = 512;
const RANDOM_SPAN_BYTES = 1024 * 1024 * 1024;
/** Share of random requests placed over an earlier request of the same batch. */
const OVERLAP_FRACTION = 0.1;
const BATCH_SIZES = [1, 8, 32, 256] as const;
const ROUND_COUNT = 3;
/**
 * Requests per cell, cut into distinct batches; one timed sample merges each batch once. It is
 * large on purpose: with a pool of 64 batches of 32 the CPU's branch predictors learn the sort's
 * branches and the core looks 2x faster than on input it has never seen.
 */
const POOL_REQUEST_COUNT = 65536;
const TIME_PER_TASK_MS = 500;
const WARMUP_PER_TASK_MS = 100;
/** Fewest timed samples per task (a sample is a whole pool, tens of milliseconds). */
const MIN_SAMPLE_COUNT = 10;
/** The Node file backend's limits, which the dispatcher passes as caps. */
const NODE_MAX_IOV = 1024;
const NODE_MAX_TRANSFER_BYTES = 0x7ffff000;
const MODE: MergeMode = 'full';
/** Batches of the agreement check: random ones (each in every mode), and per benchmark pool. */
const CHECK_BATCH_COUNT = 300;

type Workload = 'sequential' | 'random';

/** One prepared batch: request objects for the TS side, parallel arrays for MergeCore.merge. */
interface Batch {
  requests: MergeRequest[];
  offsets: number[];
  lengths: number[];
}

function toBatch(requests: MergeRequest[]): Batch {
  return { requests, offsets: requests.map((r) => r.offset), lengths: requests.map((r) => r.length) };
}

// Sequential 4 KiB requests from byte 512; pool batch k continues where batch k - 1 ended.
function sequentialPool(batchSize: number): Batch[] {
  const pool: Batch[] = [];
  for (let k = 0; k < POOL_REQUEST_COUNT / batchSize; k++) {
    const requests: MergeRequest[] = [];
    for (let i = 0; i < batchSize; i++) {
      requests.push({ offset: UNALIGNED_START_BYTES + (k * batchSize + i) * REQUEST_BYTES, length: REQUEST_BYTES });
    }
    pool.push(toBatch(requests));
  }
  return pool;
}

// Random sector-aligned 4 KiB requests over 1 GiB; about OVERLAP_FRACTION of them (after the
// first of a batch) land 1 to 7 sectors away from an earlier request of the batch.
function randomPool(batchSize: number, seed: number): Batch[] {
  const random = makeRandom(seed);
  const lastSector = (RANDOM_SPAN_BYTES - REQUEST_BYTES) / SECTOR_BYTES;
  const pool: Batch[] = [];
  for (let k = 0; k < POOL_REQUEST_COUNT / batchSize; k++) {
    const requests: MergeRequest[] = [];
    for (let i = 0; i < batchSize; i++) {
      let sector = random() % (lastSector + 1);
      if (i > 0 && random() / 2 ** 32 < OVERLAP_FRACTION) {
        const base = requests[random() % i].offset / SECTOR_BYTES;
        const shift = (1 + (random() % 7)) * (random() % 2 === 0 ? 1 : -1);
        sector = Math.min(lastSector, Math.max(0, base + shift));
      }
      requests.push({ offset: sector * SECTOR_BYTES, length: REQUEST_BYTES });
    }
    pool.push(toBatch(requests));
  }
  return pool;
}

// Share of requests that overlap an earlier request of their batch.
function overlapShare(pool: readonly Batch[]): number {
  let overlapping = 0;
  let total = 0;
  for (const { requests } of pool) {
    requests.forEach((request, i) => {
      total++;
      const end = request.offset + request.length;
      if (requests.slice(0, i).some((other) => other.offset < end && request.offset < other.offset + other.length)) overlapping++;
    });
  }
  return overlapping / total;
}

// Reads every extent, piece and request-map value of the last merge into JS numbers, as the
// dispatcher does, and folds them into a checksum so nothing is optimised away.
function readBackCore(core: MergeCore, extentCount: number, requestCount: number): number {
  const { extents, pieces, requestMap } = core;
  let sum = 0;
  for (let e = 0; e < extentCount; e++) {
    const guestOffset = extents[4 * e];
    const length = extents[4 * e + 1];
    const firstPiece = extents[4 * e + 2];
    const pieceCount = extents[4 * e + 3];
    sum += guestOffset + length;
    for (let p = firstPiece; p < firstPiece + pieceCount; p++) sum += pieces[3 * p] + pieces[3 * p + 1] + pieces[3 * p + 2];
  }
  for (let r = 0; r < requestCount; r++) sum += requestMap[2 * r] + requestMap[2 * r + 1];
  return sum;
}

// The same walk over the reference's objects.
function readBackReference(output: ReferenceMergeOutput): number {
  const { extents, pieces, requestMap } = output;
  let sum = 0;
  for (const extent of extents) {
    sum += extent.guestOffset + extent.length;
    for (let p = extent.firstPiece; p < extent.firstPiece + extent.pieceCount; p++) {
      const piece = pieces[p];
      sum += piece.requestIndex + piece.offsetInRequest + piece.length;
    }
  }
  for (const span of requestMap) sum += span.firstExtent + span.extentCount;
  return sum;
}

// The core's records after a merge, in the reference's shape.
function decodeCore(core: MergeCore, extentCount: number, requestCount: number): ReferenceMergeOutput {
  const output: ReferenceMergeOutput = { extents: [], pieces: [], requestMap: [] };
  let pieceCount = 0;
  for (let e = 0; e < extentCount; e++) {
    const [guestOffset, length, firstPiece, count] = core.extents.subarray(4 * e, 4 * e + 4);
    output.extents.push({ guestOffset, length, firstPiece, pieceCount: count });
    pieceCount = Math.max(pieceCount, firstPiece + count);
  }
  for (let p = 0; p < pieceCount; p++) {
    const [requestIndex, offsetInRequest, length] = core.pieces.subarray(3 * p, 3 * p + 3);
    output.pieces.push({ requestIndex, offsetInRequest, length });
  }
  for (let r = 0; r < requestCount; r++) {
    output.requestMap.push({ firstExtent: core.requestMap[2 * r], extentCount: core.requestMap[2 * r + 1] });
  }
  return output;
}

// Runs both implementations on `requests` and throws with the first difference.
function checkAgreement(core: MergeCore, requests: MergeRequest[], mode: MergeMode, maxIov: number,
                        maxTransfer: number, gapBlockBits: number | undefined, label: string): void {
  core.setGapWithinBlock(gapBlockBits);
  const batch = toBatch(requests);
  const coreResult = core.merge(batch.offsets, batch.lengths, 0, requests.length, mode, maxIov, maxTransfer);
  const fromCore = coreResult === 'output-full' ? coreResult : decodeCore(core, coreResult, requests.length);
  const fromReference = referenceMerge(requests, mode, maxIov, maxTransfer, { gapBlockBits });
  const a = JSON.stringify(fromCore);
  const b = JSON.stringify(fromReference);
  if (a !== b) {
    throw new Error(`reference merge disagrees with the wasm core (${label}, mode ${mode}, maxIov ${maxIov}, ` +
      `maxTransfer ${maxTransfer}, gap bits ${gapBlockBits})\nrequests ${JSON.stringify(requests)}\nwasm ${a}\nts   ${b}`);
  }
}

// Agreement on dense random batches (every mode, random caps, with and without gap bridging), a
// batch that overflows the output, and the first batches of every pool the benchmark times.
function checkAll(core: MergeCore, pools: readonly Batch[][]): number {
  const random = makeRandom(0xc0ffee);
  let checked = 0;
  for (let b = 0; b < CHECK_BATCH_COUNT; b++) {
    const count = random() % 64;
    const requests: MergeRequest[] = [];
    for (let i = 0; i < count; i++) requests.push({ offset: random() % 5000, length: random() % 300 });
    for (const mode of ['off', 'adjacent', 'full'] as const) {
      const maxIov = 1 + (random() % 8);
      const maxTransfer = 1 + (random() % 1000);
      const gapBlockBits = random() % 2 === 0 ? undefined : 9 + (random() % 4);
      checkAgreement(core, requests, mode, maxIov, maxTransfer, gapBlockBits, `random batch ${b}`);
      checked++;
    }
  }
  const overflowing = Array.from({ length: 4096 }, (_, i) => ({ offset: i * 100, length: 10 }));
  checkAgreement(core, overflowing, 'full', 1024, 1, undefined, 'output-full batch');
  checked++;
  for (const pool of pools) {
    for (const batch of pool.slice(0, CHECK_BATCH_COUNT)) {
      checkAgreement(core, batch.requests, MODE, NODE_MAX_IOV, NODE_MAX_TRANSFER_BYTES, undefined, 'benchmark batch');
      checked++;
    }
  }
  core.setGapWithinBlock(undefined);
  return checked;
}

/** Merges per second of each side in one round. */
interface RoundResult {
  wasmOpsPerSecond: number;
  tsOpsPerSecond: number;
}

// One round: wasm then TS; a sample merges every batch of the pool once and reads it back. Every
// sample of both sides must give the same checksum (a cheap check that runs while timing).
async function runRound(core: MergeCore, pool: readonly Batch[], batchSize: number): Promise<RoundResult> {
  let expectedSum: number | undefined;
  const checkSum = (side: string, sum: number) => {
    expectedSum ??= sum;
    if (sum !== expectedSum) throw new Error(`${side} checksum ${sum} differs from ${expectedSum}`);
  };
  const bench = new Bench({
    time: TIME_PER_TASK_MS, warmupTime: WARMUP_PER_TASK_MS, iterations: MIN_SAMPLE_COUNT, warmupIterations: 2, throws: true,
  });
  bench.add('wasm', () => {
    let sum = 0;
    for (const batch of pool) {
      const extentCount = core.merge(batch.offsets, batch.lengths, 0, batchSize, MODE, NODE_MAX_IOV, NODE_MAX_TRANSFER_BYTES);
      if (extentCount === 'output-full') throw new Error('unexpected output-full');
      sum += readBackCore(core, extentCount, batchSize);
    }
    checkSum('wasm', sum);
  });
  bench.add('ts', () => {
    let sum = 0;
    for (const batch of pool) {
      const output = referenceMerge(batch.requests, MODE, NODE_MAX_IOV, NODE_MAX_TRANSFER_BYTES);
      if (output === 'output-full') throw new Error('unexpected output-full');
      sum += readBackReference(output);
    }
    checkSum('ts', sum);
  });
  await bench.run();
  const opsPerSecond = (name: string): number => {
    const result = bench.getTask(name)?.result;
    if (result?.state !== 'completed') throw new Error(`task ${name} did not complete: ${result?.state}`);
    return (pool.length * 1000) / result.latency.mean;
  };
  return { wasmOpsPerSecond: opsPerSecond('wasm'), tsOpsPerSecond: opsPerSecond('ts') };
}

/** One table row: medians over the rounds; `ratio` is the median of the per-round wasm/TS ratios. */
interface CellResult {
  workload: Workload;
  batchSize: number;
  wasmOpsPerSecond: number;
  tsOpsPerSecond: number;
  ratio: number;
  wasmRounds: number[];
  tsRounds: number[];
}

async function main(): Promise<void> {
  console.log(`merge bench: wasm core (MergeCore.merge + reading every record back) vs TypeScript reference, mode '${MODE}', ` +
    `caps ${NODE_MAX_IOV} iov / ${NODE_MAX_TRANSFER_BYTES} bytes; ${ROUND_COUNT} rounds side by side, medians (wasm/TS: median of the per-round ratios); ` +
    `ops/s = merged batches per second (mean over each round's samples, GC included).`);
  console.log(machineLine());
  const coreFlag = process.argv.indexOf('--core');
  if (coreFlag >= 0) {
    const corePath = process.argv[coreFlag + 1];
    if (!corePath) throw new Error('--core needs the path of a .wasm file');
    await init({ bytes: await readFile(corePath) });
    console.log(`core: ${corePath}`);
  }
  const core = new MergeCore(await instantiateCore());
  const pools = new Map<string, Batch[]>();
  for (const batchSize of BATCH_SIZES) {
    pools.set(`sequential/${batchSize}`, sequentialPool(batchSize));
    pools.set(`random/${batchSize}`, randomPool(batchSize, 0x5eed + batchSize));
  }
  const checked = checkAll(core, [...pools.values()]);
  console.log(`agreement: the reference and the wasm core gave identical extents, pieces and request maps on ${checked} batches.`);
  console.log(`workloads: sequential = 4 KiB requests from byte ${UNALIGNED_START_BYTES}; random = sector-aligned 4 KiB requests over 1 GiB, ` +
    `${(overlapShare(pools.get('random/256')!) * 100).toFixed(1)}% overlapping an earlier request of the batch (batch 256).`);
  console.log('');

  // One untimed round per workload on the largest batches runs every code path of both sides
  // (sort, sweep, map, read-back) until V8 has tiered it up, so the first cell is not cold.
  for (const workload of ['sequential', 'random'] as const) await runRound(core, pools.get(`${workload}/256`)!, 256);

  const cells: CellResult[] = [];
  for (const workload of ['sequential', 'random'] as const) {
    for (const batchSize of BATCH_SIZES) {
      const pool = pools.get(`${workload}/${batchSize}`)!;
      const wasmRounds: number[] = [];
      const tsRounds: number[] = [];
      for (let round = 0; round < ROUND_COUNT; round++) {
        const result = await runRound(core, pool, batchSize);
        wasmRounds.push(result.wasmOpsPerSecond);
        tsRounds.push(result.tsOpsPerSecond);
      }
      const wasmOpsPerSecond = median(wasmRounds);
      const tsOpsPerSecond = median(tsRounds);
      const ratio = median(wasmRounds.map((wasm, round) => wasm / tsRounds[round]));
      cells.push({ workload, batchSize, wasmOpsPerSecond, tsOpsPerSecond, ratio, wasmRounds, tsRounds });
    }
  }

  const format = (opsPerSecond: number) => Math.round(opsPerSecond).toLocaleString('en-US');
  printTable(['workload', 'batch', 'wasm ops/s', 'TS ops/s', 'wasm/TS', 'wasm ns/request', 'TS ns/request'],
    cells.map((c) => [c.workload, String(c.batchSize), format(c.wasmOpsPerSecond), format(c.tsOpsPerSecond), `${c.ratio.toFixed(2)}x`,
      (1e9 / c.wasmOpsPerSecond / c.batchSize).toFixed(0), (1e9 / c.tsOpsPerSecond / c.batchSize).toFixed(0)]));
  const goalCells = cells.filter((c) => c.batchSize === 32 || c.batchSize === 256);
  const goalMet = goalCells.every((c) => c.ratio >= 1.5);
  console.log('');
  console.log(`goal (wasm >= 1.5x TS at batch 32 and 256): ${goalMet ? 'met' : 'NOT met'} ` +
    `(${goalCells.map((c) => `${c.workload}/${c.batchSize} ${c.ratio.toFixed(2)}x`).join(', ')})`);
  printResult({
    bench: 'merge', machine: machineInfo(), mode: MODE, rounds: ROUND_COUNT, goalMet,
    cells: cells.map((c) => ({
      workload: c.workload, batchSize: c.batchSize, wasmOpsPerSecond: Math.round(c.wasmOpsPerSecond),
      tsOpsPerSecond: Math.round(c.tsOpsPerSecond), ratio: Number(c.ratio.toFixed(3)),
      wasmRounds: c.wasmRounds.map(Math.round), tsRounds: c.tsRounds.map(Math.round),
    })),
  });
}

await main();
