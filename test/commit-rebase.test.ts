// SPDX-License-Identifier: MIT
// commit and rebase (library and CLI) against qemu-img: the images pass qemu-img check with no
// errors and no leaks, the chain reads as before, the base holds what qemu-img commit puts there,
// rebase -c stores compressed the clusters qemu-img rebase copies;
// bad input gets qemu-img's message and exit code and changes nothing; a power cut after any host
// write of a commit (into the base, then emptying the overlay) leaves the chain reading the same.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOurCli, runQemuImg, type CliRun, expectQemuClean } from './helpers/cli-runs.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { checkQcow2 } from '../bindings/qcow2/qcow2-check.js';
import { commitImage } from '../bindings/tools/commit.js';
import { createQcow2 } from '../bindings/qcow2/qcow2-create.js';
import { convertToRaw, describeWithQemu, makeImage, qemuCheck, qemuImg, qemuInfo, qemuMap, type ImageOp } from './helpers/qemu.js';
import { createCrashBackend } from './helpers/crash-backend.js';
import { makePrng } from './helpers/prng.js';
import { expectBytes } from './helpers/bytes.js';

const KiB = 1024;
const MiB = 1024 * KiB;

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-commit-rebase-')); });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ours = (args: string[]): Promise<CliRun> => runOurCli(dir, args);
const theirs = (args: string[]): CliRun => runQemuImg(dir, args, true);
const expectClean = expectQemuClean;

const TOP_OPS: ImageOp[] = [
  { op: 'write', offset: MiB, length: 200 * KiB, pattern: 0x12 },
  { op: 'zero', offset: 0, length: 64 * KiB },
  { op: 'compressed', offset: 2 * MiB, length: 128 * KiB, pattern: 0x13 },
  { op: 'write', offset: 5 * MiB, length: 64 * KiB, pattern: 0x14 },
];

/** A base (qcow2 or raw, 4 MiB of data 0x11) and a 6 MiB overlay on it with TOP_OPS. */
function makeChain(prefix: string, baseFormat: 'qcow2' | 'raw', compat?: '0.10'): { base: string; top: string } {
  const baseName = `${prefix}-base.${baseFormat}`;
  const base = makeImage(dir, baseName, { size: 4 * MiB, format: baseFormat, ...(compat ? { compat } : {}), ops: [{ op: 'write', offset: 0, length: 3 * MiB, pattern: 0x11 }] });
  const top = makeImage(dir, `${prefix}-top.qcow2`, { size: 6 * MiB, backingFile: baseName, backingFormat: baseFormat, ...(compat ? { compat } : {}), ops: TOP_OPS });
  return { base, top };
}

describeWithQemu('commit', () => {
  for (const [baseFormat, compat] of [['qcow2', undefined], ['raw', undefined], ['qcow2', '0.10']] as const) {
    it(`into a ${baseFormat} base${compat ? ` (compat ${compat})` : ''}: the same base as qemu-img commit, the overlay emptied`, async () => {
      const prefix = `c-${baseFormat}-${compat ?? 'v3'}`;
      const { base, top } = makeChain(prefix, baseFormat, compat);
      const { base: qemuBase, top: qemuTop } = makeChain(`${prefix}-qemu`, baseFormat, compat);
      const expected = convertToRaw(top);
      expect(theirs(['commit', `${prefix}-qemu-top.qcow2`])).toEqual({ code: 0, stdout: 'Image committed.\n', stderr: '' });
      expect(await ours(['commit', `${prefix}-top.qcow2`])).toEqual({ code: 0, stdout: 'Image committed.\n', stderr: '' });
      expectClean(top, 'overlay');
      if (baseFormat === 'qcow2') expectClean(base, 'base');
      expectBytes(convertToRaw(top), expected, 'the chain reads as before');
      expectBytes(convertToRaw(base, baseFormat), expected, 'the base holds the chain');
      expectBytes(convertToRaw(base, baseFormat), convertToRaw(qemuBase, baseFormat), 'the base qemu-img commit makes');
      expect(qemuInfo(base, baseFormat)['virtual-size']).toBe(6 * MiB);
      // Emptied: everything comes from the base, as after qemu-img commit.
      expect(qemuMap(top).filter((e) => e.depth === 0 && e.present)).toEqual([]);
      expect(qemuMap(qemuTop).filter((e) => e.depth === 0 && e.present)).toEqual([]);
    });
  }

  it('-d keeps the overlay, -p prints qemu-img progress, with a snapshot in the overlay', async () => {
    const { base, top } = makeChain('keep', 'qcow2');
    expect(qemuImg(['snapshot', '-c', 's', 'keep-top.qcow2'], dir).code).toBe(0);
    const before = qemuMap(top).filter((e) => e.depth === 0 && e.present);
    const expected = convertToRaw(top);
    const run = await ours(['commit', '-d', '-p', 'keep-top.qcow2']);
    expect(run.code).toBe(0);
    expect(run.stdout.startsWith('    (0.00/100%)\r')).toBe(true);
    expect(run.stdout.endsWith('    (100.00/100%)\r\nImage committed.\n')).toBe(true);
    expect(qemuMap(top).filter((e) => e.depth === 0 && e.present)).toEqual(before);
    expectBytes(convertToRaw(base), expected, 'base');
    expect(await ours(['commit', '-q', 'keep-top.qcow2'])).toEqual({ code: 0, stdout: '', stderr: '' });
    expectClean(top, 'emptied overlay with a snapshot');
    expectBytes(convertToRaw(top), expected, 'chain');
    expect(qemuImg(['snapshot', '-a', 's', 'keep-top.qcow2'], dir).code).toBe(0);
    expectBytes(convertToRaw(top), expected, 'the snapshot still holds the overlay as it was');
  });

  it('bad input: qemu-img messages and exit codes, files unchanged', async () => {
    const { base, top } = makeChain('bad', 'qcow2');
    makeImage(dir, 'bad-alone.qcow2', { size: MiB });
    makeImage(dir, 'bad-alone.raw', { size: MiB, format: 'raw' });
    const files = [base, top].map((path) => [path, readFileSync(path)] as const);
    for (const args of [
      ['commit', 'bad-alone.qcow2'], ['commit', 'bad-alone.raw'], ['commit', '-f', 'raw', 'bad-alone.raw'], ['commit'],
      ['commit', '-b', 'other.qcow2', 'bad-top.qcow2'], ['commit', 'missing.qcow2'], ['commit', 'bad-top.qcow2', 'x'],
    ]) {
      const expected = theirs(args);
      expect(await ours(args), args.join(' ')).toEqual(expected);
      expect(expected.code, args.join(' ')).toBe(1);
      for (const [path, bytes] of files) expect(Buffer.compare(readFileSync(path), bytes), `${args.join(' ')}: ${path} unchanged`).toBe(0);
    }
  });
});

it('commitImage refuses a read-only base and an overlay without backing file, changing nothing', async () => {
  const baseFile = createMemoryBackend(0);
  await createQcow2(baseFile, { virtualSize: MiB });
  const baseBytes = new Uint8Array(await baseFile.getSize());
  await baseFile.preadv(0, [baseBytes]);
  const alone = await Qcow2Image.create(createMemoryBackend(0), { virtualSize: MiB });
  const writableBase = await Qcow2Image.open(baseFile);
  await expect(commitImage(alone, writableBase)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: 'Image does not have a backing file' });
  const top = await Qcow2Image.create(createMemoryBackend(0), {
    virtualSize: MiB, backingFile: 'base', backingFormat: 'qcow2', openBacking: async () => createMemoryBackend(baseBytes, { writable: false }),
  });
  await top.write(0, new Uint8Array(4096).fill(7));
  const readOnlyBase = await Qcow2Image.open(createMemoryBackend(baseBytes, { writable: false }));
  await expect(commitImage(top, readOnlyBase)).rejects.toMatchObject({ code: 'IMAGE_READ_ONLY' });
  expect((await top.read(0, 1))[0]).toBe(7);
  expect((await writableBase.read(0, 1))[0]).toBe(0);
  await Promise.all([top.close(), readOnlyBase.close(), alone.close(), writableBase.close()]);
});

describeWithQemu('rebase', () => {
  it('safe rebase copies what differs; -b "" drops the backing file; -u only renames', async () => {
    const old = makeImage(dir, 'r-old.qcow2', { size: 4 * MiB, ops: [{ op: 'write', offset: 0, length: 2 * MiB, pattern: 1 }] });
    makeImage(dir, 'r-new.qcow2', { size: 2 * MiB, compat: '0.10', ops: [{ op: 'write', offset: 0, length: MiB, pattern: 1 }, { op: 'write', offset: 1536 * KiB, length: 64 * KiB, pattern: 4 }] });
    const top = makeImage(dir, 'r-top.qcow2', { size: 4 * MiB, backingFile: 'r-old.qcow2', backingFormat: 'qcow2', ops: [{ op: 'write', offset: 0, length: 64 * KiB, pattern: 9 }] });
    const qemuTop = join(dir, 'r-top-qemu.qcow2');
    copyFileSync(top, qemuTop);
    const expected = convertToRaw(top);
    expect(await ours(['rebase', '-b', 'r-new.qcow2', '-F', 'qcow2', 'r-top.qcow2'])).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(theirs(['rebase', '-b', 'r-new.qcow2', '-F', 'qcow2', 'r-top-qemu.qcow2']).code).toBe(0);
    expectClean(top, 'after rebase');
    expect(qemuInfo(top)).toMatchObject({ 'backing-filename': 'r-new.qcow2', 'backing-filename-format': 'qcow2' });
    expectBytes(convertToRaw(top), expected, 'reads as before over the new backing file');
    // The same clusters copied as qemu-img rebase copies (host offsets aside).
    const layout = (path: string) => qemuMap(path).map(({ offset: _offset, ...entry }) => entry);
    expect(layout(top)).toEqual(layout(qemuTop));
    expect(await ours(['rebase', '-p', '-b', '', 'r-top.qcow2'])).toMatchObject({ code: 0 });
    expectClean(top, 'after dropping the backing file');
    expect(qemuInfo(top)['backing-filename']).toBeUndefined();
    expectBytes(convertToRaw(top), expected, 'reads as before without a backing file');
    expect(await ours(['rebase', '-u', '-b', 'r-old.qcow2', '-F', 'qcow2', 'r-top.qcow2'])).toEqual({ code: 0, stdout: '', stderr: '' });
    expectClean(top, 'after an unsafe rebase');
    expect(qemuInfo(top)).toMatchObject({ 'backing-filename': 'r-old.qcow2', 'backing-filename-format': 'qcow2' });
    expect(old).toBe(join(dir, 'r-old.qcow2'));
  });

  it('rebase -c stores the copied clusters compressed (zlib and zstd): the clusters qemu-img rebase copies, zeros as zero clusters', async () => {
    for (const compressionType of ['zlib', 'zstd'] as const) {
      const prefix = `rc-${compressionType}`;
      // The old backing file: data, a range of zeros over data of the new one, a short last cluster.
      makeImage(dir, `${prefix}-new.qcow2`, { size: 4 * MiB + 4 * KiB, ops: [{ op: 'write', offset: 3 * MiB, length: 256 * KiB, pattern: 6 }] });
      makeImage(dir, `${prefix}-old.qcow2`, { size: 4 * MiB + 4 * KiB, ops: [
        { op: 'write', offset: 0, length: 2 * MiB, pattern: 1 }, { op: 'write', offset: 4 * MiB, length: 4 * KiB, pattern: 2 },
      ] });
      const top = makeImage(dir, `${prefix}-top.qcow2`, {
        size: 4 * MiB + 4 * KiB, compressionType, backingFile: `${prefix}-old.qcow2`, backingFormat: 'qcow2',
        ops: [{ op: 'write', offset: 0, length: 64 * KiB, pattern: 9 }],
      });
      copyFileSync(top, join(dir, `${prefix}-plain.qcow2`));
      const expected = convertToRaw(top);
      expect(await ours(['rebase', '-c', '-b', `${prefix}-new.qcow2`, '-F', 'qcow2', `${prefix}-top.qcow2`])).toEqual({ code: 0, stdout: '', stderr: '' });
      expect(theirs(['rebase', '-b', `${prefix}-new.qcow2`, '-F', 'qcow2', `${prefix}-plain.qcow2`]).code).toBe(0);
      expectClean(top, `${compressionType}: after rebase -c`);
      expectBytes(convertToRaw(top), expected, `${compressionType}: reads as before over the new backing file`);
      // The clusters qemu-img rebase copies (as data) are here too: compressed where they held
      // data, zero clusters where the old chain read zeros (3 MiB to 3.25 MiB).
      const present = (path: string) => qemuMap(path).filter((e) => e.depth === 0).reduce<number[][]>((ranges, { start, length }) => {
        const last = ranges[ranges.length - 1];
        if (last && last[0] + last[1] === start) last[1] += length;
        else ranges.push([start, length]);
        return ranges;
      }, []);
      expect(present(top), compressionType).toEqual(present(join(dir, `${prefix}-plain.qcow2`)));
      const copiedDataClusters = (2 * MiB - 64 * KiB) / (64 * KiB) + 1;
      expect(qemuCheck(top)['compressed-clusters'], compressionType).toBe(copiedDataClusters);
      expect(qemuMap(top).filter((e) => e.depth === 0 && e.zero).map(({ start, length }) => [start, length]), compressionType).toEqual([[3 * MiB, 256 * KiB]]);
    }
    // As qemu-img 8.2: -c on a raw image is refused; -c with -u only renames.
    makeImage(dir, 'rc-raw.raw', { size: MiB, format: 'raw' });
    expect(await ours(['rebase', '-c', '-b', 'rc-zlib-old.qcow2', '-F', 'qcow2', '-f', 'raw', 'rc-raw.raw']))
      .toEqual({ code: 1, stdout: '', stderr: 'qcow2-wasm: Compression not supported for this file format\n' });
    expect(await ours(['rebase', '-c', '-u', '-b', 'rc-zlib-old.qcow2', '-F', 'qcow2', 'rc-zstd-top.qcow2'])).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(qemuInfo(join(dir, 'rc-zstd-top.qcow2'))['backing-filename']).toBe('rc-zlib-old.qcow2');
  });

  it('bad input: qemu-img messages and exit codes, files unchanged', async () => {
    makeImage(dir, 'rb-old.qcow2', { size: MiB });
    const top = makeImage(dir, 'rb-top.qcow2', { size: MiB, backingFile: 'rb-old.qcow2', backingFormat: 'qcow2' });
    const before = readFileSync(top);
    for (const args of [
      ['rebase', 'rb-top.qcow2'], ['rebase', '-b', 'rb-old.qcow2', 'rb-top.qcow2'], ['rebase', '-b', 'missing.qcow2', '-F', 'qcow2', 'rb-top.qcow2'],
      ['rebase', '-b', 'rb-old.qcow2', '-F', 'qcow2'], ['rebase', '-b', 'rb-old.qcow2', '-F', 'qcow2', 'missing-top.qcow2'],
    ]) {
      const expected = theirs(args);
      expect(await ours(args), args.join(' ')).toEqual(expected);
      expect(expected.code, args.join(' ')).toBe(1);
      expect(Buffer.compare(readFileSync(top), before), `${args.join(' ')}: file unchanged`).toBe(0);
    }
  });
});

describeWithQemu('commit: a power cut after every host write', () => {
  it('the chain reads the same in every crash state of the base and of the overlay, without corruption', async () => {
    const baseBytes = new Uint8Array(readFileSync(makeImage(dir, 'crash-base.qcow2', { size: 2 * MiB, clusterSize: 4096, ops: [{ op: 'write', offset: 0, length: 2 * MiB, pattern: 0x21 }] })));
    const topBytes = new Uint8Array(readFileSync(makeImage(dir, 'crash-top.qcow2', {
      size: 2 * MiB, clusterSize: 4096, backingFile: 'crash-base.qcow2', backingFormat: 'qcow2',
      ops: [
        { op: 'write', offset: 100 * KiB, length: 300 * KiB, pattern: 0x22 }, { op: 'zero', offset: MiB, length: 64 * KiB },
        { op: 'compressed', offset: 1536 * KiB, length: 16 * KiB, pattern: 0x23 }, { op: 'write', offset: 600 * KiB, length: 4 * KiB, pattern: 0x24 },
        { op: 'zero', offset: 700 * KiB, length: 8 * KiB }, { op: 'write', offset: 1800 * KiB, length: 12 * KiB, pattern: 0x25 },
      ],
    })));
    const baseBackend = createCrashBackend(baseBytes);
    const topBackend = createCrashBackend(topBytes);
    const overlay = await Qcow2Image.open(topBackend, { openBacking: async () => createMemoryBackend(baseBytes, { writable: false }) });
    const expected = await overlay.read(0, 2 * MiB);
    const base = await Qcow2Image.open(baseBackend);
    await commitImage(overlay, base);
    await Promise.all([overlay.close(), base.close()]);
    const finalBase = baseBackend.snapshot();

    const chainView = async (top: Uint8Array, backing: Uint8Array) => {
      const image = await Qcow2Image.open(createMemoryBackend(top, { writable: false }), { openBacking: async () => createMemoryBackend(backing, { writable: false }) });
      const content = await image.read(0, 2 * MiB);
      await image.close();
      return content;
    };
    const prng = makePrng(99);
    let states = 0;
    for (const [which, backend, other] of [['base', baseBackend, topBytes], ['overlay', topBackend, finalBase]] as const) {
      const replay = backend.replay();
      for (let k = 0; k < backend.writes.length; k++) {
        replay.advance(k);
        for (let s = 0; s < 2; s++) {
          const state = s === 0 ? replay.fullState() : replay.state(prng, 0.5);
          const what = `${which}: cut after host write ${k} of ${backend.writes.length}, state ${s}`;
          const view = which === 'base' ? await chainView(other, state.bytes) : await chainView(state.bytes, other);
          expect(Buffer.compare(view, expected), `${what}: the chain reads differently`).toBe(0);
          const report = await checkQcow2(createMemoryBackend(state.bytes, { writable: false }));
          expect({ corruptions: report.corruptions, checkErrors: report.checkErrors }, `${what}: check`).toEqual({ corruptions: 0, checkErrors: 0 });
          states++;
        }
      }
    }
    console.log(`commit crash run: ${baseBackend.writes.length} base and ${topBackend.writes.length} overlay host writes, ${states} crash states verified`);
    expect(topBackend.writes.length).toBeGreaterThan(2);
    expect(baseBackend.writes.length).toBeGreaterThan(2);
  }, 300_000);
});
