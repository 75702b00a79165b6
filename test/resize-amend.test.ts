// SPDX-License-Identifier: MIT
// resize and amend (library and CLI) against qemu-img: every image passes qemu-img check with
// no errors and no leaks and reads as the expected guest view; the CLI speaks qemu-img's
// messages and exit codes and leaves the file unchanged when it refuses; a power cut after any
// host write of a resize or amend leaves an image without corruption.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOurCli, runQemuImg, type CliRun, expectQemuClean } from './helpers/cli-runs.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { checkQcow2 } from '../bindings/qcow2/qcow2-check.js';
import { resizeQcow2 } from '../bindings/tools/resize.js';
import { amendQcow2 } from '../bindings/tools/amend.js';
import { convertToRaw, describeWithQemu, makeImage, qemuCheck, qemuImg, qemuInfo, type MakeImageOptions } from './helpers/qemu.js';
import { createCrashBackend } from './helpers/crash-backend.js';
import { makePrng } from './helpers/prng.js';
import { expectBytes } from './helpers/bytes.js';

const KiB = 1024;
const MiB = 1024 * KiB;

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-resize-amend-')); });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ours = (args: string[]): Promise<CliRun> => runOurCli(dir, args);
const theirs = (args: string[]): CliRun => runQemuImg(dir, args, true);

const expectClean = expectQemuClean;

/**
 * qemu-img compare finds the image at `path` equal to a flat disk of `size` bytes holding
 * `parts` (zeros elsewhere), written as a sparse raw file so large sizes stay cheap.
 */
function expectGuestView(path: string, size: number, parts: readonly [number, Uint8Array][], what: string): void {
  const reference = `${path}.expected.raw`;
  writeFileSync(reference, new Uint8Array(0));
  truncateSync(reference, size);
  const fd = openSync(reference, 'r+');
  try {
    for (const [offset, bytes] of parts) writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
  const result = qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', reference, path]);
  expect(result, `${what}: qemu-img compare`).toMatchObject({ code: 0, stdout: 'Images are identical.\n' });
}

/** The flat guest view `content` resized to `size` (new bytes read as zeros). */
function resized(content: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  out.set(content.subarray(0, Math.min(size, content.length)));
  return out;
}

const LAYOUTS: { name: string; options: Omit<MakeImageOptions, 'size' | 'ops'> }[] = [
  { name: 'v3 64 KiB', options: {} },
  { name: 'v2 4 KiB clusters', options: { compat: '0.10', clusterSize: 4096 } },
  { name: 'extended L2 512 B subclusters', options: { extendedL2: true, clusterSize: 16 * KiB } },
  { name: 'refcount_bits 2', options: { refcountBits: 2, clusterSize: 4096 } },
];

describeWithQemu('resize', () => {
  for (const [index, layout] of LAYOUTS.entries()) {
    it(`${layout.name}: grows past the L1 table, shrinks with --shrink, with a snapshot; qemu-img agrees`, async () => {
      const name = `resize-${index}.qcow2`;
      const path = makeImage(dir, name, {
        size: 3 * MiB, ...layout.options,
        ops: [{ op: 'write', offset: 0, length: 3 * MiB, pattern: 0x21 }, { op: 'zero', offset: MiB, length: 256 * KiB }],
      });
      expect(qemuImg(['snapshot', '-c', 'before', name], dir).code).toBe(0);
      const original = convertToRaw(path);
      // Grow far enough to need a larger L1 table (64 KiB clusters: one entry maps 512 MiB).
      const grown = 1100 * MiB;
      expect(await resizeQcow2(await openNodeBackend(path, { writable: true }), grown)).toBe(grown);
      expectClean(path, 'after growing');
      expect(qemuInfo(path)['virtual-size']).toBe(grown);
      const image = await Qcow2Image.open(await openNodeBackend(path, { writable: true }));
      const tail = makePrng(index).fill(new Uint8Array(100 * KiB));
      await image.write(grown - tail.length, tail);
      await image.close();
      expectGuestView(path, grown, [[0, original], [grown - tail.length, tail]], 'after growing and writing at the new end');

      // Shrink to a size that is not cluster-aligned, then grow again: the cut-off bytes read as zeros.
      const refused = await ours(['resize', name, '1000k']);
      expect(refused).toEqual(theirs(['resize', name, '1000k']));
      expect(refused.code).toBe(1);
      expect(await ours(['resize', '--shrink', name, '1000k'])).toEqual({ code: 0, stdout: 'Image resized.\n', stderr: '' });
      expectClean(path, 'after shrinking');
      expect(await ours(['resize', name, '+1M'])).toEqual({ code: 0, stdout: 'Image resized.\n', stderr: '' });
      expectClean(path, 'after growing again');
      expectBytes(convertToRaw(path), resized(original.subarray(0, 1000 * KiB), 2024 * KiB), 'guest view after shrink and grow');
      // The snapshot still holds its content, and QEMU can go back to it.
      expect(qemuImg(['snapshot', '-d', 'before', name], dir).code).toBe(0);
      expectClean(path, 'after qemu-img deleted the snapshot taken before the resizes');
    });
  }

  it('refuses bad input with qemu-img messages and exit codes, leaving the file unchanged', async () => {
    const path = makeImage(dir, 'resize-bad.qcow2', { size: MiB, ops: [{ op: 'write', offset: 0, length: MiB, pattern: 1 }] });
    makeImage(dir, 'resize-bad.raw', { size: MiB, format: 'raw' });
    const before = readFileSync(path);
    for (const args of [
      ['resize', 'resize-bad.qcow2', '512k'], ['resize', 'resize-bad.qcow2', '-100k'], ['resize', 'resize-bad.qcow2', '--', '-2M'],
      ['resize', 'resize-bad.qcow2', 'abc'], ['resize', 'resize-bad.qcow2'], ['resize'], ['resize', 'resize-bad.qcow2', '1M', 'x'],
      ['resize', '--shrink', 'resize-bad.qcow2', '0'], ['resize', 'missing.qcow2', '1M'], ['resize', 'resize-bad.raw', '512k'],
      ['resize', '--preallocation=bogus', 'resize-bad.qcow2', '2M'],
    ]) {
      const expected = theirs(args);
      expect(await ours(args), args.join(' ')).toEqual(expected);
      expect(expected.code, args.join(' ')).toBe(1);
      expect(Buffer.compare(readFileSync(path), before), `${args.join(' ')}: file unchanged`).toBe(0);
    }
    // Raw images are resized as files.
    expect(await ours(['resize', '-f', 'raw', 'resize-bad.raw', '2M'])).toEqual(theirs(['resize', '-f', 'raw', 'resize-bad.raw', '+0']));
    expect(readFileSync(join(dir, 'resize-bad.raw')).length).toBe(2 * MiB);
  });
});

describeWithQemu('amend', () => {
  it('compat 1.1 -> 0.10 -> 1.1 with zero clusters in the active image and a snapshot, with and without a backing file', async () => {
    makeImage(dir, 'amend-base.raw', { size: 2 * MiB, format: 'raw', ops: [{ op: 'write', offset: 0, length: 2 * MiB, pattern: 0x31 }] });
    for (const backing of [false, true]) {
      const name = `amend-${backing}.qcow2`;
      const path = makeImage(dir, name, {
        size: 2 * MiB, ...(backing ? { backingFile: 'amend-base.raw', backingFormat: 'raw' as const } : {}),
        ops: [{ op: 'write', offset: 64 * KiB, length: 128 * KiB, pattern: 0x32 }, { op: 'zero', offset: 0, length: 64 * KiB }, { op: 'zero', offset: MiB, length: 64 * KiB }],
      });
      expect(qemuImg(['snapshot', '-c', 'zeros', name], dir).code).toBe(0);
      const atSnapshot = convertToRaw(path);
      expect(qemuImg(['snapshot', '-c', 'zeros', name], dir).code).toBe(0);
      const active = convertToRaw(path);
      expect(await ours(['amend', '-o', 'compat=0.10', name])).toEqual({ code: 0, stdout: '', stderr: '' });
      expectClean(path, `${name}: after downgrading`);
      expect(qemuInfo(path)['format-specific']?.data.compat).toBe('0.10');
      expectBytes(convertToRaw(path), active, `${name}: active view after downgrading`);
      const snapshotRaw = join(dir, `${name}.snap.raw`);
      expect(qemuImg(['convert', '-l', 'snapshot.id=1', '-O', 'raw', name, snapshotRaw], dir).code).toBe(0);
      expectBytes(new Uint8Array(readFileSync(snapshotRaw)), atSnapshot, `${name}: snapshot view after downgrading`);
      expect(await ours(['amend', '-o', 'compat=1.1,lazy_refcounts=on,refcount_bits=64', name])).toMatchObject({ code: 0 });
      expectClean(path, `${name}: after upgrading`);
      expect(qemuInfo(path)['format-specific']?.data).toMatchObject({ compat: '1.1', 'lazy-refcounts': true, 'refcount-bits': 64 });
      expect(qemuInfo(path)['backing-filename']).toBe(backing ? 'amend-base.raw' : undefined);
      expectBytes(convertToRaw(path), active, `${name}: active view after upgrading`);
    }
  });

  it('refcount_bits narrower and wider; too narrow for a snapshot is refused like qemu-img', async () => {
    const path = makeImage(dir, 'amend-bits.qcow2', { size: MiB, ops: [{ op: 'write', offset: 0, length: 256 * KiB, pattern: 5 }] });
    const content = convertToRaw(path);
    for (const bits of [1, 2, 4, 8, 32, 64, 16]) {
      await amendQcow2(await openNodeBackend(path, { writable: true }), { refcountBits: bits });
      expectClean(path, `refcount_bits=${bits}`);
      expect(qemuInfo(path)['format-specific']?.data['refcount-bits']).toBe(bits);
    }
    expect(qemuImg(['snapshot', '-c', 's', 'amend-bits.qcow2'], dir).code).toBe(0);
    const before = readFileSync(path);
    const refused = await ours(['amend', '-o', 'refcount_bits=1', 'amend-bits.qcow2']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^qcow2-wasm: Cannot decrease refcount entry width to 1 bits: Cluster at offset 0x[0-9a-f]+ has a refcount of 2\n$/);
    expect(Buffer.compare(readFileSync(path), before)).toBe(0);
    expectBytes(convertToRaw(path), content, 'content');
  });

  it('refuses bad options with qemu-img messages and exit codes, leaving the file unchanged', async () => {
    const path = makeImage(dir, 'amend-bad.qcow2', { size: MiB, refcountBits: 8 });
    makeImage(dir, 'amend-v2.qcow2', { size: MiB, compat: '0.10' });
    makeImage(dir, 'amend-l2.qcow2', { size: MiB, extendedL2: true });
    const before = readFileSync(path);
    for (const args of [
      ['amend', 'amend-bad.qcow2'], ['amend', '-o', 'foo=bar', 'amend-bad.qcow2'], ['amend', '-o', 'cluster_size=4096', 'amend-bad.qcow2'],
      ['amend', '-o', 'backing_file=x', 'amend-bad.qcow2'], ['amend', '-o', 'compat=2', 'amend-bad.qcow2'],
      ['amend', '-o', 'lazy_refcounts=maybe', 'amend-bad.qcow2'], ['amend', '-o', 'refcount_bits=3', 'amend-bad.qcow2'],
      ['amend', '-o', 'refcount_bits=x', 'amend-bad.qcow2'], ['amend', '-o', 'compat=0.10', 'amend-bad.qcow2'],
      ['amend', '-o', 'lazy_refcounts=on', 'amend-v2.qcow2'], ['amend', '-o', 'refcount_bits=8', 'amend-v2.qcow2'],
      ['amend', '-o', 'compat=0.10', 'amend-l2.qcow2'], ['amend', '-f', 'raw', '-o', 'compat=0.10', 'amend-bad.qcow2'],
      ['amend', '-o', 'compat=1.1', 'missing.qcow2'],
    ]) {
      const expected = theirs(args);
      expect(await ours(args), args.join(' ')).toEqual(expected);
      expect(expected.code, args.join(' ')).toBe(1);
      expect(Buffer.compare(readFileSync(path), before), `${args.join(' ')}: file unchanged`).toBe(0);
    }
  });
});

describeWithQemu('resize and amend: a power cut after every host write', () => {
  it('every crash state opens, reads as before or after, and has no corruption', async () => {
    const path = makeImage(dir, 'crash-ra.qcow2', {
      size: 2 * MiB, clusterSize: 4096, ops: [{ op: 'write', offset: 0, length: 2 * MiB, pattern: 0x71 }, { op: 'zero', offset: 512 * KiB, length: 64 * KiB }],
    });
    expect(qemuImg(['snapshot', '-c', 's', 'crash-ra.qcow2'], dir).code).toBe(0);
    const backend = createCrashBackend(new Uint8Array(readFileSync(path)));
    const steps: [string, () => Promise<unknown>][] = [
      ['grow', () => resizeQcow2(backend, 64 * MiB)],
      ['shrink', () => resizeQcow2(backend, MiB + 512, { shrink: true })],
      ['refcount_bits=4', () => amendQcow2(backend, { refcountBits: 4 })],
      ['compat=0.10', () => amendQcow2(backend, { compat: '0.10', refcountBits: 16 })],
      ['compat=1.1', () => amendQcow2(backend, { compat: '1.1' })],
    ];
    const views: Uint8Array[] = [];
    const view = async (bytes: Uint8Array) => {
      const image = await Qcow2Image.open(createMemoryBackend(bytes, { writable: false }));
      const size = Math.min(image.virtualSize, 2 * MiB);
      const content = resized(await image.read(0, size), 2 * MiB);
      await image.close();
      return content;
    };
    views.push(await view(backend.snapshot()));
    const boundaries: number[] = [];
    for (const [, step] of steps) {
      await step();
      boundaries.push(backend.mark());
      views.push(await view(backend.snapshot()));
    }
    const replay = backend.replay();
    let states = 0;
    for (let k = 0; k < backend.writes.length; k++) {
      replay.advance(k);
      const step = boundaries.findIndex((b) => replay.cutClock(k) < b);
      for (let s = 0; s < 2; s++) {
        const state = s === 0 ? replay.fullState() : replay.state(makePrng(k), 0.5);
        const what = `cut after host write ${k} of ${backend.writes.length} (during ${step < 0 ? 'the end' : steps[step][0]}), state ${s}`;
        const content = await view(state.bytes);
        const allowed = step < 0 ? [views[views.length - 1]] : [views[step], views[step + 1]];
        expect(allowed.some((v) => Buffer.compare(v, content) === 0), `${what}: content neither before nor after`).toBe(true);
        const report = await checkQcow2(createMemoryBackend(state.bytes, { writable: false }));
        expect({ corruptions: report.corruptions, checkErrors: report.checkErrors }, `${what}: check`).toEqual({ corruptions: 0, checkErrors: 0 });
        if (s === 0 && k % 4 === 0) {
          const statePath = join(dir, 'crash-ra-state.qcow2');
          writeFileSync(statePath, state.bytes);
          const qemu = qemuCheck(statePath);
          expect({ corruptions: qemu.corruptions ?? 0, checkErrors: qemu['check-errors'] }, `${what}: qemu-img check`).toEqual({ corruptions: 0, checkErrors: 0 });
        }
        states++;
      }
    }
    console.log(`resize/amend crash run: ${backend.writes.length} host writes, ${states} crash states verified`);
    expect(states).toBeGreaterThan(20);
  }, 300_000);
});
