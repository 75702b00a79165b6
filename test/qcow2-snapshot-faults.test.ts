// SPDX-License-Identifier: MIT
// Snapshot operations (create, delete, apply) on an open image whose backend fails one host read
// or write or flush, at every position the operation reaches. Whatever failed, the instance
// either goes on with tables that match the file (reads, writes and a flush work and agree with
// the model) or, when it could not read its tables back, refuses every later request with
// IMAGE_IO_ERROR; in both cases the closed file has no corruption and holds the model, by QEMU.

import { afterAll, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createQcow2 } from '../bindings/qcow2/qcow2-create.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { Qcow2WasmError } from '../bindings/base/errors.js';
import type { Backend } from '../bindings/backends/backend.js';
import { wrapFaultyBackend, type FaultOp } from './helpers/faulty-backend.js';
import { keepOpen } from './helpers/backend-contents.js';
import { convertToRaw, describeWithQemu, qemuCheck } from './helpers/qemu.js';
import { expectBytes } from './helpers/bytes.js';
import { makePrng } from './helpers/prng.js';

const KIB = 1024;
const SIZE = 1024 * KIB;

const scratch = mkdtempSync(join(tmpdir(), 'qcow2-snapshot-faults-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const codeOf = (error: unknown): string => (error instanceof Qcow2WasmError ? error.code : `untyped ${String(error)}`);

type Operation = 'create' | 'delete' | 'apply';

/** The store's bytes in a file for QEMU; returns its path. */
async function fileOf(store: Backend): Promise<string> {
  const path = join(scratch, 'image.qcow2');
  const bytes = new Uint8Array(await store.getSize());
  await store.preadv(0, [bytes]);
  writeFileSync(path, bytes);
  return path;
}

/** The guest view of the store's image as qemu-img reads it. */
async function fileContent(store: Backend): Promise<Uint8Array> {
  return convertToRaw(await fileOf(store));
}

/**
 * One run: two snapshots and writes, then `operation` with call `failAt` of `failOp` failing.
 * Returns whether that call was reached and whether the instance refused requests afterwards.
 */
async function faultRun(operation: Operation, failOp: FaultOp, failAt: number): Promise<{ reached: boolean; refused: boolean }> {
  const store = createMemoryBackend();
  await createQcow2(store, { virtualSize: SIZE, clusterSize: 4096 });
  let counting = false;
  let seen = 0;
  const faulty = wrapFaultyBackend(store, { decide: (call) => (counting && call.op === failOp && seen++ === failAt ? { fail: true } : undefined) });
  const image = await Qcow2Image.open(keepOpen(faulty), { cacheBytes: 4096 });
  const prng = makePrng(failAt);
  let model = new Uint8Array(SIZE);
  const writeSome = async () => {
    for (let i = 0; i < 12; i++) {
      const data = prng.fill(new Uint8Array(1 + prng.int(9000)));
      const offset = prng.int(SIZE - data.length);
      await image.write(offset, data);
      model.set(data, offset);
    }
  };
  await writeSome();
  await image.createSnapshot('a');
  const atA = model.slice();
  await writeSome();
  await image.createSnapshot('b');
  await writeSome();

  counting = true;
  const what = `${operation} with ${failOp} ${failAt} failing`;
  const outcome = await (operation === 'create' ? image.createSnapshot('c') : operation === 'delete' ? image.deleteSnapshot('a') : image.applySnapshot('a'))
    .then(() => 'ok', codeOf);
  counting = false;
  const reached = seen > failAt;
  expect(['ok', 'BACKEND_IO_ERROR', 'IMAGE_IO_ERROR'], `${what}: outcome`).toContain(outcome);
  if (operation === 'apply' && outcome === 'ok') model = atA.slice();

  if (outcome === 'IMAGE_IO_ERROR') {
    // The tables could not be read back: nothing may run on what is left in memory.
    for (const [name, request] of [['read', image.read(0, 4096)], ['write', image.write(0, new Uint8Array(4096).fill(7))],
      ['writeZeroes', image.writeZeroes(8192, 4096)], ['discard', image.discard(0, 65536)], ['flush', image.flush()],
      ['snapshots', image.snapshots()], ['createSnapshot', image.createSnapshot('d')]] as const) {
      expect(await (request as Promise<unknown>).then(() => 'ok', codeOf), `${what}: ${name} afterwards`).toBe('IMAGE_IO_ERROR');
    }
    await image.close();
    // A failed apply whose header write landed has taken effect.
    if (operation === 'apply' && outcome !== 'ok' && Buffer.compare(await fileContent(store), atA) === 0) model = atA.slice();
  } else {
    let now = await image.read(0, SIZE);
    // A failed apply whose header write landed has taken effect.
    if (operation === 'apply' && outcome !== 'ok' && Buffer.compare(now, atA) === 0) model = atA.slice();
    expectBytes(now, model, `${what}: the guest view afterwards`);
    await writeSome();
    await image.flush();
    now = await image.read(0, SIZE);
    expectBytes(now, model, `${what}: the guest view after more writes`);
    await image.close();
  }
  const path = await fileOf(store);
  const check = qemuCheck(path);
  expect({ exitCode: check.exitCode === 3 ? 0 : check.exitCode, corruptions: check.corruptions ?? 0 }, `${what}: qemu-img check (leaks allowed)`)
    .toEqual({ exitCode: 0, corruptions: 0 });
  expectBytes(convertToRaw(path), model, `${what}: the file by qemu-img convert`);
  return { reached, refused: outcome === 'IMAGE_IO_ERROR' };
}

describeWithQemu('snapshot operations with a failing host call', () => {
  // Found so: a read failing while the tables were read back after the operation left the core
  // with half-read tables, and the instance went on writing through them (guest data lost, the
  // refcount table overwritten, qemu-img check finding hundreds of corruptions).
  it.each(['create', 'delete', 'apply'] as const)('%s: every failing read, write and flush leaves a sound instance or a refusing one', async (operation) => {
    for (const failOp of ['preadv', 'pwritev', 'flush'] as const) {
      let refusals = 0;
      let failAt = 0;
      for (let run = await faultRun(operation, failOp, 0); run.reached; run = await faultRun(operation, failOp, ++failAt)) {
        if (run.refused) refusals++;
      }
      expect(failAt, `${operation}: ${failOp} calls reached`).toBeGreaterThan(0);
      // The last reads of an operation read the tables back: failing one makes the instance refuse.
      if (failOp === 'preadv') expect(refusals, `${operation}: runs ending in a refusing instance`).toBeGreaterThan(0);
    }
  }, 300_000);
});
