// SPDX-License-Identifier: MIT
// Reads with the defaults a user gets (openImageFile), against `qemu-img bench` in read mode on
// the same image and RawImage on the same bytes: 4 KiB reads at depth 1 (each awaited before the
// next) and at depth 32, and sequential 1 MiB reads at depth 1 (16 passes over the image). qemu-img bench has no random
// mode: its offsets advance by a step modulo the image size, so every contender uses the same
// scattered sequence (a step of 7919 blocks over a 64 MiB image visits every block in a
// scattered order). The image is fully written, in the page cache. Also the memory a 1 TiB
// image holds with the default cache. Used by the main job and bench:reads.

import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { BlockImage } from '../bindings/dispatch/image.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { openImageFile } from '../bindings/node.js';
import { fillPattern, median } from './harness.js';

/** Size of the image the reads land in; small enough to stay in the page cache. */
export const READS_IMAGE_BYTES = 64 * 1024 * 1024;
const BLOCK_BYTES = 4096;
const SEQUENTIAL_BYTES = 1024 * 1024;
/** Passes over the image in 1 MiB reads (qemu-img bench prints milliseconds: one pass is too short to time). */
const SEQUENTIAL_PASSES = 16;
/** The step between consecutive 4 KiB reads, in blocks: a prime, so every block comes once per pass. */
const STEP_BLOCKS = 7919;

/** Microseconds per request, by contender, for one pattern (qemu undefined without qemu-img). */
export interface ReadsRow { qcow2: number; raw: number; qemu: number | undefined }

/** Medians of `rounds` interleaved rounds after an uncounted warm-up. */
export interface ReadsResult { requests: number; rounds: number; depth1: ReadsRow; depth32: ReadsRow; sequential: ReadsRow }

/** The scattered 4 KiB offsets qemu-img bench -S visits: block k * STEP_BLOCKS modulo the image. */
function scatteredOffsets(count: number): number[] {
  const blocks = READS_IMAGE_BYTES / BLOCK_BYTES;
  return Array.from({ length: count }, (_, k) => ((k * STEP_BLOCKS) % blocks) * BLOCK_BYTES);
}

/**
 * A raw file of the benchmark pattern and a qcow2 copy made by qemu-img (64 KiB clusters, all
 * allocated), each then rewritten in one write: how a file was written (one large write or many
 * small ones) changes how fast the page cache serves it (a file qemu-img wrote read 1 MiB at a
 * time ~1.3-1.8x slower than a copy of it made by cp), so both files are written alike.
 */
function makeImages(dir: string): { rawPath: string; qcow2Path: string } {
  const rawPath = join(dir, 'reads.raw');
  const qcow2Path = join(dir, 'reads.qcow2');
  const content = new Uint8Array(READS_IMAGE_BYTES);
  fillPattern(content, 0, 0x7ead);
  writeFileSync(rawPath, content);
  execFileSync('qemu-img', ['convert', '-O', 'qcow2', '-o', 'cluster_size=65536', rawPath, qcow2Path]);
  writeFileSync(qcow2Path, readFileSync(qcow2Path));
  return { rawPath, qcow2Path };
}

/** µs per request of reading `offsets` (each `bytes` long) through `image`, `depth` in flight. */
async function libraryReads(image: BlockImage, offsets: readonly number[], bytes: number, depth: number): Promise<number> {
  let next = 0;
  const worker = async () => {
    const buffer = new Uint8Array(bytes);
    while (next < offsets.length) await image.readInto(offsets[next++], buffer);
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: depth }, worker));
  return ((performance.now() - started) * 1000) / offsets.length;
}

/** µs per request of `qemu-img bench` reading `count` requests of `bytes` at `depth`, `stepBytes` apart. */
function qemuReads(path: string, count: number, bytes: number, depth: number, stepBytes: number): number {
  const output = execFileSync('qemu-img', ['bench', '-t', 'writeback', '-i', 'threads', '-f', 'qcow2', '-c', String(count),
    '-d', String(depth), '-s', String(bytes), '-S', String(stepBytes), path], { encoding: 'utf8' });
  const seconds = Number(/Run completed in ([\d.]+) seconds/.exec(output)?.[1]);
  return (seconds * 1e6) / count;
}

/**
 * Runs the read comparison in `dir` (which it fills with two 64 MiB files; needs qemu-img to
 * make them): `requests` 4 KiB reads per contender and depth, and SEQUENTIAL_PASSES
 * passes over the image in 1 MiB reads, per round; `withQemu` adds qemu-img bench. Images are opened anew each round.
 */
export async function runReads(dir: string, requests = 20000, rounds = 3, withQemu = true): Promise<ReadsResult> {
  const { rawPath, qcow2Path } = makeImages(dir);
  const scattered = scatteredOffsets(requests);
  const sequential = Array.from({ length: SEQUENTIAL_PASSES * READS_IMAGE_BYTES / SEQUENTIAL_BYTES }, (_, k) => (k * SEQUENTIAL_BYTES) % READS_IMAGE_BYTES);
  type Samples = { qcow2: number[]; raw: number[]; qemu: number[] };
  const samples = { depth1: { qcow2: [], raw: [], qemu: [] } as Samples, depth32: { qcow2: [], raw: [], qemu: [] } as Samples, sequential: { qcow2: [], raw: [], qemu: [] } as Samples };
  for (let round = 0; round <= rounds; round++) {
    const counted = round > 0; // round 0 warms the JIT up
    for (const [name, path] of [['qcow2', qcow2Path], ['raw', rawPath]] as const) {
      const image = await openImageFile(path, { readOnly: true });
      const depth1 = await libraryReads(image, scattered, BLOCK_BYTES, 1);
      const depth32 = await libraryReads(image, scattered, BLOCK_BYTES, 32);
      const whole = await libraryReads(image, sequential, SEQUENTIAL_BYTES, 1);
      await image.close();
      if (!counted) continue;
      samples.depth1[name].push(depth1);
      samples.depth32[name].push(depth32);
      samples.sequential[name].push(whole);
    }
    if (withQemu && counted) {
      samples.depth1.qemu.push(qemuReads(qcow2Path, requests, BLOCK_BYTES, 1, STEP_BLOCKS * BLOCK_BYTES));
      samples.depth32.qemu.push(qemuReads(qcow2Path, requests, BLOCK_BYTES, 32, STEP_BLOCKS * BLOCK_BYTES));
      samples.sequential.qemu.push(qemuReads(qcow2Path, sequential.length, SEQUENTIAL_BYTES, 1, SEQUENTIAL_BYTES));
    }
  }
  const row = (s: Samples): ReadsRow => ({ qcow2: median(s.qcow2), raw: median(s.raw), qemu: s.qemu.length > 0 ? median(s.qemu) : undefined });
  return { requests, rounds, depth1: row(samples.depth1), depth32: row(samples.depth32), sequential: row(samples.sequential) };
}

/** Memory of a 1 TiB image opened with the defaults, after I/O spread over its first HUGE_SPAN_BYTES. */
export interface HugeImageMemory { virtualBytes: number; spanBytes: number; requests: number; coreMemoryBytes: number; rssGrowthBytes: number }

const HUGE_SPAN_BYTES = 256 * 1024 * 1024;

/**
 * Creates a 1 TiB qcow2 image in `dir` (qemu-img), writes its first HUGE_SPAN_BYTES with
 * qemu-img bench, then opens it with openImageFile defaults and does `requests` scattered 4 KiB
 * reads and as many in-place writes there, depth 32: the image's wasm memory and the process's
 * resident set growth over the open and the I/O (after a garbage collection when --expose-gc).
 */
export async function measureHugeImage(dir: string, requests = 20000): Promise<HugeImageMemory> {
  const path = join(dir, 'huge.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '1T']);
  execFileSync('qemu-img', ['bench', '-w', '-f', 'qcow2', '-c', String(HUGE_SPAN_BYTES / SEQUENTIAL_BYTES), '-d', '8', '-s', String(SEQUENTIAL_BYTES),
    '--pattern=0x33', '-t', 'writeback', path]);
  const blocks = HUGE_SPAN_BYTES / BLOCK_BYTES;
  const offsets = Array.from({ length: requests }, (_, k) => ((k * STEP_BLOCKS) % blocks) * BLOCK_BYTES);
  (globalThis as { gc?: () => void }).gc?.();
  const rssBefore = process.memoryUsage().rss;
  const image = await openImageFile(path);
  await libraryReads(image, offsets, BLOCK_BYTES, 32);
  let next = 0;
  const data = new Uint8Array(BLOCK_BYTES).fill(0x44);
  await Promise.all(Array.from({ length: 32 }, async () => { while (next < offsets.length) await image.write(offsets[next++], data); }));
  (globalThis as { gc?: () => void }).gc?.();
  const rssGrowthBytes = process.memoryUsage().rss - rssBefore;
  const coreMemoryBytes = (image as Qcow2Image).coreMemoryBytes();
  await image.close();
  return { virtualBytes: 2 ** 40, spanBytes: HUGE_SPAN_BYTES, requests, coreMemoryBytes, rssGrowthBytes };
}
