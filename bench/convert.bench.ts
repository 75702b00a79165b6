// SPDX-License-Identifier: MIT
// convert against qemu-img convert (`npm run bench:convert`), both run as processes on the same
// files in one run, alternating, median of 3: a 1 GiB qcow2 chain (base with random data, text,
// zero-filled data and holes; an overlay with new data and zero clusters) to qcow2 and to raw;
// and `convert -c` (zlib and zstd) of a 256 MiB image of compressible text, with output sizes.
// `--quick`: 256 MiB chain, 64 MiB text, one round. Writes bench/results/convert.json.

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createImageFile } from '../bindings/node.js';
import { fillPattern, machineInfo, machineLine, median, printResult, printTable, withTempDir } from './harness.js';

const MIB = 1024 * 1024;
const QUICK = process.argv.includes('--quick');
const CHAIN_BYTES = (QUICK ? 256 : 1024) * MIB;
const TEXT_BYTES = (QUICK ? 64 : 256) * MIB;
const ROUNDS = QUICK ? 1 : 3;
const CLI = fileURLToPath(new URL('../../bin/qcow2-wasm.js', import.meta.url));

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

/** Seconds one process took. */
function timed(command: string, args: readonly string[]): number {
  const start = performance.now();
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')}: ${result.stderr}`);
  return (performance.now() - start) / 1000;
}

interface CaseResult { ours: number[]; qemu: number[]; oursBytes?: number; qemuBytes?: number }

function runCase(dir: string, source: string, args: readonly string[], virtualBytes: number): CaseResult {
  const result: CaseResult = { ours: [], qemu: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const tool of round % 2 === 0 ? ['qemu', 'ours'] as const : ['ours', 'qemu'] as const) {
      const target = join(dir, `out-${tool}`);
      rmSync(target, { force: true });
      const seconds = tool === 'qemu'
        ? timed('qemu-img', ['convert', ...args, source, target])
        : timed(process.execPath, [CLI, 'convert', ...args, source, target]);
      result[tool].push(virtualBytes / MIB / seconds);
      if (tool === 'qemu') result.qemuBytes = statSync(target).size;
      else result.oursBytes = statSync(target).size;
    }
  }
  return result;
}

async function main(): Promise<void> {
  console.log(`convert: ${CHAIN_BYTES / MIB} MiB qcow2 chain, ${TEXT_BYTES / MIB} MiB text for -c, median of ${ROUNDS}, both as processes`);
  console.log(machineLine());
  const qemuVersion = execFileSync('qemu-img', ['--version'], { encoding: 'utf8' }).split('\n')[0];
  console.log(qemuVersion);
  const cases: [string, string, string[], number][] = [];
  const results: Record<string, unknown> = {};
  const rows: string[][] = [];
  await withTempDir('qcow2-wasm-convert-bench-', async (dir) => {
    const chain = await writeChain(dir);
    const text = await writeText(dir);
    cases.push(
      ['chain -> qcow2', chain, ['-O', 'qcow2'], CHAIN_BYTES],
      ['chain -> raw', chain, ['-O', 'raw'], CHAIN_BYTES],
      ['-c zlib', text, ['-c', '-O', 'qcow2', '-o', 'compression_type=zlib'], TEXT_BYTES],
      ['-c zstd', text, ['-c', '-O', 'qcow2', '-o', 'compression_type=zstd'], TEXT_BYTES],
    );
    for (const [name, source, args, bytes] of cases) {
      const r = runCase(dir, source, args, bytes);
      const ours = median(r.ours);
      const qemu = median(r.qemu);
      const sizeRatio = r.oursBytes !== undefined && r.qemuBytes ? r.oursBytes / r.qemuBytes : undefined;
      results[name] = { oursMBps: r.ours, qemuMBps: r.qemu, medianRatio: ours / qemu, oursBytes: r.oursBytes, qemuBytes: r.qemuBytes, sizeRatio };
      rows.push([name, ours.toFixed(0), qemu.toFixed(0), `${(ours / qemu).toFixed(2)}x`, name.startsWith('-c') ? `${sizeRatio?.toFixed(3)}x` : '']);
    }
  });
  printTable(['case', 'ours MiB/s', 'qemu-img MiB/s', 'ratio', 'size ours/qemu'], rows);
  const record = { machine: machineInfo(), qemuImg: qemuVersion, rounds: ROUNDS, chainBytes: CHAIN_BYTES, textBytes: TEXT_BYTES, results };
  printResult(record);
  mkdirSync(join('bench', 'results'), { recursive: true });
  writeFileSync(join('bench', 'results', QUICK ? 'convert-quick.json' : 'convert.json'), `${JSON.stringify(record, null, 2)}\n`);
}

await main();
