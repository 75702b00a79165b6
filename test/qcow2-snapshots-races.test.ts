// SPDX-License-Identifier: MIT
// Internal snapshot operations (create, apply, delete) and makeEmpty submitted among unawaited writes,
// writeZeroes, discards, flushes and reads, over a backend that delays every call by a seeded
// number of microtask turns, with deferred copy-on-write and loss-window timers firing among them.
// Every request takes effect in submission order: a snapshot holds exactly the writes submitted
// before it, an apply is seen by every request submitted after it. Each session closes; QEMU then
// checks the file and reads the active image and every snapshot, which must equal the model.
// Listing snapshots and reading VM state are ordered the same way: they see every snapshot
// operation submitted before them, whichever host call that operation has reached.
// Reproduce a failure: QCOW2_WASM_SEED=<seed printed>.

import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { SnapshotNotFoundError } from '../bindings/qcow2/qcow2-snapshot-ops.js';
import { createQcow2 } from '../bindings/qcow2/qcow2-create.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { convertToRaw, describeWithQemu, qemuCheck, qemuImg } from './helpers/qemu.js';
import { expectBytes } from './helpers/bytes.js';
import { makePrng } from './helpers/prng.js';
import { scriptedBackend } from './helpers/scripted-backend.js';
import { createCrashBackend } from './helpers/crash-backend.js';
import { createImageOfKind, pattern, pickImageKind, pickOpenOptions } from './helpers/random-image.js';

const KIB = 1024;
const MIB = 1024 * KIB;
const SEED = Number(process.env.QCOW2_WASM_SEED ?? 20261206);

const scratch = mkdtempSync(join(tmpdir(), 'qcow2-snapshot-races-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/**
 * Two sessions of unawaited requests with snapshot operations among them on an image of the
 * kind `seed` picks; after each session QEMU checks the file and reads every view of it.
 */
async function snapshotSessions(seed: number): Promise<void> {
  const prng = makePrng(seed * 104729);
  const imageKind = pickImageKind(prng, [1, 2, 4], [16, 64, 8]);
  const { sizeBytes: size, clusterSize, extendedL2, compat, refcountBits, base } = imageKind;
  const kind = `seed ${seed} (QCOW2_WASM_SEED=${seed}): ${clusterSize} B clusters, compat ${compat}, refcount_bits ${refcountBits}` +
    `${extendedL2 ? ', extended L2' : ''}${base ? ', raw backing file' : ''}`;
  const inner = createMemoryBackend();
  await createImageOfKind(inner, imageKind);
  let model = base ? base.slice() : new Uint8Array(size);
  const snapshots = new Map<string, Uint8Array>();
  let created = 0;
  const dir = mkdtempSync(join(scratch, `seed-${seed}-`));
  if (base) writeFileSync(join(dir, 'base.raw'), base);

  for (let session = 0; session < 2; session++) {
    const file = scriptedBackend(inner, { seed: seed * 31 + session, maxTurns: prng.int(10) });
    const image = await Qcow2Image.open(file, pickOpenOptions(prng, base));
    for (let round = 0; round < 5; round++) {
      const ops: Promise<unknown>[] = [];
      for (let i = 0; i < 80; i++) {
        const what = `${kind}, session ${session}, round ${round}, request ${i}`;
        const length = 1 + prng.int(prng.int(4) === 0 ? 600 : 3 * clusterSize + 5000);
        const offset = prng.int(size - length);
        const roll = prng.int(40);
        if (roll < 20) {
          const data = new Uint8Array(length).fill(1 + prng.int(250));
          model.set(data, offset);
          ops.push(image.write(offset, data));
        } else if (roll < 24) {
          model.fill(0, offset, offset + length);
          ops.push(image.writeZeroes(offset, length));
        } else if (roll < 26 && (compat === '1.1' || !base)) {
          const start = Math.ceil(offset / clusterSize) * clusterSize;
          const end = Math.floor((offset + length) / clusterSize) * clusterSize;
          if (start < end) model.fill(0, start, end);
          ops.push(image.discard(offset, length));
        } else if (roll < 28) {
          ops.push(image.flush());
        } else if (roll === 28 && prng.int(3) === 0) {
          model = base ? base.slice() : new Uint8Array(size);
          ops.push(image.makeEmpty());
        } else if (roll < 34) {
          const expected = model.slice(offset, offset + length);
          ops.push(image.read(offset, length).then((got) => expectBytes(got, expected, `${what}: read at ${offset}`)));
        } else if (roll < 37 || snapshots.size === 0) {
          const name = `s${created++}`;
          snapshots.set(name, model.slice());
          ops.push(image.createSnapshot(name));
        } else if (roll < 39) {
          const names = [...snapshots.keys()];
          const name = names[prng.int(names.length)];
          model = snapshots.get(name)!.slice();
          ops.push(image.applySnapshot(name));
        } else {
          const names = [...snapshots.keys()];
          const name = names[prng.int(names.length)];
          snapshots.delete(name);
          ops.push(image.deleteSnapshot(name));
        }
      }
      await Promise.all(ops);
      if (prng.int(3) === 0) await new Promise((resolve) => setTimeout(resolve, prng.int(8)));
    }
    expectBytes(await image.read(0, size), model, `${kind}, session ${session}: active image before close`);
    expect((await image.snapshots()).map((s) => s.name), `${kind}, session ${session}: snapshots`).toEqual([...snapshots.keys()]);
    await image.close();
    expect(file.afterClose, 'backend calls after close()').toEqual([]);

    const path = join(dir, `session-${session}.qcow2`);
    writeFileSync(path, await file.snapshot());
    const check = qemuCheck(path);
    expect({ exitCode: check.exitCode, corruptions: check.corruptions ?? 0, leaks: check.leaks ?? 0 }, `${kind}, session ${session}: qemu-img check`)
      .toEqual({ exitCode: 0, corruptions: 0, leaks: 0 });
    expectBytes(convertToRaw(path), model, `${kind}, session ${session}: active image by qemu-img convert`);
    for (const [name, content] of snapshots) {
      const out = join(dir, `session-${session}-${name}.raw`);
      const converted = qemuImg(['convert', '-O', 'raw', '-l', `snapshot.name=${name}`, path, out], dir);
      expect(converted.code, `${kind}: qemu-img convert of snapshot ${name}: ${converted.stderr}`).toBe(0);
      expectBytes(new Uint8Array(readFileSync(out)), content, `${kind}, session ${session}: snapshot ${name} by qemu-img convert`);
    }
  }
}

describeWithQemu('snapshot operations among requests in flight', () => {
  it.each([0, 1, 2, 3, 4, 5].map((i) => SEED * 6 + i))('snapshots hold what was submitted before them; QEMU agrees (seed %i)', async (seed) => {
    await snapshotSessions(seed);
  }, 120_000);
});

describe('listing snapshots, reading VM state and mapping while a snapshot operation runs', () => {
  // snapshots() and readSnapshotVmState() read the table from the header an operation in flight
  // was replacing: a listing during a delete read the freed old table (twelve snapshots with
  // empty names), and VM state could be read from clusters the delete had just freed. The tools'
  // mapGuestRange() read the active tables an apply was replacing.
  it('see every operation submitted before them, at every host flush, truncation and size query', async () => {
    const inner = createMemoryBackend();
    await createQcow2(inner, { virtualSize: 1 * MIB, clusterSize: 512 });
    const file = scriptedBackend(inner);
    const image = await Qcow2Image.open(file);
    const names = Array.from({ length: 12 }, (_, i) => `snapshot-with-a-longer-name-${i}`);
    const vmState = pattern(3000, 9);
    for (const name of names) {
      await image.write(names.indexOf(name) * 4 * KIB, pattern(4 * KIB, names.indexOf(name)));
      await image.createSnapshot(name, { vmState });
    }
    const steps: { what: string; run: () => Promise<unknown>; after: string[]; gone?: string }[] = [
      { what: 'delete', run: () => image.deleteSnapshot(names[0]), after: names.slice(1), gone: names[0] },
      { what: 'create', run: () => image.createSnapshot('added', { vmState }), after: [...names.slice(1), 'added'] },
      { what: 'apply', run: () => image.applySnapshot(names[5]), after: [...names.slice(1), 'added'] },
    ];
    for (const step of steps) {
      const listings: Promise<string[]>[] = [];
      const states: Promise<unknown>[] = [];
      const maps: Promise<unknown>[] = [];
      const stops = ['flush', 'truncate', 'getSize'] as const;
      for (const op of stops) file.hold(op);
      let done = false;
      const running = step.run().finally(() => { done = true; });
      // At each host flush, truncation and size query of the operation: list, read VM state, and
      // submit a guest write that may reuse freed clusters.
      for (let stop = 0; !done; stop++) {
        await Promise.race([...stops.map((op) => file.whenParked(op)), running]);
        if (done) break;
        listings.push(image.snapshots().then((list) => list.map((s) => s.name)));
        if (step.gone) states.push(image.readSnapshotVmState(step.gone).then(() => 'read', (error: unknown) => error));
        states.push(image.readSnapshotVmState(names[7]));
        maps.push(image.mapGuestRange(0, 48 * KIB)); // the stops' writes land past 512 KiB
        void image.write(512 * KIB + stop * 8 * KIB, pattern(8 * KIB, stop));
        for (const op of stops) file.release(op);
        for (const op of stops) file.hold(op);
      }
      for (const op of stops) file.release(op);
      await running;
      expect(listings.length, `${step.what}: stops met`).toBeGreaterThan(2);
      expect(await Promise.all(listings), `${step.what}: the listing at each stop`).toEqual(listings.map(() => step.after));
      const mapAfter = await image.mapGuestRange(0, 48 * KIB);
      expect(await Promise.all(maps), `${step.what}: the mapping at each stop`).toEqual(maps.map(() => mapAfter));
      for (const state of await Promise.all(states)) {
        if (state instanceof Uint8Array) expectBytes(state, vmState, `${step.what}: VM state of ${names[7]}`);
        else expect(state, `${step.what}: VM state of the deleted snapshot`).toBeInstanceOf(SnapshotNotFoundError);
      }
    }
    await image.close();
  });
});

describeWithQemu('a power cut while snapshot operations run among writes in flight', () => {
  // No request is awaited: writes go in flight around create, delete and apply, completing out
  // of order. Whatever the cut, the file has no corruption, and every snapshot it lists holds
  // exactly the writes submitted before its create (and its VM state), as we and QEMU read it.
  // Odd seeds: over a raw backing file, so partial cluster writes leave deferred copy-on-write pending.
  it.each([0, 1].map((i) => SEED * 2 + i))('every listed snapshot is whole in every crash state (seed %i)', async (seed) => {
    const prng = makePrng(seed);
    const size = 1 * MIB;
    const base = seed % 2 === 1 ? pattern(size, 3) : undefined;
    const start = createMemoryBackend();
    await createQcow2(start, { virtualSize: size, clusterSize: 4096, ...(base ? { backingFile: 'base.raw', backingFormat: 'raw' as const } : {}) });
    const backend = createCrashBackend(new Uint8Array(await (async () => {
      const bytes = new Uint8Array(await start.getSize());
      await start.preadv(0, [bytes]);
      return bytes;
    })()), { jitter: makePrng(seed + 1), writeDelayMs: 2 });
    const openBacking = async () => createMemoryBackend(base!, { writable: false });
    const image = await Qcow2Image.open(backend, { cacheBytes: 4096, openBacking, deferredCow: { delayMs: 1, maxPending: 4 } });
    let model = base ? base.slice() : new Uint8Array(size);
    const expected = new Map<string, Uint8Array>();
    const vmState = pattern(5000, seed);
    const requests: Promise<unknown>[] = [];
    const writes = (count: number) => {
      for (let i = 0; i < count; i++) {
        const length = 1 + prng.int(12 * KIB);
        const offset = prng.int(size - length);
        const data = new Uint8Array(length).fill(1 + prng.int(250));
        model.set(data, offset);
        requests.push(image.write(offset, data));
      }
    };
    writes(12);
    expected.set('one', model.slice());
    requests.push(image.createSnapshot('one'));
    writes(12);
    expected.set('two', model.slice());
    requests.push(image.createSnapshot('two', { vmState }));
    writes(12);
    expected.delete('one');
    requests.push(image.deleteSnapshot('one'));
    writes(8);
    model = expected.get('two')!.slice();
    requests.push(image.applySnapshot('two'));
    writes(8);
    requests.push(image.flush());
    await Promise.all(requests);
    await image.close();
    expect(backend.overlaps, 'overlapping host calls in flight').toEqual([]);

    const replay = backend.replay();
    const dir = mkdtempSync(join(scratch, `crash-${seed}-`));
    if (base) writeFileSync(join(dir, 'base.raw'), base);
    let listed = 0;
    for (let k = 0; k < backend.writes.length; k++) {
      replay.advance(k);
      for (let s = 0; s < 2; s++) {
        const state = s === 0 ? replay.fullState() : replay.state(makePrng(seed * 1000 + k), 0.5);
        const what = `seed ${seed} (QCOW2_WASM_SEED=${Math.floor(seed / 2)}): cut after host write ${k} of ${backend.writes.length}, state ${s}`;
        const opened = await Qcow2Image.open(createMemoryBackend(state.bytes.slice()), { openBacking });
        const check = await opened.check();
        expect({ corruptions: check.corruptions, checkErrors: check.checkErrors }, `${what}: check`).toEqual({ corruptions: 0, checkErrors: 0 });
        const names = (await opened.snapshots()).map((snapshot) => snapshot.name);
        for (const name of names) {
          expect(expected.has(name) || name === 'one', `${what}: unknown snapshot ${name}`).toBe(true);
          if (name === 'two') expectBytes(await opened.readSnapshotVmState(name), vmState, `${what}: VM state of two`);
        }
        await opened.close();
        for (const name of names) {
          // 'one' may still be listed (its delete had not switched the header yet) and then holds its content.
          const content = name === 'one' ? undefined : expected.get(name)!;
          const applied = await Qcow2Image.open(createMemoryBackend(state.bytes.slice(), { writable: true }), { openBacking });
          await applied.applySnapshot(name);
          const got = await applied.read(0, size);
          await applied.close();
          if (content) expectBytes(got, content, `${what}: snapshot ${name} as we apply it`);
          listed++;
          if (k % 8 === 0 && s === 0 && content) {
            const path = join(dir, 'state.qcow2');
            writeFileSync(path, state.bytes);
            const qemu = qemuCheck(path);
            expect({ corruptions: qemu.corruptions ?? 0, checkErrors: qemu['check-errors'] }, `${what}: qemu-img check`).toEqual({ corruptions: 0, checkErrors: 0 });
            const out = join(dir, `state-${name}.raw`);
            expect(qemuImg(['convert', '-O', 'raw', '-l', `snapshot.name=${name}`, path, out], dir).code, `${what}: qemu-img convert ${name}`).toBe(0);
            expectBytes(new Uint8Array(readFileSync(out)), content, `${what}: snapshot ${name} by qemu-img convert`);
          }
        }
      }
    }
    console.log(`snapshot crash run (seed ${seed}): ${backend.writes.length} host writes, ${listed} listed snapshots verified`);
    expect(listed).toBeGreaterThan(10);
  }, 600_000);
});

describe('check() among snapshot operations and writes in flight', () => {
  // check() flushed, then read the file while later writes' write-backs and snapshot operations
  // changed it: it reported leaks, and once a corruption, on a sound image.
  it('sees the image as every request before it left it: no corruption, no leak', async () => {
    const reports = new Map<string, number>();
    for (let seed = 0; seed < 60; seed++) {
      const inner = createMemoryBackend();
      await createQcow2(inner, { virtualSize: 1 * MIB, clusterSize: 512 });
      const image = await Qcow2Image.open(scriptedBackend(inner, { seed, maxTurns: 4 }), { cacheBytes: 4096 });
      const prng = makePrng(seed);
      for (let i = 0; i < 5; i++) {
        await image.write(prng.int(512 * KIB), new Uint8Array(3000).fill(i + 1));
        await image.createSnapshot(`s${i}`);
      }
      const requests: Promise<unknown>[] = [];
      const checks: Promise<string>[] = [];
      for (let i = 0; i < 30; i++) {
        const roll = prng.int(6);
        if (roll < 3) requests.push(image.write(prng.int(512 * KIB), new Uint8Array(1 + prng.int(5000)).fill(9)));
        else if (roll === 3) requests.push(image.createSnapshot(`n${i}`));
        else if (roll === 4) requests.push(image.deleteSnapshot(`s${i % 5}`).catch((error: unknown) => expect(error).toBeInstanceOf(SnapshotNotFoundError)));
        else checks.push(image.check().then((report) => `${report.corruptions} corruptions, ${report.leaks} leaks, ${report.checkErrors} check errors`));
      }
      await Promise.all(requests);
      for (const report of await Promise.all(checks)) reports.set(report, (reports.get(report) ?? 0) + 1);
      await image.close();
    }
    expect(reports.size, 'checks run').toBeGreaterThan(0);
    expect([...reports.keys()], 'distinct check reports').toEqual(['0 corruptions, 0 leaks, 0 check errors']);
  });
});
