// SPDX-License-Identifier: MIT
// Depth-1 latency: one 4 KiB request at a time, awaited before the next, at random aligned
// offsets of a fully written image (every write lands in place), as an emulator's IDE controller
// issues them. Qcow2Image and RawImage opened with openImageFile defaults, against bare
// fs.readSync / fs.writeSync on a raw file of their own, the three taking turns every 250
// requests (so a burst of other load on the machine hits them alike), each going first in turn.
// Used by the main job and bench:depth1.

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

/** Time and CPU time summed over slices, in µs. */
interface Totals { wall: number; cpu: number }

/**
 * µs per request of `contenders`' reads, then of their writes, taking turns slice by slice; the
 * contender going first moves on by one every slice.
 */
async function interleavedRun(contenders: readonly Contender[], count: number): Promise<Depth1Row[]> {
  const reads: Totals[] = contenders.map(() => ({ wall: 0, cpu: 0 }));
  const writes: Totals[] = contenders.map(() => ({ wall: 0, cpu: 0 }));
  for (const [phase, totals] of [['read', reads], ['write', writes]] as const) {
    for (let from = 0, slice = 0; from < count; from += SLICE_REQUESTS, slice++) {
      const to = Math.min(count, from + SLICE_REQUESTS);
      for (let turn = 0; turn < contenders.length; turn++) {
        const i = (slice + turn) % contenders.length;
        const timing = await timed(to - from, () => contenders[i][phase](from, to));
        totals[i].wall += timing.wall * (to - from);
        totals[i].cpu += timing.cpu * (to - from);
      }
    }
  }
  return contenders.map((_, i) => ({ read: reads[i].wall / count, write: writes[i].wall / count, readCpu: reads[i].cpu / count, writeCpu: writes[i].cpu / count }));
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
 * rounds after an uncounted warm-up round, medians returned.
 */
export async function runDepth1(dir: string, requests = 5000, rounds = 3): Promise<Depth1Result> {
  const { rawPath, barePath, qcow2Path } = await makeImages(dir);
  const at = offsets(requests);
  const samples = { qcow2: [] as Depth1Row[], raw: [] as Depth1Row[], bare: [] as Depth1Row[] };
  // Round 0 warms the JIT up and is not counted.
  for (let round = 0; round <= rounds; round++) {
    const qcow2 = await openImageFile(qcow2Path);
    const raw = await openImageFile(rawPath);
    const fd = openSync(barePath, 'r+');
    collectGarbage();
    try {
      const [qcow2Row, rawRow, bareRow] = await interleavedRun([libraryContender(qcow2, at), libraryContender(raw, at), bareContender(fd, at)], requests);
      samples.qcow2.push(qcow2Row);
      samples.raw.push(rawRow);
      samples.bare.push(bareRow);
    } finally {
      closeSync(fd);
      await qcow2.close();
      await raw.close();
    }
  }
  const medianRow = (rows: Depth1Row[]): Depth1Row => ({
    read: median(rows.map((r) => r.read)), write: median(rows.map((r) => r.write)),
    readCpu: median(rows.map((r) => r.readCpu)), writeCpu: median(rows.map((r) => r.writeCpu)),
  });
  const counted = (rows: Depth1Row[]) => medianRow(rows.slice(1));
  return { requests, rounds, qcow2: counted(samples.qcow2), raw: counted(samples.raw), bare: counted(samples.bare) };
}
