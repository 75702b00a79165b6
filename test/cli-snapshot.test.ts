// SPDX-License-Identifier: MIT
// `qcow2-wasm snapshot` against `qemu-img snapshot`: the same list byte for byte, the same
// messages and exit codes for bad input, and images the other tool accepts.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../bindings/cli/main.js';
import { convertToRaw, describeWithQemu, makeImage, qemuCheck, qemuImg } from './helpers/qemu.js';

interface CliRun { code: number; stdout: string; stderr: string }

async function ours(args: string[], cwd: string): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { cwd, stdout: (t) => { stdout += t; }, stderr: (t) => { stderr += t; } });
  return { code, stdout, stderr };
}

/** qemu-img's run with its program name replaced by ours. */
function theirs(args: string[], cwd: string): CliRun {
  const r = qemuImg(args, cwd);
  const rename = (text: string) => text.replaceAll('qemu-img', 'qcow2-wasm');
  return { code: r.code, stdout: rename(r.stdout), stderr: rename(r.stderr) };
}

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-cli-snapshot-')); });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describeWithQemu('qcow2-wasm snapshot', () => {
  it('-c, -l, -a, -d: qemu-img reads what we write and we list what it writes, byte for byte', async () => {
    const path = makeImage(dir, 'list.qcow2', { size: 2 * 1024 * 1024, ops: [{ op: 'write', offset: 0, length: 65536, pattern: 1 }] });
    expect(await ours(['snapshot', '-c', 'first', 'list.qcow2'], dir)).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(qemuImg(['snapshot', '-c', 'second', 'list.qcow2'], dir).code).toBe(0);
    expect(await ours(['snapshot', '-q', '-c', '', 'list.qcow2'], dir)).toMatchObject({ code: 0 });
    expect(qemuImg(['snapshot', '-c', 'a much longer snapshot name than the column', 'list.qcow2'], dir).code).toBe(0);
    const listed = await ours(['snapshot', '-l', 'list.qcow2'], dir);
    expect(listed).toEqual(theirs(['snapshot', '-l', 'list.qcow2'], dir));
    expect(listed.stdout.split('\n')).toHaveLength(7);
    expect(qemuCheck(path).exitCode).toBe(0);

    const snapshotContent = convertToRaw(path);
    expect(qemuImg(['snapshot', '-c', 'x', 'list.qcow2'], dir).code).toBe(0);
    expect((await import('./helpers/qemu.js')).qemuIo(['-c', 'write -q -P 9 0 4k', path], dir).code).toBe(0);
    expect(await ours(['snapshot', '-a', 'first', 'list.qcow2'], dir)).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(Buffer.compare(convertToRaw(path), snapshotContent)).toBe(0);
    expect(await ours(['snapshot', '-d', 'second', 'list.qcow2'], dir)).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(qemuImg(['snapshot', '-d', 'first', 'list.qcow2'], dir).code).toBe(0);
    expect(qemuCheck(path)).toMatchObject({ exitCode: 0 });
    expect(await ours(['snapshot', '-l', 'list.qcow2'], dir)).toEqual(theirs(['snapshot', '-l', 'list.qcow2'], dir));
  });

  it('prints nothing for an image without snapshots, a raw image, or no action', async () => {
    makeImage(dir, 'empty.qcow2', { size: 65536 });
    makeImage(dir, 'plain.raw', { size: 65536, format: 'raw' });
    for (const args of [['snapshot', '-l', 'empty.qcow2'], ['snapshot', '-l', 'plain.raw'], ['snapshot', 'empty.qcow2']]) {
      expect(await ours(args, dir), args.join(' ')).toEqual(theirs(args, dir));
    }
  });

  it('bad input: the same message and exit code as qemu-img, nothing changed on disk', async () => {
    const path = makeImage(dir, 'bad.qcow2', { size: 65536 });
    expect(qemuImg(['snapshot', '-c', 'kept', 'bad.qcow2'], dir).code).toBe(0);
    makeImage(dir, 'bad.raw', { size: 65536, format: 'raw' });
    const cases = [
      ['snapshot', '-a', 'nope', 'bad.qcow2'],
      ['snapshot', '-d', 'nope', 'bad.qcow2'],
      ['snapshot', '-d', '1', 'bad.qcow2'],
      ['snapshot', '-c'],
      ['snapshot', '-qc'],
      ['snapshot', '-l'],
      ['snapshot', '-l', 'bad.qcow2', 'other.qcow2'],
      ['snapshot', '-l', '-c', 'x', 'bad.qcow2'],
      ['snapshot', '-a', 'kept', '-a', 'kept', 'bad.qcow2'],
      ['snapshot', '-x', 'bad.qcow2'],
      ['snapshot', '-c', 'x', 'missing.qcow2'],
      ['snapshot', '-c', 'x', 'bad.raw'],
      ['snapshot', '-a', 'x', 'bad.raw'],
      ['snapshot', '-d', 'x', 'bad.raw'],
    ];
    for (const args of cases) {
      const before = readFileSync(path);
      const expected = theirs(args, dir);
      expect(await ours(args, dir), args.join(' ')).toEqual(expected);
      expect(expected.code, args.join(' ')).toBe(1);
      expect(Buffer.compare(readFileSync(path), before), `${args.join(' ')}: file unchanged`).toBe(0);
    }
  });

  it('applies a snapshot in a copy that qemu-img then checks clean', async () => {
    const path = makeImage(dir, 'apply.qcow2', { size: 1024 * 1024, compat: '0.10', ops: [{ op: 'write', offset: 4096, length: 8192, pattern: 3 }] });
    expect(await ours(['snapshot', '-c', 's', 'apply.qcow2'], dir)).toMatchObject({ code: 0 });
    copyFileSync(path, join(dir, 'apply-copy.qcow2'));
    expect(await ours(['snapshot', '-a', 's', 'apply-copy.qcow2'], dir)).toMatchObject({ code: 0 });
    expect(qemuCheck(join(dir, 'apply-copy.qcow2')).exitCode).toBe(0);
    expect(Buffer.compare(convertToRaw(join(dir, 'apply-copy.qcow2')), convertToRaw(path))).toBe(0);
  });
});
