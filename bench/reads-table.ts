// SPDX-License-Identifier: MIT
// Prints the read comparisons (runReads, runCompressedReads, measureHugeImage) as tables: µs per request and the ratios the goals
// are stated in (qcow2 against qemu-img bench and against RawImage; above 1 means qcow2 is faster).

import type { HugeImageMemory, ReadsResult, ReadsRow } from './reads.js';
import { compressedRatio, type CompressedReadsResult } from './compressed-read.js';
import { median, printTable } from './harness.js';

/** Prints `result`: one line per pattern, µs per request and speed ratios. */
export function readsTable(result: ReadsResult): void {
  const us = (value: number | undefined) => (value === undefined ? 'n/a' : value.toFixed(1));
  const speed = (ours: number, theirs: number | undefined) => (theirs === undefined ? 'n/a' : `${(theirs / ours).toFixed(2)}x`);
  const line = (name: string, row: ReadsRow) => [name, us(row.qcow2), us(row.raw), us(row.qemu), speed(row.qcow2, row.qemu), speed(row.qcow2, row.raw)];
  console.log(`\nreads: ${result.requests} scattered 4 KiB reads at depth 1 and at depth 32, and 16 passes over a 64 MiB image in 1 MiB reads at depth 1; ` +
    `medians of ${result.rounds} rounds`);
  printTable(['pattern', 'qcow2 µs/request', 'RawImage µs/request', 'qemu-img bench µs/request', 'qcow2 speed vs qemu-img bench', 'qcow2 speed vs RawImage'], [
    line('4 KiB scattered, depth 1', result.depth1),
    line('4 KiB scattered, depth 32', result.depth32),
    line('1 MiB sequential, depth 1', result.sequential),
  ]);
}

/** Prints the 1 TiB image's memory (measureHugeImage). */
export function hugeImageTable(memory: HugeImageMemory): void {
  const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(2);
  console.log(`\nmemory: a 1 TiB qcow2 image, default cache, after ${memory.requests} scattered 4 KiB reads and as many writes over its first ` +
    `${memory.spanBytes / 2 ** 20} MiB`);
  printTable(['measure', 'MiB'], [['wasm memory of the image (coreMemoryBytes)', mib(memory.coreMemoryBytes)], ['process resident set growth', mib(memory.rssGrowthBytes)]]);
}

/** Prints the compressed-image comparison (runCompressedReads): MB/s of guest bytes and the ratio. */
export function compressedTable(result: CompressedReadsResult): void {
  const mbPerSecond = (seconds: number[]) => result.diskBytes / median(seconds) / 1e6;
  console.log(`\ncompressed images (64 KiB clusters, made by qemu-img convert -c): a ${result.diskBytes / 2 ** 20} MiB disk read whole ` +
    `into a raw file, 1 MiB reads 4 in flight; medians of ${result.rounds} interleaved rounds`);
  const cpuMs = (seconds: number[]) => (seconds.length > 0 ? (median(seconds) * 1000).toFixed(0) : '-');
  printTable(['compression', 'ours MB/s', 'qemu-img convert MB/s', 'ours / qemu-img', 'CPU ms ours', 'CPU ms qemu-img'], Object.entries(result.results).map(([type, entry]) =>
    [type, mbPerSecond(entry.oursSeconds).toFixed(0), mbPerSecond(entry.qemuSeconds).toFixed(0), `${compressedRatio(entry).toFixed(2)}x`,
      cpuMs(entry.oursCpuSeconds), cpuMs(entry.qemuCpuSeconds)]));
}
