// SPDX-License-Identifier: MIT
// Depth-1 latency: one 4 KiB request at a time, awaited before the next, at random aligned
// offsets of a fully written image (every write lands in place), as an emulator's IDE controller
// issues them. Qcow2Image and RawImage opened with openImageFile defaults, against bare
// fs.readSync / fs.writeSync on the same raw file. Used by the main job and bench:depth1.

import { closeSync, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { BlockImage } from '../bindings/dispatch/image.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import { openImageFile } from '../bindings/node.js';
import { makeRandom, median } from './harness.js';

/** Size of the image the requests land in; small enough to stay in the page cache. */
export const DEPTH1_IMAGE_BYTES = 64 * 1024 * 1024;
const BLOCK_BYTES = 4096;

/**
 * Microseconds per request of one depth-1 run, by what was measured: wall-clock time, and the
 * process's CPU time (user + system, every thread), which a machine shared with other work
 * disturbs far less.
 */
export interface Depth1Row { read: number; write: number; readCpu: number; writeCpu: number }

/** Wall-clock and CPU microseconds per request of `run` over `count` requests. */
async function timed(count: number, run: () => Promise<void> | void): Promise<{ wall: number; cpu: number }> {
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  await run();
  const wall = ((performance.now() - started) * 1000) / count;
  const cpu = process.cpuUsage(cpuBefore);
  return { wall, cpu: (cpu.user + cpu.system) / count };
}

/** Medians of `rounds` interleaved rounds: qcow2 and raw through the library, and bare syscalls. */
export interface Depth1Result { requests: number; rounds: number; qcow2: Depth1Row; raw: Depth1Row; bare: Depth1Row }

/** Writes a raw file and a qcow2 image (made by this engine) of DEPTH1_IMAGE_BYTES, every cluster written. */
async function makeImages(dir: string): Promise<{ rawPath: string; qcow2Path: string }> {
  const rawPath = join(dir, 'depth1.raw');
  const qcow2Path = join(dir, 'depth1.qcow2');
  const content = new Uint8Array(DEPTH1_IMAGE_BYTES).fill(0x5a);
  writeFileSync(rawPath, content);
  const backend = await openNodeBackend(qcow2Path, { writable: true, create: true });
  const image = await Qcow2Image.create(backend, { virtualSize: DEPTH1_IMAGE_BYTES });
  const chunk = 1024 * 1024;
  for (let at = 0; at < DEPTH1_IMAGE_BYTES; at += chunk) await image.write(at, content.subarray(at, at + chunk));
  await image.close();
  return { rawPath, qcow2Path };
}

/** The same sequence of block offsets for every contender. */
function offsets(count: number): number[] {
  const random = makeRandom(4711);
  const blocks = DEPTH1_IMAGE_BYTES / BLOCK_BYTES;
  return Array.from({ length: count }, () => (random() % blocks) * BLOCK_BYTES);
}

/** µs per request of awaited reads then awaited writes through `image`. */
async function libraryRun(image: BlockImage, at: readonly number[]): Promise<Depth1Row> {
  const buffer = new Uint8Array(BLOCK_BYTES).fill(0xa5);
  const read = await timed(at.length, async () => { for (const offset of at) await image.readInto(offset, buffer); });
  const write = await timed(at.length, async () => { for (const offset of at) await image.write(offset, buffer); });
  return { read: read.wall, write: write.wall, readCpu: read.cpu, writeCpu: write.cpu };
}

/** µs per request of synchronous positional syscalls on the raw file. */
async function bareRun(path: string, at: readonly number[]): Promise<Depth1Row> {
  const fd = openSync(path, 'r+');
  try {
    const buffer = new Uint8Array(BLOCK_BYTES).fill(0xa5);
    const read = await timed(at.length, () => { for (const offset of at) readSync(fd, buffer, 0, BLOCK_BYTES, offset); });
    const write = await timed(at.length, () => { for (const offset of at) writeSync(fd, buffer, 0, BLOCK_BYTES, offset); });
    return { read: read.wall, write: write.wall, readCpu: read.cpu, writeCpu: write.cpu };
  } finally {
    closeSync(fd);
  }
}

/**
 * Runs the depth-1 comparison in `dir` (which it fills with two 64 MiB files): `requests` reads
 * then `requests` writes per contender per round, `rounds` rounds interleaved after an uncounted
 * warm-up round, medians returned.
 */
export async function runDepth1(dir: string, requests = 5000, rounds = 3): Promise<Depth1Result> {
  const { rawPath, qcow2Path } = await makeImages(dir);
  const at = offsets(requests);
  const samples = { qcow2: [] as Depth1Row[], raw: [] as Depth1Row[], bare: [] as Depth1Row[] };
  // Round 0 warms the JIT up and is not counted.
  for (let round = 0; round <= rounds; round++) {
    const qcow2 = await openImageFile(qcow2Path);
    samples.qcow2.push(await libraryRun(qcow2, at));
    await qcow2.close();
    const raw = await openImageFile(rawPath);
    samples.raw.push(await libraryRun(raw, at));
    await raw.close();
    samples.bare.push(await bareRun(rawPath, at));
  }
  const medianRow = (rows: Depth1Row[]): Depth1Row => ({
    read: median(rows.map((r) => r.read)), write: median(rows.map((r) => r.write)),
    readCpu: median(rows.map((r) => r.readCpu)), writeCpu: median(rows.map((r) => r.writeCpu)),
  });
  const counted = (rows: Depth1Row[]) => medianRow(rows.slice(1));
  return { requests, rounds, qcow2: counted(samples.qcow2), raw: counted(samples.raw), bare: counted(samples.bare) };
}
