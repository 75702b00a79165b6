// SPDX-License-Identifier: MIT
// Reading compressed images whole: a disk of compressible data, compressed by `qemu-img convert
// -c` with zlib and with zstd (64 KiB clusters), read whole and written out as a raw file, by
// this engine (openImageFile defaults, 1 MiB reads, 4 in flight) and by `qemu-img convert -O raw`,
// rounds interleaved after an uncounted warm-up of ours; both outputs compared with the source.
// Used by the main job and bench:compressed. Needs qemu-img.

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { openImageFile } from '../bindings/node.js';
import { fillPattern, median } from './harness.js';

const MIB = 1024 * 1024;
const READ_BYTES = MIB;
const IN_FLIGHT = 4;

/** Seconds per round, by compression type. */
export interface CompressedReadsResult { diskBytes: number; rounds: number; results: Record<'zlib' | 'zstd', { oursSeconds: number[]; qemuSeconds: number[] }> }

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

/** Seconds to read `path` whole through this engine and write it to `outPath` as raw. */
async function engineRead(path: string, outPath: string): Promise<number> {
  const started = performance.now();
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
  return (performance.now() - started) / 1000;
}

/** Seconds `qemu-img convert -O raw` takes for the same. */
function qemuRead(path: string, outPath: string): number {
  const started = performance.now();
  execFileSync('qemu-img', ['convert', '-O', 'raw', path, outPath]);
  return (performance.now() - started) / 1000;
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
    const entry = { oursSeconds: [] as number[], qemuSeconds: [] as number[] };
    for (let round = 0; round < rounds; round++) {
      entry.oursSeconds.push(await engineRead(image, join(dir, 'ours.raw')));
      entry.qemuSeconds.push(qemuRead(image, join(dir, 'qemu.raw')));
    }
    execFileSync('cmp', [join(dir, 'ours.raw'), source]);
    execFileSync('cmp', [join(dir, 'qemu.raw'), source]);
    results[type] = entry;
  }
  return { diskBytes, rounds, results };
}

/** Our throughput over qemu-img convert's, from the medians of one type's rounds. */
export function compressedRatio(entry: { oursSeconds: number[]; qemuSeconds: number[] }): number {
  return median(entry.qemuSeconds) / median(entry.oursSeconds);
}
