// SPDX-License-Identifier: MIT
// Races between requests left in flight: metadata changes against a running write-back, flushes
// overlapping each other, merged extents at the iovec cap, close() against everything still
// running, and the API after close. Each scenario replays exactly (microtask-only delays from a
// seed, or calls held and released by the test); QEMU judges the files where it has an answer.

import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { RawImage } from '../bindings/raw/raw-image.js';
import { createQcow2 } from '../bindings/qcow2/qcow2-create.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import type { Backend } from '../bindings/backends/backend.js';
import type { CreateOptions, OpenOptions } from '../bindings/dispatch/image.js';
import { Qcow2WasmError } from '../bindings/base/errors.js';
import { convertToRaw, describeWithQemu, qemuCheck } from './helpers/qemu.js';
import { expectBytes } from './helpers/bytes.js';
import { makePrng } from './helpers/prng.js';
import { scriptedBackend, type ScriptedBackend, type ScriptedOptions } from './helpers/scripted-backend.js';
import { createImageOfKind, pattern, pickImageKind, pickOpenOptions } from './helpers/random-image.js';

const KIB = 1024;
const MIB = 1024 * KIB;

const scratch = mkdtempSync(join(tmpdir(), 'qcow2-races-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

interface Subject { image: Qcow2Image; file: ScriptedBackend; base: Uint8Array | undefined; model: Uint8Array }

/**
 * A new qcow2 image (over a raw backing file named base.raw holding `base`, when given), opened
 * through a scripted backend.
 */
async function subject(create: Omit<CreateOptions, 'backingFile' | 'backingFormat'>, open: OpenOptions, script: ScriptedOptions,
                       base?: Uint8Array): Promise<Subject> {
  const inner = createMemoryBackend();
  await createQcow2(inner, { ...create, ...(base ? { backingFile: 'base.raw', backingFormat: 'raw' as const } : {}) });
  const file = scriptedBackend(inner, script);
  const image = await Qcow2Image.open(file, { ...open, openBacking: async () => createMemoryBackend(base!, { writable: false }) });
  return { image, file, base, model: base ? base.slice() : new Uint8Array(create.virtualSize) };
}

/** Closes the image, then has QEMU check the file and compare its content with the model. */
async function judge(s: Subject, name: string): Promise<void> {
  await s.image.close();
  expect(s.file.afterClose, 'backend calls after close()').toEqual([]);
  const dir = mkdtempSync(join(scratch, `${name}-`));
  if (s.base) writeFileSync(join(dir, 'base.raw'), s.base);
  const path = join(dir, 'image.qcow2');
  writeFileSync(path, await s.file.snapshot());
  const check = qemuCheck(path);
  expect({ exitCode: check.exitCode, corruptions: check.corruptions ?? 0, leaks: check.leaks ?? 0 }, `qemu-img check ${name}`)
    .toEqual({ exitCode: 0, corruptions: 0, leaks: 0 });
  expectBytes(convertToRaw(path), s.model, `${name}: content by qemu-img convert`);
}

/** Lets parked calls accumulate: resolves once `count` calls of `op` are parked. */
async function untilParked(file: ScriptedBackend, count: number, op: 'preadv' | 'flush' = 'preadv'): Promise<void> {
  for (let spins = 0; file.parked(op) < count; spins++) {
    if (spins > 1000) throw new Error(`only ${file.parked(op)} of ${count} ${op} calls were parked`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describeWithQemu('metadata changes against a running write-back', () => {
  // The exact interleaving: a zeroing parks on the slice load of an existing L2 table; a flush's
  // write-back starts, copies the L1 table and parks on its first barrier; the zeroing resumes and
  // allocates the next L2 table while the write-back runs. The table must be written whole (and
  // its slice after that) by the next write-back: once wrongly written as a slice of the running
  // write-back, with an L1 copy that lacked it, and then zero-filled over by the next.
  it('keeps a zeroed range whose new L2 table appears while a write-back runs (512 B clusters)', async () => {
    const size = 1 * MIB;
    const base = pattern(size);
    const inner = createMemoryBackend();
    await createQcow2(inner, { virtualSize: size, clusterSize: 512, backingFile: 'base.raw', backingFormat: 'raw' });
    const openBacking = async () => createMemoryBackend(base, { writable: false });
    const model = base.slice();
    // An L2 table for guest [32 KiB, 64 KiB) on disk, not in the cache of the next open.
    const first = await Qcow2Image.open(scriptedBackend(inner), { openBacking });
    const written = pattern(4 * KIB, 99);
    await first.write(40 * KIB, written);
    model.set(written, 40 * KIB);
    await first.close();

    const file = scriptedBackend(inner);
    const image = await Qcow2Image.open(file, { openBacking, cacheBytes: 8192 });
    await image.writeZeroes(0, 512);
    model.fill(0, 0, 512);
    file.hold('preadv');
    file.hold('flush');
    const flushed = image.flush();
    const zeroed = image.writeZeroes(63 * KIB, 2 * KIB);
    model.fill(0, 63 * KIB, 65 * KIB);
    await untilParked(file, 1, 'preadv');
    await untilParked(file, 1, 'flush');
    file.release('preadv');
    await zeroed;
    file.release('flush');
    await flushed;
    expectBytes(await image.read(0, size), model, 'read back before close');
    await judge({ image, file, base, model }, 'zero-new-table');
  });
});

/** Lets every pending callback run (microtasks and immediates) a few rounds. */
async function settleRounds(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

describeWithQemu('overlapping flushes', () => {
  // Two flush() calls in one tick after an in-place write: the first starts the backend flush;
  // the second saw a flush begin during its call and skipped its own barrier, resolving while
  // that backend flush (the only one covering the write) was still running.
  it('a flush that skips its own barrier waits for the running one; flushes resolve in order', async () => {
    const s = await subject({ virtualSize: 1 * MIB, clusterSize: 4096 }, {}, {});
    await s.image.write(0, pattern(8192));
    await s.image.flush();
    await s.image.write(100, pattern(1000, 5)); // in place: only a backend flush makes it durable
    s.file.hold('flush');
    const resolved: number[] = [];
    const flushes = [0, 1, 2].map((n) => s.image.flush().then(() => { resolved.push(n); }));
    await settleRounds();
    expect(s.file.parked('flush'), 'backend flushes held').toBeGreaterThan(0);
    expect(resolved, 'flushes resolved while the backend flush is held').toEqual([]);
    s.file.release('flush');
    await Promise.all(flushes);
    expect(resolved).toEqual([0, 1, 2]);
    await s.image.close();
  });

  it('resolves flushes in call order when an earlier one has more to write', async () => {
    const s = await subject({ virtualSize: 4 * MIB, clusterSize: 512 }, { cacheBytes: 8192 }, { seed: 7, maxTurns: 12 });
    const resolved: number[] = [];
    const all: Promise<void>[] = [];
    for (let n = 0; n < 8; n++) {
      const data = pattern(700, n);
      s.model.set(data, n * 40 * KIB);
      all.push(s.image.write(n * 40 * KIB, data));
      all.push(s.image.flush().then(() => { resolved.push(n); }));
    }
    await Promise.all(all);
    expect(resolved).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    await judge(s, 'flush-order');
  });
});

describeWithQemu('merged extents at the caps', () => {
  // 1,024 sequential 10-byte requests fill one extent's iovec; a zero-length request 50 bytes on
  // in the same fresh cluster made the bridged gap land alone in the next extent, and multiwrite
  // threw; a write() of the same tick was lost.
  it('never makes an extent of a bridged gap alone (iovec cap, zero-length request)', async () => {
    const s = await subject({ virtualSize: 1 * MIB }, {}, {});
    const requests = Array.from({ length: 1024 }, (_, i) => ({ offset: i * 10, data: pattern(10, i) }));
    for (const r of requests) s.model.set(r.data, r.offset);
    const queued = pattern(300, 77);
    s.model.set(queued, 200 * KIB);
    const write = s.image.write(200 * KIB, queued);
    const results = s.image.multiwrite([...requests, { offset: 10240 + 50, data: new Uint8Array(0) }]);
    expect(results).toHaveLength(1025);
    await Promise.all([...results, write]);
    await s.image.flush();
    expectBytes(await s.image.read(0, 1 * MIB), s.model, 'read back');
    await judge(s, 'iovec-cap');
  });

  it('never makes an extent of a bridged gap alone (maxTransfer 4096, ordinary requests)', async () => {
    const s = await subject({ virtualSize: 1 * MIB }, {}, { limits: { maxIov: 1024, maxTransfer: 4096 } });
    const writes: Promise<void>[] = [];
    for (const [offset, length] of [[0, 100], [5000, 100], [16 * KIB, 3000], [30 * KIB, 9000], [64 * KIB + 10, 10]]) {
      const data = pattern(length, offset);
      s.model.set(data, offset);
      writes.push(s.image.write(offset, data));
    }
    await Promise.all(writes);
    expectBytes(await s.image.read(0, 1 * MIB), s.model, 'read back');
    await judge(s, 'transfer-cap');
  });
});

/** Rejects with a typed error of `code`. */
async function expectCode(promise: Promise<unknown>, code: string, what: string): Promise<void> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error, `${what} must reject`).toBeInstanceOf(Qcow2WasmError);
  expect((error as Qcow2WasmError).code, what).toBe(code);
}

describeWithQemu('close() against requests in flight', () => {
  it('lets a read submitted before close() complete (slow reads, cold cache)', async () => {
    const inner = createMemoryBackend();
    await createQcow2(inner, { virtualSize: 1 * MIB });
    const data = pattern(4096);
    const first = await Qcow2Image.open(scriptedBackend(inner));
    await first.write(0, data);
    await first.close();
    const file = scriptedBackend(inner, { readDelayMs: 5 });
    const image = await Qcow2Image.open(file);
    const read = image.read(0, 4096);
    const closed = image.close();
    expectBytes(await read, data, 'read submitted before close');
    await closed;
    expect(file.afterClose).toEqual([]);
  });

  it('resolves close() only after a flush() submitted before it (backend flush held)', async () => {
    const s = await subject({ virtualSize: 1 * MIB, clusterSize: 512 }, {}, {});
    await s.image.write(0, pattern(3000));
    await s.image.flush();
    await s.image.write(1000, pattern(1000, 1)); // in place: the flush has no metadata to write
    s.file.hold('flush');
    const order: string[] = [];
    const flushed = s.image.flush().then(() => { order.push('flush'); });
    const closed = s.image.close().then(() => { order.push('close'); });
    await settleRounds();
    expect(order, 'settled while the backend flush is held').toEqual([]);
    s.file.release('flush');
    await Promise.all([flushed, closed]);
    expect(order).toEqual(['flush', 'close']);
    expect(s.file.afterClose).toEqual([]);
  });

  // Small cache and refcount growth: write-backs forced by a full cache release clusters in the
  // background, and a user flush is in flight when close() is called.
  it.each([1, 2, 3, 4])('closes the backend only after every write-back, release and flush (512 B clusters, refcount_bits 64, seed %i)', async (seed) => {
    const size = 4 * MIB;
    const s = await subject({ virtualSize: size, clusterSize: 512, refcountBits: 64 }, { cacheBytes: 4096 }, { seed, maxTurns: 10 }, pattern(size, 3));
    const prng = makePrng(seed);
    const ops: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) {
      const offset = prng.int(size - 8 * KIB);
      const kind = prng.int(10);
      if (kind < 6) {
        const data = pattern(1 + prng.int(6000), i);
        s.model.set(data, offset);
        ops.push(s.image.write(offset, data));
      } else if (kind < 8) {
        const length = 1 + prng.int(6000);
        s.model.fill(0, offset, offset + length);
        ops.push(s.image.writeZeroes(offset, length));
      } else if (kind < 9) {
        ops.push(s.image.flush());
      } else {
        ops.push(s.image.read(offset, 4096).then(() => undefined));
      }
    }
    ops.push(s.image.flush());
    const results = Promise.allSettled(ops);
    const closed = s.image.close();
    for (const result of await results) expect(result.status).toBe('fulfilled');
    await closed;
    await judge(s, `close-${seed}`);
  });

  it('reports a failed final flush typed, and still closes without later backend calls', async () => {
    const s = await subject({ virtualSize: 1 * MIB }, {}, {});
    await s.image.write(0, pattern(5000));
    const failing = s.file as ScriptedBackend & { flush: () => Promise<void> };
    failing.flush = () => Promise.reject(new Error('EIO on flush'));
    await expectCode(s.image.flush(), 'IMAGE_IO_ERROR', 'flush over a failing backend');
    await expectCode(s.image.close(), 'IMAGE_IO_ERROR', 'close over a failing backend');
    expect(s.file.afterClose).toEqual([]);
  });
});

describe('the API after close()', () => {
  it('rejects every call with IMAGE_CLOSED, before checking arguments', async () => {
    const s = await subject({ virtualSize: 1 * MIB }, {}, {});
    await s.image.close();
    await expectCode(s.image.read(-1, 1), 'IMAGE_CLOSED', 'read(-1, 1)');
    await expectCode(s.image.read(0, 1), 'IMAGE_CLOSED', 'read');
    await expectCode(s.image.readInto(-5, new Uint8Array(1)), 'IMAGE_CLOSED', 'readInto');
    await expectCode(s.image.write(-1, new Uint8Array(1)), 'IMAGE_CLOSED', 'write');
    await expectCode(s.image.writeZeroes(-1, 1), 'IMAGE_CLOSED', 'writeZeroes');
    await expectCode(s.image.discard(-1, 1), 'IMAGE_CLOSED', 'discard');
    await expectCode(s.image.flush(), 'IMAGE_CLOSED', 'flush');
    await expectCode(s.image.snapshots(), 'IMAGE_CLOSED', 'snapshots');
    await expectCode(s.image.check(), 'IMAGE_CLOSED', 'check');
    const empty = s.image.multiwrite([]);
    expect(empty).toHaveLength(1);
    await expectCode(empty[0], 'IMAGE_CLOSED', 'multiwrite([])');
    const two = s.image.multiwrite([{ offset: 0, data: new Uint8Array(1) }, { offset: -1, data: new Uint8Array(1) }]);
    expect(two).toHaveLength(2);
    for (const p of two) await expectCode(p, 'IMAGE_CLOSED', 'multiwrite of two');
    const notArray = s.image.multiwrite('x' as unknown as []);
    await expectCode(notArray[0], 'IMAGE_CLOSED', "multiwrite('x') after close");
    await s.image.close();
  });

  it('multiwrite with a non-array returns a rejected promise instead of throwing', async () => {
    const raw = await RawImage.open(createMemoryBackend(4096));
    let results: Promise<void>[] = [];
    expect(() => { results = raw.multiwrite('x' as unknown as []); }).not.toThrow();
    expect(results).toHaveLength(1);
    await expectCode(results[0], 'INVALID_ARGUMENT', "multiwrite('x')");
    expect(raw.multiwrite([])).toEqual([]);
    await raw.close();
    await expectCode(raw.read(-1, 1), 'IMAGE_CLOSED', 'raw read(-1, 1) after close');
  });
});

/**
 * Unawaited mixed requests in rounds (writes, writeZeroes, flushes, reads checked against the
 * model) on 512 B clusters with 64-bit refcounts, so the refcount table grows past its first
 * 2 MiB of coverage while requests are in flight.
 */
async function growthWorkload(seed: number): Promise<Subject> {
  const size = 6 * MIB;
  const prng = makePrng(seed);
  const withBase = prng.int(2) === 0;
  const maxTurns = 1 + prng.int(12);
  const cacheBytes = [4096, 8192, 65536][prng.int(3)];
  const s = await subject({ virtualSize: size, clusterSize: 512, refcountBits: 64 }, { cacheBytes }, { seed, maxTurns },
    withBase ? pattern(size, 11) : undefined);
  for (let round = 0; round < 6; round++) {
    const ops: Promise<unknown>[] = [];
    for (let i = 0; i < 150; i++) {
      const offset = prng.int(size - 20000);
      const kind = prng.int(12);
      const length = 1 + prng.int(12000);
      if (kind < 7) {
        const data = new Uint8Array(length).fill(1 + prng.int(250));
        s.model.set(data, offset);
        ops.push(s.image.write(offset, data));
      } else if (kind < 9) {
        s.model.fill(0, offset, offset + length);
        ops.push(s.image.writeZeroes(offset, length));
      } else if (kind < 10) {
        ops.push(s.image.flush());
      } else {
        const expected = s.model.slice(offset, offset + Math.min(length, 8000));
        ops.push(s.image.read(offset, expected.byteLength).then((got) => expectBytes(got, expected, `seed ${seed}: read at ${offset}`)));
      }
    }
    await Promise.all(ops);
  }
  return s;
}

describeWithQemu('refcount-table growth against requests in flight', () => {
  // Found by these seeds: releases had dirtied every refcount cache slot when the table had to
  // grow, and the growth failed halfway (WASM_INTERNAL, the table's new entries already in
  // place); a release that needed a write-back outlived close(), reading the closed backend or
  // leaving leaked clusters.
  it.each([1, 4, 6, 14])('grows the table and closes cleanly (512 B clusters, refcount_bits 64, seed %i)', async (seed) => {
    const s = await growthWorkload(seed);
    await judge(s, `growth-${seed}`);
  });
});

/**
 * Two sessions of unawaited mixed requests (writes, writeZeroes, discards, flushes, reads checked
 * against the model) with short deferred copy-on-write and loss-window timers firing among them,
 * on an image of the kind `seed` picks (cluster size, v2 or v3, extended L2, refcount width,
 * backing file); each session closes, then QEMU checks the file and compares its content.
 */
async function mixedSessions(seed: number): Promise<void> {
  const prng = makePrng(seed * 7919);
  const imageKind = pickImageKind(prng, [2, 4, 6], [16, 64, 1]);
  const { sizeBytes: size, clusterSize, extendedL2, compat, refcountBits, base } = imageKind;
  const inner = createMemoryBackend();
  await createImageOfKind(inner, imageKind);
  const model = base ? base.slice() : new Uint8Array(size);
  for (let session = 0; session < 2; session++) {
    const file = scriptedBackend(inner, { seed: seed + session, maxTurns: prng.int(10) });
    const image = await Qcow2Image.open(file, pickOpenOptions(prng, base));
    for (let round = 0; round < 4; round++) {
      const ops: Promise<unknown>[] = [];
      for (let i = 0; i < 120; i++) {
        const offset = prng.int(size - 20000);
        const kind = prng.int(14);
        const length = 1 + prng.int(kind < 3 ? 600 : 12000);
        if (kind < 8) {
          const data = new Uint8Array(length).fill(1 + prng.int(250));
          model.set(data, offset);
          ops.push(image.write(offset, data));
        } else if (kind < 10) {
          model.fill(0, offset, offset + length);
          ops.push(image.writeZeroes(offset, length));
        } else if (kind < 11) {
          ops.push(image.flush());
        } else if (kind < 12 && (compat === '1.1' || !base)) {
          const start = Math.ceil(offset / clusterSize) * clusterSize;
          const end = Math.floor((offset + length) / clusterSize) * clusterSize;
          if (start < end) model.fill(0, start, end);
          ops.push(image.discard(offset, length));
        } else {
          const expected = model.slice(offset, offset + Math.min(length, 8000));
          ops.push(image.read(offset, expected.byteLength).then((got) => expectBytes(got, expected, `seed ${seed}: read at ${offset}`)));
        }
      }
      await Promise.all(ops);
      if (prng.int(3) === 0) await new Promise((resolve) => setTimeout(resolve, prng.int(8)));
    }
    await judge({ image, file, base, model }, `mixed-${seed}-${session}`);
  }
}

describeWithQemu('mixed image kinds with timers firing among requests', () => {
  // Seed 298 (v2 overlay, 4 KiB clusters): a write into a pending cluster whose commit was in
  // progress (its entry set, the cluster not yet out of the pending table) took no lock, found
  // it pending, and committed it again, releasing the cluster it pointed at (refcount 0,
  // reference 1).
  it.each([298, 5, 77])('keeps every session consistent and equal to the model (seed %i)', async (seed) => {
    await mixedSessions(seed);
  });
});
