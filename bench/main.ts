// SPDX-License-Identifier: MIT
// The main job (`npm start`): replays a guest-like write stream into temporary raw images with
// each merge mode, checks every image against the same writes applied one by one with plain
// fs calls, and prints what merging saves: host write calls, bytes and MB/s. No arguments, no
// files to fetch.

import { mkdtempSync, rmSync, openSync, writeSync, closeSync, readSync } from 'node:fs';
import { tmpdir, cpus, platform, release } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { RawImage, openNodeBackend, type WriteRequest, type MergeMode } from '../bindings/node.js';

const KIB = 1024;
const MIB = 1024 * KIB;
const IMAGE_BYTES = 1024 * MIB;
const SEQUENTIAL_BYTES = 64 * MIB;
const REQUEST_BYTES = 4 * KIB;
const UNALIGNED_START = 512;
const RANDOM_REQUESTS = 4096;
const BATCH_REQUESTS = 32;

/** A deterministic xorshift32 source for the workload. */
function makeRandom(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13; state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5; state >>>= 0;
    return state;
  };
}

/** The guest-like stream: sequential 4 KiB writes from byte 512, then random 4 KiB writes. */
function makeWorkload(): WriteRequest[] {
  const random = makeRandom(0x5eed);
  const requests: WriteRequest[] = [];
  const fill = (data: Uint8Array) => {
    const words = new Uint32Array(data.buffer, data.byteOffset, data.byteLength / 4);
    for (let i = 0; i < words.length; i++) words[i] = random();
    return data;
  };
  for (let offset = UNALIGNED_START; offset < UNALIGNED_START + SEQUENTIAL_BYTES; offset += REQUEST_BYTES) {
    requests.push({ offset, data: fill(new Uint8Array(REQUEST_BYTES)) });
  }
  for (let i = 0; i < RANDOM_REQUESTS; i++) {
    const offset = (random() % ((IMAGE_BYTES - REQUEST_BYTES) / 512)) * 512;
    requests.push({ offset, data: fill(new Uint8Array(REQUEST_BYTES)) });
  }
  return requests;
}

/** Applies the requests one by one with fs.writeSync: the reference result. */
function writeReference(path: string, requests: readonly WriteRequest[]): void {
  const fd = openSync(path, 'w');
  try {
    for (const { offset, data } of requests) writeSync(fd, data as Uint8Array, 0, (data as Uint8Array).byteLength, offset);
  } finally {
    closeSync(fd);
  }
}

interface RunResult { mode: MergeMode; seconds: number; hostWriteCalls: number; hostWriteBytes: number; guestWriteRequests: number }

async function runMode(path: string, mode: MergeMode, requests: readonly WriteRequest[]): Promise<RunResult> {
  const backend = await openNodeBackend(path, { writable: true, create: true });
  await backend.truncate!(IMAGE_BYTES);
  const image = await RawImage.open(backend, { merge: mode });
  const started = performance.now();
  for (let first = 0; first < requests.length; first += BATCH_REQUESTS) {
    await Promise.all(image.multiwrite(requests.slice(first, first + BATCH_REQUESTS)));
  }
  await image.flush();
  const seconds = (performance.now() - started) / 1000;
  const stats = image.stats();
  await image.close();
  return { mode, seconds, hostWriteCalls: stats.hostWriteCalls, hostWriteBytes: stats.hostWriteBytes, guestWriteRequests: stats.guestWriteRequests };
}

/** Compares every byte the workload touched in `path` with the reference file. */
function verify(path: string, referencePath: string, requests: readonly WriteRequest[]): void {
  const fd = openSync(path, 'r');
  const referenceFd = openSync(referencePath, 'r');
  const chunk = new Uint8Array(MIB);
  const referenceChunk = new Uint8Array(MIB);
  const compare = (position: number, length: number) => {
    for (let done = 0; done < length; done += MIB) {
      const take = Math.min(MIB, length - done);
      readSync(fd, chunk, 0, take, position + done);
      readSync(referenceFd, referenceChunk, 0, take, position + done);
      for (let i = 0; i < take; i++) {
        if (chunk[i] !== referenceChunk[i]) throw new Error(`${path}: byte ${position + done + i} differs from the reference`);
      }
    }
  };
  try {
    compare(0, UNALIGNED_START + SEQUENTIAL_BYTES);
    for (const { offset } of requests.slice(SEQUENTIAL_BYTES / REQUEST_BYTES)) compare(offset, REQUEST_BYTES);
  } finally {
    closeSync(fd);
    closeSync(referenceFd);
  }
}

async function main(): Promise<void> {
  console.log(`qcow2-wasm main job: ${SEQUENTIAL_BYTES / MIB} MiB of sequential ${REQUEST_BYTES / KIB} KiB writes from byte ${UNALIGNED_START}, ` +
    `then ${RANDOM_REQUESTS} random ${REQUEST_BYTES / KIB} KiB writes, ${BATCH_REQUESTS} requests per multiwrite batch, into a ${IMAGE_BYTES / MIB} MiB raw image.`);
  console.log(`machine: ${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, ${platform()} ${release()}, Node ${process.version}`);
  const dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-main-'));
  try {
    const requests = makeWorkload();
    const referencePath = join(dir, 'reference.raw');
    writeReference(referencePath, requests);
    const results: RunResult[] = [];
    for (const mode of ['full', 'adjacent', 'off'] as const) {
      const path = join(dir, `${mode}.raw`);
      results.push(await runMode(path, mode, requests));
      verify(path, referencePath, requests);
      rmSync(path);
    }
    const guestBytes = requests.reduce((sum, r) => sum + (r.data as Uint8Array).byteLength, 0);
    const off = results.find((r) => r.mode === 'off')!;
    console.log('');
    console.log('merge mode | guest requests | host write calls | calls/request | host MiB written | MB/s  | vs off');
    console.log('---------- | -------------- | ---------------- | ------------- | ---------------- | ----- | ------');
    for (const r of results) {
      const mbPerSecond = guestBytes / r.seconds / 1e6;
      const offMbPerSecond = guestBytes / off.seconds / 1e6;
      console.log([
        r.mode.padEnd(10), String(r.guestWriteRequests).padStart(14), String(r.hostWriteCalls).padStart(16),
        (r.hostWriteCalls / r.guestWriteRequests).toFixed(4).padStart(13), (r.hostWriteBytes / MIB).toFixed(1).padStart(16),
        mbPerSecond.toFixed(0).padStart(5), `${(mbPerSecond / offMbPerSecond).toFixed(2)}x`.padStart(6),
      ].join(' | '));
    }
    console.log('');
    console.log('Every image was read back and matches the same writes applied one by one with fs.writeSync.');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
