// SPDX-License-Identifier: MIT
// Depth-1 latency: one 4 KiB request at a time, awaited before the next, at random aligned
// offsets of a fully written image (every write lands in place), as an emulator's IDE controller
// issues them. Qcow2Image and RawImage opened with openImageFile defaults, against bare
// fs.readSync / fs.writeSync on a raw file of their own, the three taking turns every 250
// requests (so a burst of other load on the machine hits them alike), each going first in turn.
// A request costs about 2 µs, so a slice lasts half a millisecond: on a shared machine one burst
// of other work moves a contender's mean by a fifth, while the median over its slices stays put.
// The figures are those medians; the means are kept beside them. Used by the main job and
// bench:depth1.

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
 * Microseconds per request of one contender: `read`/`write` the median over its slices of
 * wall-clock time per request; `readMean`/`writeMean` wall-clock time over all its slices per
 * request; `readCpu`/`writeCpu` the process's CPU time (user + system, every thread) per request.
 */
export interface Depth1Row { read: number; write: number; readMean: number; writeMean: number; readCpu: number; writeCpu: number }

/** Wall-clock and CPU microseconds per request of `run` over `count` requests. */
async function timed(count: number, run: () => Promise<void> | void): Promise<{ wall: number; cpu: number }> {
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  await run();
  const wall = ((performance.now() - started) * 1000) / count;
  const cpu = process.cpuUsage(cpuBefore);
  return { wall, cpu: (cpu.user + cpu.system) / count };
}

/** Every counted round's slices taken together: qcow2 and raw through the library, and bare syscalls. */
export interface Depth1Result { requests: number; rounds: number; qcow2: Depth1Row; raw: Depth1Row; bare: Depth1Row }

/**
 * Writes two raw files (RawImage's and the bare syscalls': each contender reads and writes a file
 * of its own, so none finds its data in the CPU cache because another just touched it) and a
 * qcow2 image (made by this engine) of DEPTH1_IMAGE_BYTES, every cluster written. Each is filled
 * by one write of its whole content, so the page cache holds all three alike, in the largest
 * folios the kernel makes: filled in 1 MiB pieces at the qcow2 file's 64 KiB-aligned host
 * offsets, its data sat in folios of 64-512 KiB beside the raw file's 2 MiB ones, and every
 * 4 KiB pread of it cost about a tenth more kernel time than the raw file's (a property of how
 * the files were made, not of either engine).
 */
async function makeImages(dir: string): Promise<{ rawPath: string; barePath: string; qcow2Path: string }> {
  const rawPath = join(dir, 'depth1.raw');
  const barePath = join(dir, 'depth1-bare.raw');
  const qcow2Path = join(dir, 'depth1.qcow2');
  const content = new Uint8Array(DEPTH1_IMAGE_BYTES).fill(0x5a);
  writeFileSync(rawPath, content);
  writeFileSync(barePath, content);
  const backend = await openNodeBackend(qcow2Path, { writable: true, create: true });
  const image = await Qcow2Image.create(backend, { virtualSize: DEPTH1_IMAGE_BYTES });
  await image.write(0, content);
  await image.close();
  return { rawPath, barePath, qcow2Path };
}

/** The same sequence of block offsets for every contender. */
function offsets(count: number): number[] {
  const random = makeRandom(4711);
  const blocks = DEPTH1_IMAGE_BYTES / BLOCK_BYTES;
  return Array.from({ length: count }, () => (random() % blocks) * BLOCK_BYTES);
}

/** Requests per slice: the contenders take turns slice by slice, so a burst of other load hits them alike. */
const SLICE_REQUESTS = 250;

/** One contender's timed slices: `read`/`write` run requests [from, to) of the offsets. */
interface Contender { read: (from: number, to: number) => Promise<void> | void; write: (from: number, to: number) => Promise<void> | void }

/** One contender's timings in one phase: µs per request of each slice, and time and CPU time summed, in µs. */
interface PhaseSamples { slices: number[]; wall: number; cpu: number }

/** One contender's samples of one or more rounds. */
interface ContenderSamples { read: PhaseSamples; write: PhaseSamples }

const emptySamples = (): ContenderSamples => ({ read: { slices: [], wall: 0, cpu: 0 }, write: { slices: [], wall: 0, cpu: 0 } });

/**
 * Adds to `samples` (one per contender) `count` reads, then `count` writes, of each contender,
 * taking turns slice by slice; the contender going first moves on by one every slice.
 */
async function interleavedRun(contenders: readonly Contender[], count: number, samples: readonly ContenderSamples[]): Promise<void> {
  for (const phase of ['read', 'write'] as const) {
    for (let from = 0, slice = 0; from < count; from += SLICE_REQUESTS, slice++) {
      const to = Math.min(count, from + SLICE_REQUESTS);
      for (let turn = 0; turn < contenders.length; turn++) {
        const i = (slice + turn) % contenders.length;
        const timing = await timed(to - from, () => contenders[i][phase](from, to));
        const into = samples[i][phase];
        into.slices.push(timing.wall);
        into.wall += timing.wall * (to - from);
        into.cpu += timing.cpu * (to - from);
      }
    }
  }
}

/** A contender's figures from its samples over `requests` requests per phase. */
function depth1Row(samples: ContenderSamples, requests: number): Depth1Row {
  return {
    read: median(samples.read.slices), write: median(samples.write.slices),
    readMean: samples.read.wall / requests, writeMean: samples.write.wall / requests,
    readCpu: samples.read.cpu / requests, writeCpu: samples.write.cpu / requests,
  };
}

/** A contender of awaited reads and writes through `image`. */
function libraryContender(image: BlockImage, at: readonly number[]): Contender {
  const buffer = new Uint8Array(BLOCK_BYTES).fill(0xa5);
  return {
    read: async (from, to) => { for (let i = from; i < to; i++) await image.readInto(at[i], buffer); },
    write: async (from, to) => { for (let i = from; i < to; i++) await image.write(at[i], buffer); },
  };
}

/** A contender of synchronous positional syscalls on the file open as `fd`. */
function bareContender(fd: number, at: readonly number[]): Contender {
  const buffer = new Uint8Array(BLOCK_BYTES).fill(0xa5);
  return {
    read: (from, to) => { for (let i = from; i < to; i++) readSync(fd, buffer, 0, BLOCK_BYTES, at[i]); },
    write: (from, to) => { for (let i = from; i < to; i++) writeSync(fd, buffer, 0, BLOCK_BYTES, at[i]); },
  };
}

/** A full garbage collection when the process exposes one (`node --expose-gc`), else nothing. */
const collectGarbage = (globalThis as { gc?: () => void }).gc ?? (() => {});

/**
 * Runs the depth-1 comparison in `dir` (which it fills with three 64 MiB files): per round, the
 * images opened afresh and the heap collected (garbage left by earlier benchmarks would
 * otherwise be collected inside some contender's slices), `requests` reads then `requests`
 * writes per contender, the contenders taking turns every SLICE_REQUESTS requests; `rounds`
 * rounds after an uncounted warm-up round, their slices taken together.
 */
export async function runDepth1(dir: string, requests = 5000, rounds = 3): Promise<Depth1Result> {
  const { rawPath, barePath, qcow2Path } = await makeImages(dir);
  const at = offsets(requests);
  const counted = [emptySamples(), emptySamples(), emptySamples()];
  // Round 0 warms the JIT up and is not counted.
  for (let round = 0; round <= rounds; round++) {
    const qcow2 = await openImageFile(qcow2Path);
    const raw = await openImageFile(rawPath);
    const fd = openSync(barePath, 'r+');
    collectGarbage();
    try {
      const contenders = [libraryContender(qcow2, at), libraryContender(raw, at), bareContender(fd, at)];
      await interleavedRun(contenders, requests, round === 0 ? [emptySamples(), emptySamples(), emptySamples()] : counted);
    } finally {
      closeSync(fd);
      await qcow2.close();
      await raw.close();
    }
  }
  const [qcow2, raw, bare] = counted.map((samples) => depth1Row(samples, requests * rounds));
  return { requests, rounds, qcow2, raw, bare };
}
