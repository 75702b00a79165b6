// SPDX-License-Identifier: MIT
// The convert, measure and bench commands against qemu-img 7.2: same output, same messages and
// exit codes for bad input, nothing changed on disk when refused; converted images pass qemu-img
// check and compare equal to their source.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOurCli, runQemuImg, type CliRun } from './helpers/cli-runs.js';
import { progressPrinter } from '../bindings/cli/convert.js';
import { describeWithQemu, qemuCheck, qemuImg, qemuIo } from './helpers/qemu.js';


let dir: string;

const ours = (args: string[]): Promise<CliRun> => runOurCli(dir, args);

const theirs = (args: string[]): CliRun => runQemuImg(dir, args);

/** stderr with the program name made neutral, to compare messages. */
const message = (run: CliRun): string => run.stderr.replaceAll('qcow2-wasm', 'PROG').replaceAll('qemu-img', 'PROG');

function mustQemu(args: string[]): void {
  const result = qemuImg(args, dir);
  if (result.code !== 0) throw new Error(`qemu-img ${args.join(' ')}: ${result.stderr}`);
}

describeWithQemu('CLI convert, measure, bench (qemu-img as the oracle)', () => {
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-cli-convert-'));
    mustQemu(['create', '-f', 'qcow2', join(dir, 'base.qcow2'), '32M']);
    qemuIo(['-c', 'write -P 0x44 0 4M', '-c', 'write -P 0x45 20M 1M', join(dir, 'base.qcow2')]);
    mustQemu(['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(dir, 'top.qcow2')]);
    qemuIo(['-c', 'write -P 0x55 1M 64k', '-c', 'write -z 20M 512k', '-c', 'write -P 0 8M 1M', join(dir, 'top.qcow2')]);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('converts to qcow2 (plain, -c zlib/zstd, -B) and raw; qemu-img checks and compares them', async () => {
    const cases: [string, string[], string][] = [
      ['plain.qcow2', ['-O', 'qcow2'], 'qcow2'],
      ['zlib.qcow2', ['-c', '-O', 'qcow2'], 'qcow2'],
      ['zstd.qcow2', ['-c', '-O', 'qcow2', '-o', 'compression_type=zstd,cluster_size=16k'], 'qcow2'],
      ['overlay.qcow2', ['-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2'], 'qcow2'],
      ['flat.raw', ['-O', 'raw', '-S', '0', '-m', '4', '-W'], 'raw'],
      ['default.img', [], 'raw'],
    ];
    for (const [target, args, format] of cases) {
      const run = await ours(['convert', ...args, 'top.qcow2', target]);
      expect(run, target).toMatchObject({ code: 0, stdout: '', stderr: '' });
      if (format === 'qcow2') expect(qemuCheck(join(dir, target)).exitCode, target).toBe(0);
      expect(theirs(['compare', '-F', format, 'top.qcow2', target]).stdout, target).toContain('Images are identical');
    }
    // -B leaves the base's data to the base: the overlay holds only what top.qcow2 holds.
    expect(statSync(join(dir, 'overlay.qcow2')).size).toBeLessThan(statSync(join(dir, 'plain.qcow2')).size);
    // -n writes into an existing image of at least the source's size.
    mustQemu(['create', '-f', 'qcow2', join(dir, 'existing.qcow2'), '32M']);
    qemuIo(['-c', 'write -P 0x99 0 32M', join(dir, 'existing.qcow2')]);
    expect(await ours(['convert', '-n', '-O', 'qcow2', 'top.qcow2', 'existing.qcow2'])).toMatchObject({ code: 0 });
    expect(theirs(['compare', '-F', 'qcow2', 'top.qcow2', 'existing.qcow2']).stdout).toContain('Images are identical');
  });

  it('prints progress with -p as qemu-img does', async () => {
    const run = await ours(['convert', '-p', '-O', 'qcow2', 'top.qcow2', 'progress.qcow2']);
    const qemu = theirs(['convert', '-p', '-O', 'qcow2', 'top.qcow2', 'progress-qemu.qcow2']);
    const shape = /^( {4}\(\d{1,3}\.\d{2}\/100%\)\r)+\n$/;
    expect(qemu.stdout).toMatch(shape);
    expect(run.stdout).toMatch(shape);
    expect(run.stdout.startsWith('    (0.00/100%)\r')).toBe(true);
    expect(run.stdout.endsWith('    (100.00/100%)\r    (100.00/100%)\r\n')).toBe(qemu.stdout.endsWith('    (100.00/100%)\r    (100.00/100%)\r\n'));
    expect((await ours(['convert', '-p', '-q', '-O', 'qcow2', 'top.qcow2', 'quiet.qcow2'])).stdout).toBe('');
    let printed = '';
    const printer = progressPrinter((t) => { printed += t; });
    for (const done of [0, 1, 5, 10, 100, 1000]) printer.update(done, 1000);
    printer.end();
    expect(printed).toBe('    (0.00/100%)\r    (10.00/100%)\r    (100.00/100%)\r    (100.00/100%)\r\n');
  });

  it('refuses bad input with qemu-img\'s message and exit code, touching nothing', async () => {
    writeFileSync(join(dir, 'keep.qcow2'), 'keep');
    const refusals: string[][] = [
      ['convert', '-O', 'qcow2', '-o', 'foo=bar', 'top.qcow2', 'new1.qcow2'],
      ['convert', '-O', 'qcow2', '-o', 'cluster_size=3000', 'top.qcow2', 'new2.qcow2'],
      ['convert', '-O', 'qcow2', '-S', '1000', 'top.qcow2', 'new3.qcow2'],
      ['convert', '-O', 'qcow2', '-m', '17', 'top.qcow2', 'new4.qcow2'],
      ['convert', '-c', '-O', 'raw', 'top.qcow2', 'new5.raw'],
      ['convert', '-O', 'qcow2', '-B', 'base.qcow2', 'top.qcow2', 'new6.qcow2'],
      ['convert', '-O', 'raw', '-B', 'base.qcow2', '-F', 'qcow2', 'top.qcow2', 'new7.raw'],
      ['convert', '-n', '-O', 'qcow2', '-o', 'cluster_size=4k', 'top.qcow2', 'keep.qcow2'],
      ['convert', '-n', '-O', 'qcow2', 'top.qcow2', 'missing.qcow2'],
      ['convert', '-O', 'qcow2', 'nonexistent.qcow2', 'new8.qcow2'],
      ['measure', '-O', 'qcow2'],
      ['measure', '-O', 'qcow2', '--size', '1G', 'top.qcow2'],
      ['measure', '-O', 'qcow2', '-o', 'foo=1', '--size', '1G'],
      ['measure', '-O', 'qcow2', '-o', 'compat=0.10,refcount_bits=8', '--size', '1M'],
      ['bench', '-c', 'abc', 'top.qcow2'],
      ['bench', '-c', '10', '--pattern=300', '-w', 'top.qcow2'],
      ['bench', '-c', '10', '--flush-interval=10', 'top.qcow2'],
      ['bench', 'top.qcow2', 'extra'],
    ];
    for (const args of refusals) {
      const run = await ours(args);
      const qemu = theirs(args);
      expect(run.code, args.join(' ')).toBe(qemu.code);
      expect(run.code, args.join(' ')).not.toBe(0);
      // qemu-img's own wording, except where it names its own helper text or the OS error text.
      if (!args.includes('nonexistent.qcow2') && !args.includes('missing.qcow2')) expect(message(run), args.join(' ')).toBe(message(qemu));
    }
    for (const name of ['new1.qcow2', 'new2.qcow2', 'new3.qcow2', 'new4.qcow2', 'new5.raw', 'new6.qcow2', 'new7.raw', 'new8.qcow2', 'missing.qcow2']) {
      expect(existsSync(join(dir, name)), name).toBe(false);
    }
    expect(readFileSync(join(dir, 'keep.qcow2'), 'utf8')).toBe('keep');
  });

  it('overwrites an existing target, as qemu-img convert does', async () => {
    writeFileSync(join(dir, 'old.qcow2'), 'old contents');
    expect((await ours(['convert', '-O', 'qcow2', 'top.qcow2', 'old.qcow2'])).code).toBe(0);
    expect(theirs(['compare', 'top.qcow2', 'old.qcow2']).stdout).toContain('Images are identical');
  });

  it('measures what qemu-img measures, human and JSON, on a matrix of inputs and options', async () => {
    mustQemu(['convert', '-O', 'raw', 'top.qcow2', 'sparse.raw']);
    const inputs: string[][] = [['--size', '1G'], ['--size', '1000'], ['--size', '3T'], ['top.qcow2'], ['base.qcow2'], ['sparse.raw']];
    const optionSets = ['', 'cluster_size=512', 'cluster_size=2M', 'cluster_size=16k,extended_l2=on', 'refcount_bits=1', 'refcount_bits=64',
      'compat=0.10', 'preallocation=metadata', 'preallocation=full', 'backing_file=base.qcow2', 'lazy_refcounts=on,compression_type=zstd'];
    for (const input of inputs) {
      for (const options of optionSets) {
        for (const output of ['human', 'json']) {
          const args = ['measure', `--output=${output}`, '-O', 'qcow2', ...(options ? ['-o', options] : []), ...input];
          const run = await ours(args);
          const qemu = theirs(args);
          expect({ ...run, stderr: message(run) }, args.join(' ')).toEqual({ ...qemu, stderr: message(qemu) });
        }
      }
      const raw = ['measure', '--output=json', ...input];
      const run = await ours(raw);
      const qemu = theirs(raw);
      expect({ ...run, stderr: message(run) }, raw.join(' ')).toEqual({ ...qemu, stderr: message(qemu) });
    }
  });

  it('bench sends what qemu-img bench sends and prints its lines', async () => {
    for (const args of [['-c', '2000'], ['-c', '500', '-w', '-d', '4', '-s', '64k', '-S', '128k', '-o', '1M', '--pattern=0x41', '--flush-interval=100'],
      ['-q', '-c', '10'], ['-c', '100', '-w', '--flush-interval=10', '--no-drain', '-d', '8']]) {
      mustQemu(['convert', '-O', 'qcow2', 'top.qcow2', 'bench-ours.qcow2']);
      mustQemu(['convert', '-O', 'qcow2', 'top.qcow2', 'bench-qemu.qcow2']);
      const run = await ours(['bench', ...args, 'bench-ours.qcow2']);
      const qemu = theirs(['bench', ...args, 'bench-qemu.qcow2']);
      expect(run.code).toBe(0);
      const strip = (text: string) => text.replace(/\d+\.\d{3} seconds/, 'N seconds');
      expect(strip(run.stdout), args.join(' ')).toBe(strip(qemu.stdout));
      expect(run.stdout).toMatch(/Run completed in \d+\.\d{3} seconds\.\n$/);
      if (args.includes('-w')) {
        expect(qemuCheck(join(dir, 'bench-ours.qcow2')).exitCode).toBe(0);
        expect(theirs(['compare', 'bench-ours.qcow2', 'bench-qemu.qcow2']).stdout).toContain('Images are identical');
      }
    }
  });
});
