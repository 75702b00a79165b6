// SPDX-License-Identifier: MIT
// `info --backing-chain`, `compare -s` and `create -o help` against qemu-img's output.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOurCli, runQemuImg, type CliRun } from './helpers/cli-runs.js';
import { describeWithQemu, makeImage, qemuImg } from './helpers/qemu.js';

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-cli-chain-')); });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ours = (args: string[]): Promise<CliRun> => runOurCli(dir, args);
const theirs = (args: string[]): CliRun => runQemuImg(dir, args, true);

describeWithQemu('info --backing-chain, compare -s, create -o help', () => {
  it('info --backing-chain prints every image of a three-level chain as qemu-img does', async () => {
    makeImage(dir, 'chain-0.raw', { size: 1024 * 1024, format: 'raw' });
    makeImage(dir, 'chain-1.qcow2', { size: 1024 * 1024, backingFile: 'chain-0.raw', backingFormat: 'raw', ops: [{ op: 'write', offset: 0, length: 4096, pattern: 1 }] });
    mkdirSync(join(dir, 'sub'), { recursive: true });
    makeImage(join(dir, 'sub'), 'chain-2.qcow2', { size: 2 * 1024 * 1024, compat: '0.10', backingFile: '../chain-1.qcow2', backingFormat: 'qcow2' });
    expect(qemuImg(['snapshot', '-c', 'snap', 'sub/chain-2.qcow2'], dir).code).toBe(0);
    for (const args of [
      ['info', '--backing-chain', 'sub/chain-2.qcow2'], ['info', '--backing-chain', '--output=json', 'sub/chain-2.qcow2'],
      ['info', 'sub/chain-2.qcow2', '--backing-chain', '--output', 'json'], ['info', '--backing-chain', 'chain-0.raw'],
      ['info', '--backing-chain'],
    ]) {
      // Snapshot dates print in local time and disk sizes in blocks: both tools read the same files.
      expect(await ours(args), args.join(' ')).toEqual(theirs(args));
    }
  });

  it('compare -s: size and block status mismatches where qemu-img finds them', async () => {
    const size = 1024 * 1024;
    makeImage(dir, 's-empty.qcow2', { size });
    makeImage(dir, 's-empty2.qcow2', { size, clusterSize: 4096 });
    makeImage(dir, 's-zero.qcow2', { size, ops: [{ op: 'zero', offset: 0, length: 65536 }] });
    makeImage(dir, 's-data0.qcow2', { size, ops: [{ op: 'write', offset: 65536, length: 65536, pattern: 0 }] });
    makeImage(dir, 's-big.qcow2', { size: 2 * size });
    makeImage(dir, 's-mid.qcow2', { size, ops: [{ op: 'zero', offset: 0, length: 65536 }, { op: 'write', offset: 131072, length: 4096, pattern: 1 }] });
    makeImage(dir, 's-mid2.qcow2', { size, ops: [{ op: 'zero', offset: 0, length: 65536 }, { op: 'write', offset: 131072, length: 4096, pattern: 2 }] });
    for (const pair of [
      ['s-empty.qcow2', 's-empty2.qcow2'], ['s-empty.qcow2', 's-zero.qcow2'], ['s-zero.qcow2', 's-data0.qcow2'], ['s-empty.qcow2', 's-big.qcow2'],
      ['s-zero.qcow2', 's-mid.qcow2'], ['s-mid.qcow2', 's-mid2.qcow2'], ['s-mid.qcow2', 's-mid.qcow2'],
    ]) {
      for (const args of [['compare', '-s', ...pair], ['compare', '-s', '-q', ...pair], ['compare', ...pair]]) {
        expect(await ours(args), args.join(' ')).toEqual(theirs(args));
      }
    }
  });

  it('create -o help lists the options in qemu-img\'s layout (the ones this package implements)', async () => {
    const raw = await ours(['create', '-f', 'raw', '-o', 'help']);
    expect(raw).toEqual(theirs(['create', '-f', 'raw', '-o', 'help']));
    const qcow2 = await ours(['create', '-f', 'qcow2', '-o', 'help']);
    const qemu = theirs(['create', '-f', 'qcow2', '-o', 'help']);
    expect(qcow2.code).toBe(0);
    const qemuLines = new Set(qemu.stdout.split('\n'));
    // Every line is qemu-img's, except preallocation, whose modes are fewer here.
    for (const line of qcow2.stdout.split('\n')) {
      if (line.startsWith('  preallocation=')) expect(line).toBe('  preallocation=<str>    - Preallocation mode (allowed values: off, metadata)');
      else expect(qemuLines.has(line), line).toBe(true);
    }
    expect(qcow2.stdout).toMatch(/^Supported qcow2 options:\n {2}backing_file=<str> {5}- File name of a base image\n/);
    expect(await ours(['create', '-f', 'qcow2', '-o', 'help', 'x.qcow2', '1M'])).toMatchObject({ code: 0, stdout: qcow2.stdout });
    expect(await ours(['amend', '-o', 'help', 'anything.qcow2'])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^Amend options for 'qcow2':\n {2}compat=<str> {11}- Compatibility level/) });
  });
});
