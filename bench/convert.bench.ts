// SPDX-License-Identifier: MIT
// convert against qemu-img convert (`npm run bench:convert`) on the same files in one run,
// alternating, median of 3: a 1 GiB qcow2 chain (base with random data, text, zero-filled data
// and holes; an overlay with new data and zero clusters) to qcow2 and to raw; and `convert -c`
// (zlib and zstd) of a 256 MiB image of compressible text, with output sizes. Each tool runs with
// its defaults and its output must be on disk: qemu-img convert does not flush its output (its
// default cache mode for the target), so every CLI run, ours and qemu-img's, is timed up to an
// fsync of the output file. Two figures for us: the `qcow2-wasm convert` process (Node's start
// and module loading included), and the library call timed inside its process
// (bench/convert-run.ts: open, convert, flush, close). Before each run, untimed, the previous
// output is removed and `sync` runs (see settle). `--quick`: 256 MiB chain, 64 MiB text, one
// round. `--compressed-only`: only the `-c` rows (their results file is convert-compressed.json).
// Writes bench/results/convert.json with the revision, machine, versions and load.

import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdirSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createImageFile } from '../bindings/node.js';
import { fillPattern, machineInfo, machineLine, median, printResult, printTable, runProvenance, withTempDir } from './harness.js';

const MIB = 1024 * 1024;
const QUICK = process.argv.includes('--quick');
const COMPRESSED_ONLY = process.argv.includes('--compressed-only');
const CHAIN_BYTES = (QUICK ? 256 : 1024) * MIB;
const TEXT_BYTES = (QUICK ? 64 : 256) * MIB;
const ROUNDS = QUICK ? 1 : 3;
const CLI = fileURLToPath(new URL('../../bin/qcow2-wasm.js', import.meta.url));
const RUNNER = fileURLToPath(new URL('./convert-run.js', import.meta.url));

/** Text-like bytes: words and counters, compressing about as well as a source tree. */
function textBytes(length: number, seed: number): Uint8Array {
  const words = ['block', 'cluster', 'guest', 'host', 'offset', 'refcount', 'table', 'write', 'zero', 'image', 'backing', 'return'];
  let text = '';
  for (let i = 0; text.length < length; i++) text += `${words[(i * 7 + seed) % words.length]}(${(i * 2654435761) % 99991}) ${words[i % words.length]};\n`;
  return new TextEncoder().encode(text.slice(0, length));
}

/** The 1 GiB chain: 8 MiB regions cycling random data + hole, text, zero-filled data + hole, hole. */
async function writeChain(dir: string): Promise<string> {
  const base = await createImageFile(join(dir, 'base.qcow2'), { virtualSize: CHAIN_BYTES });
  const region = 8 * MIB;
  for (let i = 0; i * region < CHAIN_BYTES; i++) {
    const at = i * region;
    if (i % 4 === 0) {
      const data = new Uint8Array(4 * MIB);
      fillPattern(data, at);
      await base.write(at, data);
    } else if (i % 4 === 1) await base.write(at, textBytes(region, i));
    else if (i % 4 === 2) await base.write(at, new Uint8Array(2 * MIB));
  }
  await base.close();
  const overlay = await createImageFile(join(dir, 'overlay.qcow2'), {
    virtualSize: CHAIN_BYTES, backingFile: 'base.qcow2', backingFormat: 'qcow2',
  });
  for (let at = 0; at < CHAIN_BYTES; at += 16 * MIB) {
    const data = new Uint8Array(MIB);
    fillPattern(data, at, 0xbeef);
    await overlay.write(at + 3 * MIB, data);
    await overlay.writeZeroes(at + 8 * MIB, MIB);
  }
  await overlay.close();
  return join(dir, 'overlay.qcow2');
}

async function writeText(dir: string): Promise<string> {
  const image = await createImageFile(join(dir, 'text.qcow2'), { virtualSize: TEXT_BYTES });
  for (let at = 0; at < TEXT_BYTES; at += 8 * MIB) await image.write(at, textBytes(8 * MIB, at / MIB));
  await image.close();
  return join(dir, 'text.qcow2');
}

/** Runs one process; returns its standard output. */
function run(command: string, args: readonly string[]): string {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

/** Seconds one process took, up to an fsync of its output file. */
function timedToDisk(command: string, args: readonly string[], output: string): number {
  const start = performance.now();
  run(command, args);
  const fd = openSync(output, 'r');
  fsyncSync(fd);
  closeSync(fd);
  return (performance.now() - start) / 1000;
}

/**
 * Untimed, before each tool's run: removes the output it is about to write and writes back every
 * dirty page on the machine (and commits the file system's journal, with the discards of the
 * outputs removed before), so no tool pays for the previous run's output: a tool that flushes
 * while it copies, as this library does, otherwise waited for that journal commit.
 */
function settle(outPath: string): void {
  rmSync(outPath, { force: true });
  execFileSync('sync');
}

const TOOLS = ['qemu', 'cli', 'library'] as const;
type Tool = (typeof TOOLS)[number];

interface CaseResult { mibPerSecond: Record<Tool, number[]>; bytes: Partial<Record<Tool, number>> }

function runCase(dir: string, source: string, args: readonly string[], runnerArgs: readonly string[], virtualBytes: number): CaseResult {
  const result: CaseResult = { mibPerSecond: { qemu: [], cli: [], library: [] }, bytes: {} };
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < TOOLS.length; i++) {
      const tool = TOOLS[(round + i) % TOOLS.length];
      const target = join(dir, `out-${tool}`);
      settle(target);
      let seconds: number;
      if (tool === 'qemu') seconds = timedToDisk('qemu-img', ['convert', ...args, source, target], target);
      else if (tool === 'cli') seconds = timedToDisk(process.execPath, [CLI, 'convert', ...args, source, target], target);
      else seconds = (JSON.parse(run(process.execPath, [RUNNER, source, target, ...runnerArgs])) as { milliseconds: number }).milliseconds / 1000;
      result.mibPerSecond[tool].push(virtualBytes / MIB / seconds);
      result.bytes[tool] = statSync(target).size;
      rmSync(target, { force: true });
    }
  }
  return result;
}

async function main(): Promise<void> {
  const qemuVersion = execFileSync('qemu-img', ['--version'], { encoding: 'utf8' }).split('\n')[0];
  const rev = runProvenance().revision;
  console.log(`convert: ${CHAIN_BYTES / MIB} MiB qcow2 chain, ${TEXT_BYTES / MIB} MiB text for -c, median of ${ROUNDS}, output on disk for every tool`);
  console.log(`revision ${rev}; ${machineLine()}; ${qemuVersion}`);
  const loadBefore = loadavg()[0];
  console.log(`load average (1 min) at start: ${loadBefore.toFixed(2)}`);
  const results: Record<string, unknown> = {};
  const rows: string[][] = [];
  await withTempDir('qcow2-wasm-convert-bench-', async (dir) => {
    const chain = COMPRESSED_ONLY ? '' : await writeChain(dir);
    const text = await writeText(dir);
    const cases: [string, string, string[], string[], number][] = [
      ...(COMPRESSED_ONLY ? [] : [
        ['chain -> qcow2', chain, ['-O', 'qcow2'], ['qcow2'], CHAIN_BYTES],
        ['chain -> raw', chain, ['-O', 'raw'], ['raw'], CHAIN_BYTES],
      ] as [string, string, string[], string[], number][]),
      ['-c zlib', text, ['-c', '-O', 'qcow2', '-o', 'compression_type=zlib'], ['qcow2', 'zlib'], TEXT_BYTES],
      ['-c zstd', text, ['-c', '-O', 'qcow2', '-o', 'compression_type=zstd'], ['qcow2', 'zstd'], TEXT_BYTES],
    ];
    for (const [name, source, args, runnerArgs, bytes] of cases) {
      const r = runCase(dir, source, args, runnerArgs, bytes);
      const qemu = median(r.mibPerSecond.qemu);
      const cli = median(r.mibPerSecond.cli);
      const library = median(r.mibPerSecond.library);
      const sizeRatio = r.bytes.qemu ? (r.bytes.cli ?? NaN) / r.bytes.qemu : NaN;
      results[name] = {
        qemuMiBps: r.mibPerSecond.qemu, cliMiBps: r.mibPerSecond.cli, libraryMiBps: r.mibPerSecond.library,
        cliRatio: cli / qemu, libraryRatio: library / qemu, qemuBytes: r.bytes.qemu, cliBytes: r.bytes.cli, libraryBytes: r.bytes.library, sizeRatio,
      };
      rows.push([name, qemu.toFixed(0), cli.toFixed(0), `${(cli / qemu).toFixed(2)}x`, library.toFixed(0), `${(library / qemu).toFixed(2)}x`,
        name.startsWith('-c') ? `${sizeRatio.toFixed(3)}x` : '']);
    }
  });
  const loadAfter = loadavg()[0];
  printTable(['case', 'qemu-img MiB/s', 'CLI MiB/s', 'CLI ratio', 'library MiB/s', 'library ratio', 'size ours/qemu'], rows);
  console.log(`load average (1 min) at end: ${loadAfter.toFixed(2)} on ${machineInfo().coreCount} cores`);
  const record = {
    revision: rev, machine: machineInfo(), versions: { node: process.version, qemuImg: qemuVersion },
    loadAverage: { start: loadBefore, end: loadAfter }, rounds: ROUNDS, chainBytes: CHAIN_BYTES, textBytes: TEXT_BYTES, results,
  };
  printResult(record);
  mkdirSync(join('bench', 'results'), { recursive: true });
  writeFileSync(join('bench', 'results', QUICK ? 'convert-quick.json' : COMPRESSED_ONLY ? 'convert-compressed.json' : 'convert.json'), `${JSON.stringify(record, null, 2)}\n`);
}

await main();
