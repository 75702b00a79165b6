// SPDX-License-Identifier: MIT
// Reading compressed images whole: a disk of compressible data, compressed by `qemu-img convert
// -c` with zlib and with zstd (64 KiB clusters), read whole and written out as a raw file, by
// this engine (openImageFile defaults, 1 MiB reads, 4 in flight) and by `qemu-img convert -O raw`,
// rounds interleaved after an uncounted warm-up of ours, each run starting with no old output file
// and no dirty pages left by the one before; both outputs compared with the source.
// CPU time is counted too (every thread of this process for ours; the finished child's, from
// /proc, for qemu-img). Used by the main job and bench:compressed. Needs qemu-img.

import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { openImageFile } from '../bindings/node.js';
import { fillPattern, median } from './harness.js';

const MIB = 1024 * 1024;
const READ_BYTES = MIB;
const IN_FLIGHT = 4;

/** One compression type's rounds: wall seconds, and CPU seconds (qemu-img's empty where /proc does not tell). */
export interface CompressedReadsEntry { oursSeconds: number[]; qemuSeconds: number[]; oursCpuSeconds: number[]; qemuCpuSeconds: number[] }

/** Rounds by compression type. */
export interface CompressedReadsResult { diskBytes: number; rounds: number; results: Record<'zlib' | 'zstd', CompressedReadsEntry> }

/** CPU seconds of this process's finished, waited-for children (Linux /proc), or undefined elsewhere. */
function childrenCpuSeconds(): number | undefined {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // cutime and cstime (fields 16 and 17 of stat), in clock ticks of 1/100 s on Linux.
    return (Number(fields[13]) + Number(fields[14])) / 100;
  } catch {
    return undefined;
  }
}

/** A disk that compresses about as well as an installed system: text-like runs, patterned blocks and holes. */
function writeSource(path: string, diskBytes: number): void {
  const disk = new Uint8Array(diskBytes);
  const words = ['qcow2 ', 'cluster ', 'emulator ', 'guest ', 'sector ', 'kernel ', 'block ', 'write '];
  let state = 12345;
  for (let at = 0; at < diskBytes; at += 64 * 1024) {
    state = (state * 1103515245 + 12345) >>> 0;
    const kind = (state >>> 16) % 4;
    const block = disk.subarray(at, at + 64 * 1024);
    if (kind === 0) continue; // a hole
    if (kind === 1) fillPattern(block, at); // poorly compressible
    else {
      let filled = 0;
      while (filled < block.byteLength) {
        state = (state * 1103515245 + 12345) >>> 0;
        const word = words[(state >>> 16) % words.length];
        for (let i = 0; i < word.length && filled < block.byteLength; i++) block[filled++] = word.charCodeAt(i);
      }
    }
  }
  writeFileSync(path, disk);
}

/**
 * Untimed, before each tool's run: removes the output it is about to write and writes back every
 * dirty page on the machine, so neither tool pays for truncating an old output or for the
 * write-back of the previous run's output.
 */
function settle(outPath: string): void {
  rmSync(outPath, { force: true });
  execFileSync('sync');
}

/** Wall and CPU seconds to read `path` whole through this engine and write it to `outPath` as raw. */
async function engineRead(path: string, outPath: string): Promise<{ seconds: number; cpuSeconds: number }> {
  const started = performance.now();
  const cpuBefore = process.cpuUsage();
  const image = await openImageFile(path, { readOnly: true });
  const out = await open(outPath, 'w');
  let next = 0;
  const worker = async () => {
    const buffer = new Uint8Array(READ_BYTES);
    while (next < image.virtualSize) {
      const offset = next;
      next += READ_BYTES;
      await image.readInto(offset, buffer);
      await out.write(buffer, 0, buffer.byteLength, offset);
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  await out.close();
  await image.close();
  const cpu = process.cpuUsage(cpuBefore);
  return { seconds: (performance.now() - started) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

/** Wall and CPU seconds (CPU undefined where /proc does not tell) `qemu-img convert -O raw` takes for the same. */
function qemuRead(path: string, outPath: string): { seconds: number; cpuSeconds: number | undefined } {
  const started = performance.now();
  const cpuBefore = childrenCpuSeconds();
  execFileSync('qemu-img', ['convert', '-O', 'raw', path, outPath]);
  const cpuAfter = childrenCpuSeconds();
  return { seconds: (performance.now() - started) / 1000, cpuSeconds: cpuBefore === undefined || cpuAfter === undefined ? undefined : cpuAfter - cpuBefore };
}

/**
 * Runs the comparison in `dir` on a disk of `diskBytes` (the source, two images and the outputs
 * go there), `rounds` rounds per compression type; throws when an output differs from the source.
 */
export async function runCompressedReads(dir: string, diskBytes: number, rounds: number): Promise<CompressedReadsResult> {
  const source = join(dir, 'source.raw');
  writeSource(source, diskBytes);
  const results = {} as CompressedReadsResult['results'];
  for (const type of ['zlib', 'zstd'] as const) {
    const image = join(dir, `${type}.qcow2`);
    execFileSync('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', `compression_type=${type}`, source, image]);
    await engineRead(image, join(dir, 'warm.raw')); // JIT warm-up
    const entry: CompressedReadsEntry = { oursSeconds: [], qemuSeconds: [], oursCpuSeconds: [], qemuCpuSeconds: [] };
    for (let round = 0; round < rounds; round++) {
      settle(join(dir, 'ours.raw'));
      const ours = await engineRead(image, join(dir, 'ours.raw'));
      entry.oursSeconds.push(ours.seconds);
      entry.oursCpuSeconds.push(ours.cpuSeconds);
      settle(join(dir, 'qemu.raw'));
      const qemu = qemuRead(image, join(dir, 'qemu.raw'));
      entry.qemuSeconds.push(qemu.seconds);
      if (qemu.cpuSeconds !== undefined) entry.qemuCpuSeconds.push(qemu.cpuSeconds);
    }
    execFileSync('cmp', [join(dir, 'ours.raw'), source]);
    execFileSync('cmp', [join(dir, 'qemu.raw'), source]);
    results[type] = entry;
  }
  return { diskBytes, rounds, results };
}

/** Our throughput over qemu-img convert's, from the medians of one type's rounds. */
export function compressedRatio(entry: CompressedReadsEntry): number {
  return median(entry.qemuSeconds) / median(entry.oursSeconds);
}
