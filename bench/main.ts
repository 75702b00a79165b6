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
const ROUNDS = 3;
const MODES: readonly MergeMode[] = ['full', 'adjacent', 'off'];

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

/** A named list of guest writes. */
interface Workload { name: string; requests: WriteRequest[] }

/** The guest-like streams: sequential 4 KiB writes from byte 512, and random 4 KiB writes. */
function makeWorkloads(): Workload[] {
  const random = makeRandom(0x5eed);
  const fill = (data: Uint8Array) => {
    const words = new Uint32Array(data.buffer, data.byteOffset, data.byteLength / 4);
    for (let i = 0; i < words.length; i++) words[i] = random();
    return data;
  };
  const sequential: WriteRequest[] = [];
  for (let offset = UNALIGNED_START; offset < UNALIGNED_START + SEQUENTIAL_BYTES; offset += REQUEST_BYTES) {
    sequential.push({ offset, data: fill(new Uint8Array(REQUEST_BYTES)) });
  }
  const scattered: WriteRequest[] = [];
  for (let i = 0; i < RANDOM_REQUESTS; i++) {
    const offset = (random() % ((IMAGE_BYTES - REQUEST_BYTES) / 512)) * 512;
    scattered.push({ offset, data: fill(new Uint8Array(REQUEST_BYTES)) });
  }
  return [
    { name: `sequential ${REQUEST_BYTES / KIB} KiB from byte ${UNALIGNED_START}`, requests: sequential },
    { name: `random ${REQUEST_BYTES / KIB} KiB`, requests: scattered },
  ];
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
    for (const { offset, data } of requests) compare(offset, (data as Uint8Array).byteLength);
  } finally {
    closeSync(fd);
    closeSync(referenceFd);
  }
}

async function main(): Promise<void> {
  console.log(`qcow2-wasm main job: guest-like write streams, ${BATCH_REQUESTS} requests per multiwrite batch, ` +
    `into a fresh ${IMAGE_BYTES / MIB} MiB raw image file, with each merge mode.`);
  console.log(`machine: ${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, ${platform()} ${release()}, Node ${process.version}`);
  const dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-main-'));
  try {
    console.log('');
    console.log('workload                        | merge    | requests | host writes | writes/request | MB/s  | vs off');
    console.log('------------------------------- | -------- | -------- | ----------- | -------------- | ----- | ------');
    for (const workload of makeWorkloads()) {
      const referencePath = join(dir, 'reference.raw');
      writeReference(referencePath, workload.requests);
      // Rounds with the modes interleaved, so machine noise hits them alike; medians reported.
      const runsByMode = new Map<MergeMode, RunResult[]>();
      for (let round = 0; round < ROUNDS; round++) {
        for (const mode of MODES) {
          const path = join(dir, `${mode}.raw`);
          const run = await runMode(path, mode, workload.requests);
          verify(path, referencePath, workload.requests);
          rmSync(path);
          runsByMode.set(mode, [...(runsByMode.get(mode) ?? []), run]);
        }
      }
      const guestBytes = workload.requests.reduce((sum, r) => sum + (r.data as Uint8Array).byteLength, 0);
      const median = (mode: MergeMode) => {
        const runs = runsByMode.get(mode)!.sort((a, b) => a.seconds - b.seconds);
        return runs[runs.length >> 1];
      };
      const offSeconds = median('off').seconds;
      for (const mode of MODES) {
        const r = median(mode);
        console.log([
          workload.name.padEnd(31), mode.padEnd(8), String(r.guestWriteRequests).padStart(8), String(r.hostWriteCalls).padStart(11),
          (r.hostWriteCalls / r.guestWriteRequests).toFixed(4).padStart(14), (guestBytes / r.seconds / 1e6).toFixed(0).padStart(5),
          `${(offSeconds / r.seconds).toFixed(2)}x`.padStart(6),
        ].join(' | '));
      }
      rmSync(referencePath);
    }
    console.log('');
    console.log(`Medians of ${ROUNDS} interleaved rounds; MB/s counts guest bytes (1e6 B/s) including the final flush.`);
    console.log('Every image was read back and matches the same writes applied one by one with fs.writeSync.');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
