// SPDX-License-Identifier: MIT
// Internal snapshots written by this engine (create with VM state, apply, delete), with QEMU as
// the oracle: qemu-img check finds no errors and no leaks, qemu-img applies and deletes our
// snapshots, we apply and delete QEMU's, the guest view matches a flat reference each time; a
// power cut after any host write of a snapshot operation leaves an image without corruption.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { checkQcow2 } from '../bindings/qcow2/qcow2-check.js';
import { createSnapshot, deleteSnapshot, SnapshotNotFoundError } from '../bindings/qcow2/qcow2-snapshot-ops.js';
import { ImageError } from '../bindings/base/errors.js';
import { convertToRaw, describeWithQemu, makeImage, qemuCheck, qemuImg, qemuIo, type MakeImageOptions } from './helpers/qemu.js';
import { createCrashBackend } from './helpers/crash-backend.js';
import { makePrng } from './helpers/prng.js';
import { expectBytes } from './helpers/bytes.js';

const KiB = 1024;
const MiB = 1024 * KiB;

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-snapshots-')); });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Opens `path` writable with its backing files beside it. */
async function openWritable(path: string): Promise<Qcow2Image> {
  return Qcow2Image.open(await openNodeBackend(path, { writable: true }), {
    openBacking: (name) => openNodeBackend(join(dir, name), { writable: false }),
  });
}

/** qemu-img check finds nothing at all (no corruption, no leak, no check error). */
function expectClean(path: string, what: string): void {
  const report = qemuCheck(path);
  expect({ exitCode: report.exitCode, corruptions: report.corruptions ?? 0, leaks: report.leaks ?? 0, checkErrors: report['check-errors'] }, `${what}: qemu-img check`)
    .toEqual({ exitCode: 0, corruptions: 0, leaks: 0, checkErrors: 0 });
}

/** Runs qemu-img and fails the test on a non-zero exit. */
function qemuImgOk(args: string[]): string {
  const result = qemuImg(args, dir);
  expect(result.code, `qemu-img ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

const SETTINGS: { name: string; options: Omit<MakeImageOptions, 'ops' | 'size'> }[] = [
  { name: 'v3, 64 KiB clusters', options: {} },
  { name: 'v2 (compat 0.10)', options: { compat: '0.10' } },
  { name: '4 KiB clusters, refcount_bits 8', options: { clusterSize: 4096, refcountBits: 8 } },
  { name: 'extended L2, 32 KiB clusters', options: { extendedL2: true, clusterSize: 32 * KiB } },
  { name: 'refcount_bits 64, zstd', options: { refcountBits: 64, compressionType: 'zstd' } },
];

describeWithQemu('internal snapshots against qemu-img', () => {
  for (const [index, setting] of SETTINGS.entries()) {
    it(`${setting.name}: our snapshot survives writes; qemu-img applies and deletes it`, async () => {
      const size = 8 * MiB;
      const name = `ours-${index}.qcow2`;
      const path = makeImage(dir, name, {
        size, ...setting.options,
        ops: [
          { op: 'write', offset: 0, length: 300 * KiB, pattern: 0x11 },
          { op: 'compressed', offset: 2 * MiB, length: 128 * KiB, pattern: 0x22 },
          { op: 'zero', offset: 64 * KiB, length: 64 * KiB },
          { op: 'write', offset: 7 * MiB, length: 8 * KiB, pattern: 0x33 },
        ],
      });
      const before = convertToRaw(path);
      const image = await openWritable(path);
      const prng = makePrng(1000 + index);
      // Writes in flight when the snapshot is taken are in it; later ones are not.
      const early = prng.fill(new Uint8Array(10 * KiB));
      const pendingEarly = image.write(500 * KiB, early);
      const created = image.createSnapshot('first');
      const late = prng.fill(new Uint8Array(200 * KiB));
      const pendingLate = [image.write(100 * KiB, late), image.write(2 * MiB + 4 * KiB, late.subarray(0, 4 * KiB)), image.writeZeroes(7 * MiB, 64 * KiB)];
      await Promise.all([pendingEarly, created, ...pendingLate]);
      expect((await created).name).toBe('first');
      const inSnapshot = before.slice();
      inSnapshot.set(early, 500 * KiB);
      const active = inSnapshot.slice();
      active.set(late, 100 * KiB);
      active.set(late.subarray(0, 4 * KiB), 2 * MiB + 4 * KiB);
      active.fill(0, 7 * MiB, 7 * MiB + 64 * KiB);
      expectBytes(await image.read(0, size), active, 'active image after the snapshot');
      await image.close();

      expectClean(path, 'after our create and later writes');
      expectBytes(convertToRaw(path), active, 'qemu-img reads the active image');
      const snapshotView = new Uint8Array(qemuImg(['convert', '-O', 'raw', '-l', 'snapshot.name=first', name, `${name}.snap.raw`], dir).code === 0
        ? readFileSync(join(dir, `${name}.snap.raw`)) : new Uint8Array(0));
      expectBytes(snapshotView, inSnapshot, 'qemu-img reads our snapshot');

      // QEMU applies our snapshot (on a copy) and deletes it.
      const copy = join(dir, `${name}.copy`);
      copyFileSync(path, copy);
      qemuImgOk(['snapshot', '-a', 'first', copy]);
      expectClean(copy, 'qemu-img applied our snapshot');
      expectBytes(convertToRaw(copy), inSnapshot, 'after qemu-img snapshot -a');
      qemuImgOk(['snapshot', '-d', 'first', path]);
      expectClean(path, 'qemu-img deleted our snapshot');
      expectBytes(convertToRaw(path), active, 'after qemu-img snapshot -d');
    });

    it(`${setting.name}: we apply and delete QEMU's snapshots`, async () => {
      const size = 4 * MiB;
      const name = `theirs-${index}.qcow2`;
      const path = makeImage(dir, name, { size, ...setting.options, ops: [{ op: 'write', offset: 0, length: 200 * KiB, pattern: 0x41 }] });
      qemuImgOk(['snapshot', '-c', 'a', name]);
      const atA = convertToRaw(path);
      const io = qemuIo(['-c', 'write -q -P 0x42 64k 192k', '-c', 'write -q -c -P 0x43 1M 64k', path], dir);
      expect(io.code, io.stderr).toBe(0);
      qemuImgOk(['snapshot', '-c', 'b', name]);
      const atB = convertToRaw(path);
      expect(qemuIo(['-c', 'write -q -P 0x44 0 4k', '-c', 'write -q -z 1M 64k', path], dir).code).toBe(0);
      const latest = convertToRaw(path);

      const image = await openWritable(path);
      expect((await image.snapshots()).map((s) => s.name)).toEqual(['a', 'b']);
      await image.applySnapshot('a');
      expectBytes(await image.read(0, size), atA, 'after our apply of a');
      await image.write(0, new Uint8Array(4 * KiB).fill(0x45));
      await image.deleteSnapshot('a');
      await image.close();
      expectClean(path, 'after our apply of a, a write, our delete of a');
      const expected = atA.slice();
      expected.fill(0x45, 0, 4 * KiB);
      expectBytes(convertToRaw(path), expected, 'qemu-img reads the active image');
      qemuImgOk(['snapshot', '-a', 'b', name]);
      expectClean(path, 'qemu-img applied b after our changes');
      expectBytes(convertToRaw(path), atB, 'snapshot b kept its content');
      expect(latest.length).toBe(size);

      const again = await openWritable(path);
      await again.applySnapshot('2');
      await again.deleteSnapshot('b');
      expect(await again.snapshots()).toEqual([]);
      expectBytes(await again.read(0, size), atB, 'apply by id');
      await again.close();
      expectClean(path, 'after deleting the last snapshot');
    });
  }

  it('a seeded run of writes, zeroes and snapshot create/apply/delete on one open image matches a model', async () => {
    const seed = Number(process.env.QCOW2_WASM_SEED ?? 20261206);
    const prng = makePrng(seed);
    const size = 6 * MiB;
    const path = makeImage(dir, 'model.qcow2', { size, clusterSize: 16 * KiB });
    const image = await openWritable(path);
    let active = new Uint8Array(size);
    const snapshots = new Map<string, Uint8Array>();
    let counter = 0;
    for (let step = 0; step < 80; step++) {
      const what = `seed ${seed} (QCOW2_WASM_SEED), step ${step}`;
      const roll = prng.int(10);
      const names = [...snapshots.keys()];
      if (roll < 5) {
        // Writes in flight together, unaligned, some across clusters.
        const writes = Array.from({ length: 1 + prng.int(4) }, () => {
          const length = 1 + prng.int(40 * KiB);
          const offset = prng.int(size - length);
          return { offset, data: prng.fill(new Uint8Array(length)) };
        });
        await Promise.all(writes.map((w) => image.write(w.offset, w.data)));
        for (const w of writes) active.set(w.data, w.offset);
      } else if (roll === 5) {
        const length = 1 + prng.int(200 * KiB);
        const offset = prng.int(size - length);
        await image.writeZeroes(offset, length);
        active.fill(0, offset, offset + length);
      } else if (roll <= 7 || names.length === 0) {
        const name = `s${counter++}`;
        // A write submitted just before the snapshot is in it.
        const offset = prng.int(size - 512);
        const pending = image.write(offset, new Uint8Array(512).fill(0xee));
        await Promise.all([pending, image.createSnapshot(name)]);
        active.fill(0xee, offset, offset + 512);
        snapshots.set(name, active.slice());
      } else if (roll === 8) {
        const name = names[prng.int(names.length)];
        await image.applySnapshot(name);
        active = snapshots.get(name)!.slice();
      } else {
        const name = names[prng.int(names.length)];
        await image.deleteSnapshot(name);
        snapshots.delete(name);
      }
      if (step % 10 === 9) expectBytes(await image.read(0, size), active, `${what}: active image`);
    }
    expectBytes(await image.read(0, size), active, `seed ${seed}: active image at the end`);
    expect((await image.snapshots()).map((s) => s.name)).toEqual([...snapshots.keys()]);
    await image.close();
    expectClean(path, `seed ${seed}: after the run`);
    expectBytes(convertToRaw(path), active, `seed ${seed}: qemu-img reads the active image`);
    for (const [name, content] of snapshots) {
      const out = join(dir, `model-${name}.raw`);
      expect(qemuImg(['convert', '-O', 'raw', '-l', `snapshot.name=${name}`, 'model.qcow2', out], dir).code).toBe(0);
      expectBytes(new Uint8Array(readFileSync(out)), content, `seed ${seed}: snapshot ${name} as qemu-img reads it`);
    }
  }, 120_000);

  it('keeps VM state where QEMU keeps it: readable back, listed, deleted by qemu-img', async () => {
    const name = 'vmstate.qcow2';
    const path = makeImage(dir, name, { size: 3 * MiB + 512, ops: [{ op: 'write', offset: 0, length: 128 * KiB, pattern: 0x51 }] });
    const state = makePrng(77).fill(new Uint8Array(1 * MiB + 12345));
    const image = await openWritable(path);
    const snapshot = await image.createSnapshot('machine', { vmState: state, vmClockNanoseconds: 3_723_456_000_000 });
    expect(snapshot.vmStateBytes).toBe(state.length);
    await image.write(0, new Uint8Array(64 * KiB).fill(0x52));
    const small = await image.createSnapshot('small', { vmState: new Uint8Array([1, 2, 3]) });
    expectBytes(await image.readSnapshotVmState('machine'), state, 'VM state read back');
    expectBytes(await image.readSnapshotVmState(small.id), new Uint8Array([1, 2, 3]), 'a small VM state');
    await image.close();
    expectClean(path, 'after two snapshots with VM state');
    const listed = qemuImgOk(['snapshot', '-l', name]).split('\n').filter((line) => line.includes('machine'))[0];
    expect(listed).toMatch(/^1 {9}machine {10}1\.01 MiB \d{4}-\d\d-\d\d \d\d:\d\d:\d\d 01:02:03\.456 {10}0$/);
    const info = JSON.parse(qemuImgOk(['info', '--output=json', name])) as { snapshots: { 'vm-state-size': number }[] };
    expect(info.snapshots.map((s) => s['vm-state-size'])).toEqual([state.length, 3]);
    qemuImgOk(['snapshot', '-d', 'machine', name]);
    expectClean(path, 'qemu-img deleted a snapshot with VM state');
    const reopened = await openWritable(path);
    await expect(reopened.readSnapshotVmState('machine')).rejects.toBeInstanceOf(SnapshotNotFoundError);
    expectBytes(await reopened.readSnapshotVmState('small'), new Uint8Array([1, 2, 3]), 'the other VM state');
    await reopened.deleteSnapshot('small');
    await reopened.close();
    expectClean(path, 'after our delete of the other');
  });

  it('refuses what it cannot do, changing nothing on disk', async () => {
    const path = makeImage(dir, 'refuse.qcow2', { size: MiB, refcountBits: 1, ops: [{ op: 'write', offset: 0, length: 64 * KiB, pattern: 1 }] });
    const before = readFileSync(path);
    const image = await openWritable(path);
    await expect(image.applySnapshot('nope')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: "no snapshot named 'nope'" });
    await expect(image.deleteSnapshot('nope')).rejects.toBeInstanceOf(SnapshotNotFoundError);
    // refcount_bits=1 cannot count a cluster shared by a snapshot (QEMU refuses too).
    await expect(image.createSnapshot('x')).rejects.toMatchObject({ code: 'QCOW2_UNSUPPORTED_FEATURE' });
    expect((await image.read(0, 1))[0]).toBe(1);
    await image.close();
    expect(Buffer.compare(readFileSync(path), before), 'file unchanged').toBe(0);
    const readOnly = await Qcow2Image.open(await openNodeBackend(path, { writable: false }));
    await expect(readOnly.createSnapshot('x')).rejects.toMatchObject({ code: 'IMAGE_READ_ONLY' });
    await readOnly.close();
    // Tables an open image's core could not hold are refused before anything is written.
    const roomy = makeImage(dir, 'capacity.qcow2', { size: MiB, ops: [{ op: 'write', offset: 0, length: 64 * KiB, pattern: 2 }] });
    const roomyBefore = readFileSync(roomy);
    await expect(createSnapshot(await openNodeBackend(roomy, { writable: true }), 'x', {}, { fits: () => false }))
      .rejects.toMatchObject({ code: 'QCOW2_UNSUPPORTED_FEATURE', message: expect.stringMatching(/more than this open image holds in memory/) });
    expect(Buffer.compare(readFileSync(roomy), roomyBefore), 'file unchanged').toBe(0);
    const external = makeImage(dir, 'external.qcow2', { size: MiB, dataFile: 'external.data' });
    await expect(createSnapshot(await openNodeBackend(external, { writable: true }), 'x')).rejects.toMatchObject({ code: 'QCOW2_UNSUPPORTED_FEATURE' });
  });
});

describeWithQemu('internal snapshots: a power cut after every host write', () => {
  it('create, create with VM state, apply, delete: every crash state reads old or new, without corruption', async () => {
    const path = makeImage(dir, 'crash.qcow2', {
      size: 4 * MiB, clusterSize: 4096,
      ops: [{ op: 'write', offset: 0, length: 600 * KiB, pattern: 0x61 }, { op: 'compressed', offset: MiB, length: 64 * KiB, pattern: 0x62 }],
    });
    qemuImgOk(['snapshot', '-c', 'qemu', 'crash.qcow2']);
    const initial = new Uint8Array(readFileSync(path));
    const backend = createCrashBackend(initial);
    const image = await Qcow2Image.open(backend);
    const views: Uint8Array[] = [await image.read(0, 4 * MiB)];
    const steps: (() => Promise<unknown>)[] = [
      () => image.createSnapshot('one'),
      () => image.write(100 * KiB, new Uint8Array(300 * KiB).fill(0x63)),
      () => image.createSnapshot('two', { vmState: new Uint8Array(50 * KiB).fill(0x64) }),
      () => image.applySnapshot('one'),
      () => image.deleteSnapshot('qemu'),
      () => image.deleteSnapshot('two'),
    ];
    // The write-back of the write step flushes before the snapshot that follows; record the
    // clock at each boundary to know which guest views a cut may show.
    const boundaries: number[] = [];
    for (const step of steps) {
      await step();
      await image.flush();
      boundaries.push(backend.mark());
      views.push(await image.read(0, 4 * MiB));
    }
    await image.close();
    const replay = backend.replay();
    let states = 0;
    let leaky = 0;
    for (let k = 0; k < backend.writes.length; k++) {
      replay.advance(k);
      const cut = replay.cutClock(k);
      const step = boundaries.findIndex((b) => cut < b);
      // A guest write may land in part (sectors): its cuts are checked for corruption only.
      const isWrite = step === 1;
      const allowed = step < 0 ? [views[views.length - 1]] : [views[step], views[step + 1]];
      for (let s = 0; s < 3; s++) {
        const state = s === 0 ? replay.fullState() : replay.state(makePrng(k * 3 + s), s === 1 ? 0 : 0.5);
        const what = `cut after host write ${k} of ${backend.writes.length} (step ${step}), state ${s}`;
        const opened = await Qcow2Image.open(createMemoryBackend(state.bytes, { writable: false }));
        const content = await opened.read(0, 4 * MiB);
        await opened.close();
        if (!isWrite) expect(allowed.some((view) => Buffer.compare(view, content) === 0), `${what}: content is neither before nor after`).toBe(true);
        const ours = await checkQcow2(createMemoryBackend(state.bytes, { writable: false }));
        expect({ corruptions: ours.corruptions, checkErrors: ours.checkErrors }, `${what}: check`).toEqual({ corruptions: 0, checkErrors: 0 });
        if (ours.leaks > 0) leaky++;
        if (s === 0 && k % 5 === 0) {
          const statePath = join(dir, 'crash-state.qcow2');
          writeFileSync(statePath, state.bytes);
          const qemu = qemuCheck(statePath);
          expect({ corruptions: qemu.corruptions ?? 0, checkErrors: qemu['check-errors'] }, `${what}: qemu-img check`).toEqual({ corruptions: 0, checkErrors: 0 });
        }
        states++;
      }
    }
    console.log(`snapshot crash run: ${backend.writes.length} host writes, ${states} crash states verified, ${leaky} with leaks`);
    expect(states).toBeGreaterThan(20);
  }, 300_000);
});

it('snapshot functions refuse a non-qcow2 backend with a typed error', async () => {
  await expect(deleteSnapshot(createMemoryBackend(new Uint8Array(4096)), 'x')).rejects.toBeInstanceOf(ImageError);
});
