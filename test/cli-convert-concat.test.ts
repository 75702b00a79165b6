// SPDX-License-Identifier: MIT
// convert with several sources concatenates them, as qemu-img convert does: the command against
// qemu-img 7.2 (same image, same messages and exit codes for bad input, nothing written when
// refused) and the ConcatenatedImage it reads through.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOurCli, runQemuImg, type CliRun } from './helpers/cli-runs.js';
import { describeWithQemu, qemuCheck, qemuImg, qemuIo } from './helpers/qemu.js';
import { ConcatenatedImage } from '../bindings/tools/concatenated-image.js';
import { RawImage } from '../bindings/raw/raw-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { classifySource, SourceStatus } from '../bindings/tools/convert-plan.js';

let dir: string;
const ours = (args: string[]): Promise<CliRun> => runOurCli(dir, args);
const theirs = (args: string[]): CliRun => runQemuImg(dir, args);
const message = (run: CliRun): string => run.stderr.replaceAll('qcow2-wasm', 'PROG').replaceAll('qemu-img', 'PROG');

function mustQemu(args: string[]): string {
  const result = qemuImg(args, dir);
  if (result.code !== 0) throw new Error(`qemu-img ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

describeWithQemu('convert with several sources (qemu-img as the oracle)', () => {
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-convert-concat-'));
    // Sizes that are not multiples of the 64 KiB cluster, so clusters of the result straddle two sources.
    mustQemu(['create', '-f', 'qcow2', join(dir, 'a.qcow2'), '1000K']);
    qemuIo(['-c', 'write -P 0x11 0 64k', '-c', 'write -P 0x12 960k 40k', '-c', 'write -z 512k 64k', join(dir, 'a.qcow2')]);
    mustQemu(['create', '-f', 'raw', join(dir, 'b.raw'), '1536K']);
    qemuIo(['-f', 'raw', '-c', 'write -P 0x21 0 4k', '-c', 'write -P 0x22 1000k 100k', join(dir, 'b.raw')]);
    mustQemu(['create', '-f', 'qcow2', join(dir, 'base.qcow2'), '2M']);
    qemuIo(['-c', 'write -P 0x31 0 2M', join(dir, 'base.qcow2')]);
    mustQemu(['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(dir, 'c.qcow2')]);
    qemuIo(['-c', 'write -P 0x41 64k 64k', join(dir, 'c.qcow2')]);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('concatenates into qcow2 (plain and -c) and raw what qemu-img concatenates', async () => {
    const sources = ['a.qcow2', 'b.raw', 'c.qcow2', 'a.qcow2'];
    for (const [name, args] of [['cat.qcow2', ['-O', 'qcow2']], ['catc.qcow2', ['-c', '-O', 'qcow2']], ['cat.raw', ['-O', 'raw']]] as const) {
      const run = await ours(['convert', ...args, ...sources, name]);
      expect(run, name).toMatchObject({ code: 0, stdout: '', stderr: '' });
      mustQemu(['convert', ...args, ...sources, `qemu-${name}`]);
      if (name.endsWith('.qcow2')) expect(qemuCheck(join(dir, name)).exitCode, name).toBe(0);
      const format = name.endsWith('.raw') ? 'raw' : 'qcow2';
      expect(theirs(['compare', '-f', format, '-F', format, name, `qemu-${name}`]).stdout, name).toContain('Images are identical');
      const info = (file: string) => JSON.parse(mustQemu(['info', '--output=json', '-f', format, file])) as { 'virtual-size': number };
      expect(info(name)['virtual-size'], name).toBe(info(`qemu-${name}`)['virtual-size']);
    }
    // -n: into an existing image at least as large as the sources together.
    mustQemu(['create', '-f', 'qcow2', join(dir, 'existing.qcow2'), '8M']);
    qemuIo(['-c', 'write -P 0x99 0 8M', join(dir, 'existing.qcow2')]);
    mustQemu(['create', '-f', 'qcow2', join(dir, 'qemu-existing.qcow2'), '8M']);
    qemuIo(['-c', 'write -P 0x99 0 8M', join(dir, 'qemu-existing.qcow2')]);
    expect(await ours(['convert', '-n', '-O', 'qcow2', ...sources, 'existing.qcow2'])).toMatchObject({ code: 0 });
    mustQemu(['convert', '-n', '-O', 'qcow2', ...sources, 'qemu-existing.qcow2']);
    expect(theirs(['compare', 'existing.qcow2', 'qemu-existing.qcow2']).stdout).toContain('Images are identical');
  });

  it('refuses what qemu-img refuses, with its message and exit code, writing nothing', async () => {
    writeFileSync(join(dir, 'keep.qcow2'), 'keep');
    const refusals: string[][] = [
      ['convert'],
      ['convert', '-O', 'qcow2', 'a.qcow2'],
      ['convert', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', 'a.qcow2', 'b.raw', 'new1.qcow2'],
      ['convert', '-O', 'qcow2', '-B', 'base.qcow2', 'a.qcow2', 'b.raw', 'new2.qcow2'],
      ['convert', '-n', '-O', 'qcow2', '-B', 'base.qcow2', 'a.qcow2', 'b.raw', 'keep.qcow2'],
      ['convert', '-O', 'raw', '-B', 'base.qcow2', 'a.qcow2', 'b.raw', 'new3.raw'],
      ['convert', '-O', 'qcow2', '-o', 'foo=1', '-B', 'base.qcow2', 'a.qcow2', 'b.raw', 'new4.qcow2'],
      ['convert', '-c', '-O', 'raw', '-B', 'base.qcow2', 'a.qcow2', 'new5.raw'],
      ['convert', '-O', 'qcow2', '-B', 'base.qcow2', 'nonexistent.qcow2', 'b.raw', 'new6.qcow2'],
    ];
    for (const args of refusals) {
      const run = await ours(args);
      const qemu = theirs(args);
      expect(run.code, args.join(' ')).toBe(qemu.code);
      expect(run.code, args.join(' ')).not.toBe(0);
      // The missing file's message carries the OS's error text, which differs.
      if (!args.includes('nonexistent.qcow2')) expect(message(run), args.join(' ')).toBe(message(qemu));
    }
    for (const name of ['new1.qcow2', 'new2.qcow2', 'new3.raw', 'new4.qcow2', 'new5.raw', 'new6.qcow2']) expect(existsSync(join(dir, name)), name).toBe(false);
    expect(readFileSync(join(dir, 'keep.qcow2'), 'utf8')).toBe('keep');
  });
});

describe('ConcatenatedImage', () => {
  async function rawPart(bytes: number[]): Promise<RawImage> {
    const backend = createMemoryBackend();
    await backend.pwritev(0, [Uint8Array.from(bytes)]);
    return RawImage.open(backend, { readOnly: true });
  }

  it('reads across part boundaries, classifies part by part, refuses writes and closes its parts', async () => {
    const parts = [await rawPart([1, 2, 3]), await rawPart([]), await rawPart([4, 5]), await rawPart([6])];
    const image = new ConcatenatedImage(parts);
    expect(image.virtualSize).toBe(6);
    expect(image.readOnly).toBe(true);
    expect([...await image.read(0, 6)]).toEqual([1, 2, 3, 4, 5, 6]);
    expect([...await image.read(2, 3)]).toEqual([3, 4, 5]);
    await expect(image.read(5, 2)).rejects.toMatchObject({ code: 'IMAGE_OUT_OF_RANGE' });
    expect(await classifySource(image, 1, 5, false)).toEqual([{ start: 1, length: 5, status: SourceStatus.DATA }]);
    await expect(image.write(0, new Uint8Array(1))).rejects.toMatchObject({ code: 'IMAGE_READ_ONLY' });
    await expect(image.writeZeroes(0, 1)).rejects.toMatchObject({ code: 'IMAGE_READ_ONLY' });
    await expect(image.discard(0, 1)).rejects.toMatchObject({ code: 'IMAGE_READ_ONLY' });
    const batch = image.multiwrite([{ offset: 0, data: new Uint8Array(1) }, { offset: 1, data: new Uint8Array(1) }]);
    expect(batch).toHaveLength(2);
    for (const result of batch) await expect(result).rejects.toMatchObject({ code: 'IMAGE_READ_ONLY' });
    expect(image.stats().guestReadBytes).toBe(9);
    await image.close();
    await image.close();
    await expect(image.read(0, 1)).rejects.toMatchObject({ code: 'IMAGE_CLOSED' });
    await expect(image.write(0, new Uint8Array(1))).rejects.toMatchObject({ code: 'IMAGE_CLOSED' });
    for (const part of parts) await expect(part.read(0, 0)).rejects.toMatchObject({ code: 'IMAGE_CLOSED' });
    expect(() => new ConcatenatedImage([])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
