// SPDX-License-Identifier: MIT
// Reading compressed images (`npm run bench:compressed`): a 256 MiB disk of compressible data,
// compressed by `qemu-img convert -c` with zlib and with zstd (64 KiB clusters), read whole and
// written out as a raw file, by this engine (openImageFile defaults, 1 MiB reads, 4 in flight)
// and by `qemu-img convert -O raw`, rounds interleaved, medians. Needs qemu-img. `--quick`: 64 MiB,
// one round. Writes bench/results/compressed-read.json.

import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { openImageFile } from '../bindings/node.js';
import { fillPattern, machineLine, median, printTable, runProvenance, withTempDir } from './harness.js';

const MIB = 1024 * 1024;
const QUICK = process.argv.includes('--quick');
const DISK_BYTES = (QUICK ? 64 : 256) * MIB;
const ROUNDS = QUICK ? 1 : 3;
const READ_BYTES = MIB;
const IN_FLIGHT = 4;

/** A disk that compresses about as well as an installed system: text-like runs, patterned blocks and holes. */
function writeSource(path: string): void {
  const disk = new Uint8Array(DISK_BYTES);
  const words = ['qcow2 ', 'cluster ', 'emulator ', 'guest ', 'sector ', 'kernel ', 'block ', 'write '];
  let state = 12345;
  for (let at = 0; at < DISK_BYTES; at += 64 * 1024) {
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

async function main(): Promise<void> {
  const provenance = runProvenance();
  console.log(`compressed reads: a ${DISK_BYTES / MIB} MiB disk, 64 KiB clusters, compressed by qemu-img convert -c, read whole into a raw file`);
  console.log(`${machineLine()}; revision ${provenance.revision}`);
  console.log(provenance.qemu ?? 'qemu-img is missing: apt-get install qemu-utils');
  const results: Record<string, { oursSeconds: number[]; qemuSeconds: number[] }> = {};
  await withTempDir('qcow2-wasm-compressed-', async (dir) => {
    const source = join(dir, 'source.raw');
    writeSource(source);
    for (const type of ['zlib', 'zstd'] as const) {
      const image = join(dir, `${type}.qcow2`);
      execFileSync('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', `compression_type=${type}`, source, image]);
      await engineRead(image, join(dir, 'warm.raw')); // JIT warm-up
      const entry = { oursSeconds: [] as number[], qemuSeconds: [] as number[] };
      for (let round = 0; round < ROUNDS; round++) {
        entry.oursSeconds.push(await engineRead(image, join(dir, 'ours.raw')));
        entry.qemuSeconds.push(qemuRead(image, join(dir, 'qemu.raw')));
      }
      execFileSync('cmp', [join(dir, 'ours.raw'), source]);
      results[type] = entry;
    }
  });
  const mbPerSecond = (seconds: number) => DISK_BYTES / seconds / 1e6;
  printTable(['compression', 'ours MB/s', 'qemu-img convert MB/s', 'ours / qemu-img'], Object.entries(results).map(([type, entry]) => {
    const ours = mbPerSecond(median(entry.oursSeconds));
    const qemu = mbPerSecond(median(entry.qemuSeconds));
    return [type, ours.toFixed(0), qemu.toFixed(0), `${(ours / qemu).toFixed(2)}x`];
  }));
  console.log(`Medians of ${ROUNDS} interleaved rounds; MB/s of guest bytes (1e6 B/s), opening and writing the raw file included for both.`);
  mkdirSync(join('bench', 'results'), { recursive: true });
  writeFileSync(join('bench', 'results', 'compressed-read.json'),
    `${JSON.stringify({ bench: 'compressed-read', ...provenance, diskBytes: DISK_BYTES, rounds: ROUNDS, results }, null, 2)}\n`);
}

await main();
