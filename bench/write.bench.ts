// SPDX-License-Identifier: MIT
// End-to-end write throughput on the Node file backend: sequential 4 KiB guest writes from byte
// 512 into a fresh sparse 1 GiB raw file, merged multiwrite batches against unmerged writes and
// plain fs/promises. Every run is read back and spot-checked. `--quick`: 64 MiB, one repetition.

import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { RawImage, openNodeBackend, type WriteRequest } from '../bindings/node.js';
import { fillPattern, machineInfo, machineLine, makeRandom, median, printResult, printTable, withTempDir } from './harness.js';

const MIB = 1024 * 1024;
const REQUEST_BYTES = 4096;
const START_OFFSET_BYTES = 512;
const IMAGE_BYTES = 1024 * MIB;
const REQUESTS_PER_BATCH = 32;
const WRITES_IN_FLIGHT = 32;
const SPOT_CHECK_BLOCK_COUNT = 64;
const QUICK = process.argv.includes('--quick');
const TOTAL_BYTES = (QUICK ? 64 : 256) * MIB;
const REPETITION_COUNT = QUICK ? 1 : 3;
/**
 * Untimed run of every configuration before the repetitions, so JIT warm-up favours none. The
 * library's write path needs a few thousand batches to reach optimised code (the first 512 take
 * ~25x longer each than later ones), hence 64 MiB.
 */
const WARMUP_BYTES = (QUICK ? 16 : 64) * MIB;
/** Bytes per write of the untimed pass that first hands the whole data set to the kernel. */
const PREFAULT_CHUNK_BYTES = MIB;

/** What one run measured. */
interface RunStats {
  /** From the first write until the final flush resolved. */
  elapsedMs: number;
  /** The final flush alone. */
  flushMs: number;
  guestWriteRequests: number;
  hostWriteCalls: number;
  hostWriteBytes: number;
}

/** One configuration: runs the whole workload into a new file at `path`. */
interface Config {
  key: 'a' | 'b' | 'c' | 'd';
  label: string;
  run(path: string, requests: readonly WriteRequest[], batches: readonly WriteRequest[][]): Promise<RunStats>;
}

/**
 * Calls `issue(0)`, `issue(1)`, ... `issue(total - 1)` keeping up to `depth` of the returned
 * promises pending: whenever one settles, the next is issued. Rejects with the first failure,
 * after which nothing new is issued.
 */
function runWindow(total: number, depth: number, issue: (index: number) => Promise<unknown>): Promise<void> {
  return new Promise((resolve, reject) => {
    let next = 0;
    let pending = 0;
    let failed = false;
    const launch = () => {
      while (!failed && pending < depth && next < total) {
        pending++;
        issue(next++).then(() => {
          pending--;
          if (next === total && pending === 0) resolve();
          else launch();
        }, (error: unknown) => {
          failed = true;
          reject(error);
        });
      }
    };
    if (total === 0) resolve();
    else launch();
  });
}

// A fresh sparse raw file of IMAGE_BYTES behind a RawImage.
async function openFreshImage(path: string, merge: 'full' | 'off'): Promise<RawImage> {
  const backend = await openNodeBackend(path, { writable: true, create: true });
  if (!backend.truncate) throw new Error('the Node backend lacks truncate');
  await backend.truncate(IMAGE_BYTES);
  return RawImage.open(backend, { merge });
}

// Times `write` plus a final flush, then closes the image (untimed).
async function timeImage(image: RawImage, write: () => Promise<void>): Promise<RunStats> {
  try {
    const startedMs = performance.now();
    await write();
    const flushStartedMs = performance.now();
    await image.flush();
    const elapsedMs = performance.now() - startedMs;
    const stats = image.stats();
    return { elapsedMs, flushMs: performance.now() - flushStartedMs, guestWriteRequests: stats.guestWriteRequests, hostWriteCalls: stats.hostWriteCalls, hostWriteBytes: stats.hostWriteBytes };
  } finally {
    await image.close();
  }
}

function multiwriteConfig(key: 'a' | 'b', batchesInFlight: number): Config {
  return {
    key,
    label: `RawImage merge 'full', multiwrite ${REQUESTS_PER_BATCH}-request batches, ${batchesInFlight} in flight`,
    async run(path, _requests, batches) {
      const image = await openFreshImage(path, 'full');
      return timeImage(image, () => runWindow(batches.length, batchesInFlight, (i) => Promise.all(image.multiwrite(batches[i]))));
    },
  };
}

const CONFIGS: Config[] = [
  multiwriteConfig('a', 1),
  multiwriteConfig('b', 2),
  {
    key: 'c',
    label: `RawImage merge 'off', write() one by one, ${WRITES_IN_FLIGHT} in flight`,
    async run(path, requests) {
      const image = await openFreshImage(path, 'off');
      return timeImage(image, () => runWindow(requests.length, WRITES_IN_FLIGHT,
        (i) => image.write(requests[i].offset, requests[i].data as Uint8Array)));
    },
  },
  {
    key: 'd',
    label: `fs/promises FileHandle.write, ${WRITES_IN_FLIGHT} in flight (no library)`,
    async run(path, requests) {
      const handle = await open(path, 'w+');
      try {
        await handle.truncate(IMAGE_BYTES);
        let hostWriteBytes = 0;
        const startedMs = performance.now();
        await runWindow(requests.length, WRITES_IN_FLIGHT, async (i) => {
          const data = requests[i].data as Uint8Array;
          const { bytesWritten } = await handle.write(data, 0, data.byteLength, requests[i].offset);
          if (bytesWritten !== data.byteLength) throw new Error(`short write at ${requests[i].offset}: ${bytesWritten} bytes`);
          hostWriteBytes += bytesWritten;
        });
        const flushStartedMs = performance.now();
        await handle.datasync();
        const elapsedMs = performance.now() - startedMs;
        return { elapsedMs, flushMs: performance.now() - flushStartedMs, guestWriteRequests: requests.length, hostWriteCalls: requests.length, hostWriteBytes };
      } finally {
        await handle.close();
      }
    },
  },
];

// Reads the file back with plain fs: its size, the zeros before the first and after the last
// block, and the first, the last and SPOT_CHECK_BLOCK_COUNT random blocks against the pattern.
async function verify(path: string, blockCount: number, seed: number): Promise<void> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    if (size !== IMAGE_BYTES) throw new Error(`${path}: size ${size}, expected ${IMAGE_BYTES}`);
    const actual = new Uint8Array(REQUEST_BYTES);
    const expected = new Uint8Array(REQUEST_BYTES);
    const readAt = async (position: number, length: number) => {
      const { bytesRead } = await handle.read(actual, 0, length, position);
      if (bytesRead !== length) throw new Error(`${path}: short read at ${position}`);
      return actual.subarray(0, length);
    };
    const isZero = (bytes: Uint8Array) => bytes.every((byte) => byte === 0);
    if (!isZero(await readAt(0, START_OFFSET_BYTES))) throw new Error(`${path}: bytes before the first block are not zero`);
    const endBytes = START_OFFSET_BYTES + blockCount * REQUEST_BYTES;
    if (!isZero(await readAt(endBytes, REQUEST_BYTES))) throw new Error(`${path}: bytes after the last block are not zero`);
    const random = makeRandom(seed);
    const blocks = [0, blockCount - 1, ...Array.from({ length: SPOT_CHECK_BLOCK_COUNT }, () => random() % blockCount)];
    for (const block of blocks) {
      fillPattern(expected, block * REQUEST_BYTES);
      const got = await readAt(START_OFFSET_BYTES + block * REQUEST_BYTES, REQUEST_BYTES);
      const at = got.findIndex((byte, i) => byte !== expected[i]);
      if (at >= 0) throw new Error(`${path}: block ${block} differs from the pattern at byte ${at}`);
    }
  } finally {
    await handle.close();
  }
}

// Writes `data` once, untimed, and deletes the file. On this VM the first time the kernel copies
// from fresh memory (and fills fresh page cache) runs 2-4x slower than every later time, which
// would otherwise penalise whichever configuration runs first.
async function prefault(path: string, data: Uint8Array): Promise<void> {
  const handle = await open(path, 'w');
  try {
    for (let at = 0; at < data.byteLength; at += PREFAULT_CHUNK_BYTES) {
      await handle.write(data, at, Math.min(PREFAULT_CHUNK_BYTES, data.byteLength - at), at);
    }
    await handle.datasync();
  } finally {
    await handle.close();
  }
  await rm(path);
}

/** Medians of one configuration over the repetitions. */
interface ConfigResult {
  key: string;
  label: string;
  mbPerSecond: number;
  mbPerSecondRuns: number[];
  flushMs: number;
  hostWriteCalls: number;
  callsPerRequest: number;
  hostWriteBytes: number;
}

async function main(): Promise<void> {
  const blockCount = TOTAL_BYTES / REQUEST_BYTES;
  console.log(`write bench: ${TOTAL_BYTES / MIB} MiB as ${blockCount} sequential ${REQUEST_BYTES} B writes from guest byte ${START_OFFSET_BYTES} ` +
    `into a fresh sparse ${IMAGE_BYTES / MIB} MiB raw file (Node file backend), ${REPETITION_COUNT} repetition(s) interleaved, medians; ` +
    `MB/s = 1e6 guest bytes/s including the final flush (fdatasync); the data is written once untimed, then one untimed ${WARMUP_BYTES / MIB} MiB warm-up run per config.` +
    `${QUICK ? ' QUICK MODE.' : ''}`);
  console.log(machineLine());

  const data = new Uint8Array(TOTAL_BYTES);
  fillPattern(data, 0);
  const requests: WriteRequest[] = [];
  for (let block = 0; block < blockCount; block++) {
    requests.push({ offset: START_OFFSET_BYTES + block * REQUEST_BYTES, data: data.subarray(block * REQUEST_BYTES, (block + 1) * REQUEST_BYTES) });
  }
  const batches: WriteRequest[][] = [];
  for (let first = 0; first < requests.length; first += REQUESTS_PER_BATCH) batches.push(requests.slice(first, first + REQUESTS_PER_BATCH));

  const runs = new Map<string, RunStats[]>(CONFIGS.map((config) => [config.key, []]));
  await withTempDir('qcow2-wasm-write-bench-', async (dir) => {
    await prefault(join(dir, 'prefault.raw'), data);
    const warmupBlocks = WARMUP_BYTES / REQUEST_BYTES;
    for (const config of CONFIGS) {
      const path = join(dir, `${config.key}-warmup.raw`);
      await config.run(path, requests.slice(0, warmupBlocks), batches.slice(0, warmupBlocks / REQUESTS_PER_BATCH));
      await verify(path, warmupBlocks, 0x5eed);
      await rm(path);
    }
    for (let repetition = 0; repetition < REPETITION_COUNT; repetition++) {
      for (const config of CONFIGS) {
        const path = join(dir, `${config.key}-${repetition}.raw`);
        const stats = await config.run(path, requests, batches);
        if (stats.guestWriteRequests !== blockCount) throw new Error(`(${config.key}) counted ${stats.guestWriteRequests} guest writes, expected ${blockCount}`);
        await verify(path, blockCount, 0x5eed + repetition * 16 + config.key.charCodeAt(0));
        await rm(path);
        runs.get(config.key)!.push(stats);
        console.log(`  rep ${repetition + 1} (${config.key}): ${(TOTAL_BYTES / 1e6 / (stats.elapsedMs / 1000)).toFixed(0)} MB/s, ` +
          `${stats.hostWriteCalls} host write calls, read back OK`);
      }
    }
  });

  const results: ConfigResult[] = CONFIGS.map((config) => {
    const configRuns = runs.get(config.key)!;
    const mbPerSecondRuns = configRuns.map((run) => TOTAL_BYTES / 1e6 / (run.elapsedMs / 1000));
    const hostWriteCalls = median(configRuns.map((run) => run.hostWriteCalls));
    return {
      key: config.key, label: config.label, mbPerSecond: median(mbPerSecondRuns), mbPerSecondRuns,
      flushMs: median(configRuns.map((run) => run.flushMs)), hostWriteCalls,
      callsPerRequest: hostWriteCalls / blockCount, hostWriteBytes: median(configRuns.map((run) => run.hostWriteBytes)),
    };
  });

  console.log('');
  printTable(['config', 'MB/s (median)', 'MB/s runs', 'of which flush ms', 'host write calls', 'calls/request', 'bytes written'],
    results.map((r) => [`(${r.key}) ${r.label}`, r.mbPerSecond.toFixed(0), r.mbPerSecondRuns.map((v) => v.toFixed(0)).join(' / '),
      r.flushMs.toFixed(0), String(r.hostWriteCalls), r.callsPerRequest.toFixed(4), String(r.hostWriteBytes)]));
  const byKey = (key: string) => results.find((r) => r.key === key)!;
  // Ratios pair the runs of one repetition (they ran back to back), then take the median.
  const speedupOver = (key: string, baseKey: string) =>
    median(byKey(key).mbPerSecondRuns.map((mbPerSecond, repetition) => mbPerSecond / byKey(baseKey).mbPerSecondRuns[repetition]));
  const speedup = speedupOver('a', 'c');
  const callRatio = byKey('a').hostWriteCalls / byKey('c').hostWriteCalls;
  const goalMet = speedup >= 2.5 && callRatio <= 1 / 16;
  console.log('');
  console.log(`(a)/(c): ${speedup.toFixed(2)}x the MB/s, ${callRatio.toFixed(4)} of the host write calls (1/${(1 / callRatio).toFixed(1)}); ` +
    `(b)/(c): ${speedupOver('b', 'c').toFixed(2)}x; (a)/(d): ${speedupOver('a', 'd').toFixed(2)}x; (c)/(d): ${speedupOver('c', 'd').toFixed(2)}x ` +
    '(MB/s ratios: median of the per-repetition ratios)');
  console.log(`goal ((a) >= 2.5x the MB/s of (c) and <= 1/16 of its host write calls): ${goalMet ? 'met' : 'NOT met'}`);
  printResult({
    bench: 'write', machine: machineInfo(), quick: QUICK, totalBytes: TOTAL_BYTES, repetitions: REPETITION_COUNT, goalMet,
    speedupAOverC: Number(speedup.toFixed(3)), hostCallRatioAOverC: Number(callRatio.toFixed(5)),
    configs: results.map((r) => ({
      key: r.key, label: r.label, mbPerSecond: Math.round(r.mbPerSecond), mbPerSecondRuns: r.mbPerSecondRuns.map(Math.round),
      flushMs: Math.round(r.flushMs), hostWriteCalls: r.hostWriteCalls, callsPerRequest: Number(r.callsPerRequest.toFixed(5)), hostWriteBytes: r.hostWriteBytes,
    })),
  });
}

await main();
