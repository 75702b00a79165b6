// SPDX-License-Identifier: MIT
// Small helpers shared by the benchmarks: medians, the machine line, aligned tables, a temporary
// directory, a seeded random source and a deterministic data pattern.

import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, platform, release, tmpdir } from 'node:os';
import { join } from 'node:path';

/** The median of `values` (the mean of the middle two for an even count); NaN when empty. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** The machine a benchmark ran on, for its RESULT line. */
export interface MachineInfo {
  cpuModel: string;
  coreCount: number;
  os: string;
  node: string;
}

/** Describes this machine: CPU model, core count, OS and Node version. */
export function machineInfo(): MachineInfo {
  const cores = cpus();
  return { cpuModel: cores[0]?.model ?? 'unknown CPU', coreCount: cores.length, os: `${platform()} ${release()}`, node: process.version };
}

/** machineInfo() as one printable line. */
export function machineLine(): string {
  const info = machineInfo();
  return `machine: ${info.cpuModel}, ${info.coreCount} cores, ${info.os}, Node ${info.node}`;
}

/** Prints `rows` under `headers` as a Markdown table; columns after the first are right-aligned. */
export function printTable(headers: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => row[column].length)));
  const line = (cells: readonly string[]) =>
    `| ${cells.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column]))).join(' | ')} |`;
  console.log(line(headers));
  console.log(`|${widths.map((width, column) => (column === 0 ? `:${'-'.repeat(width + 1)}` : `${'-'.repeat(width + 1)}:`)).join('|')}|`);
  for (const row of rows) console.log(line(row));
}

/** Prints `result` as the single machine-readable line `RESULT {json}`. */
export function printResult(result: unknown): void {
  console.log(`RESULT ${JSON.stringify(result)}`);
}

/** Runs `body` with a new directory under os.tmpdir() and removes it afterwards, even on failure. */
export async function withTempDir<T>(prefix: string, body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  try {
    return await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A seeded xorshift32 source: the same seed always gives the same uint32 sequence. */
export function makeRandom(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
}

/**
 * Fills `target` with the benchmark data pattern as it appears at byte `streamOffsetBytes` of an
 * endless stream: 32-bit word k of the stream is a hash of k (and `seed`), so every 4-byte word of
 * a large data set differs from its neighbours and a misplaced block is caught. Both the offset and
 * the length must be multiples of 4, and `target` must start 4-byte aligned in its buffer.
 */
export function fillPattern(target: Uint8Array, streamOffsetBytes: number, seed = 0x5eed): void {
  if (streamOffsetBytes % 4 !== 0 || target.byteLength % 4 !== 0 || target.byteOffset % 4 !== 0) {
    throw new RangeError('fillPattern needs 4-byte aligned offsets and lengths');
  }
  const words = new Uint32Array(target.buffer, target.byteOffset, target.byteLength / 4);
  const firstWord = streamOffsetBytes / 4;
  for (let i = 0; i < words.length; i++) {
    let x = (firstWord + i + seed) | 0;
    x = Math.imul(x ^ (x >>> 16), 0x45d9f3b);
    x = Math.imul(x ^ (x >>> 16), 0x45d9f3b);
    words[i] = x ^ (x >>> 16);
  }
}

/**
 * Where a committed results file came from: revision (with "-dirty" when a tracked file other than
 * a benchmark result differs from it), machine, runtimes, date.
 */
export interface RunProvenance { revision: string; machine: MachineInfo; qemu: string | undefined; date: string }

/** Describes this run for a results file: git revision of the working tree, machine, Node and qemu-img versions. */
export function runProvenance(): RunProvenance {
  const quiet = (command: string, args: string[]) => {
    try {
      return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return undefined;
    }
  };
  const commit = quiet('git', ['rev-parse', '--short=12', 'HEAD']);
  const dirty = quiet('git', ['status', '--porcelain', '--untracked-files=no', '--', '.', ':(exclude)bench/results']);
  return {
    revision: commit === undefined ? 'unknown (not a git checkout)' : `${commit}${dirty ? '-dirty' : ''}`,
    machine: machineInfo(),
    qemu: quiet('qemu-img', ['--version'])?.split('\n')[0],
    date: new Date().toISOString(),
  };
}
