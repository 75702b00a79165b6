// SPDX-License-Identifier: MIT
// Fault injection at every Nth backend call (reads, writes and flushes alike), with EIO and
// ENOSPC: every guest request settles, once, either resolved or with IMAGE_IO_ERROR (flush with
// the backend's error); the engine keeps serving (a failed metadata write stays dirty and is
// retried, a failed flush stays owed); whatever was acknowledged and then flushed reads back;
// afterwards the closed file, reopened by this package and read by qemu-img, holds every
// acknowledged write, and check() and qemu-img check find no corruption (leaks allowed).
//
// Reproduce: QCOW2_WASM_SEED=<seed printed>.

import { it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import type { Backend } from '../bindings/backends/backend.js';
import { BackendError } from '../bindings/base/errors.js';
import { checkQcow2 } from '../bindings/qcow2/qcow2-check.js';
import { describeWithQemu, qemuCheck, convertToRaw } from './helpers/qemu.js';
import { makePrng } from './helpers/prng.js';
import { ModelDisk } from './helpers/model.js';

const SEED = Number(process.env.QCOW2_WASM_SEED ?? 777);
const KiB = 1024;
const MiB = 1024 * KiB;

/** `inner` failing every `every`-th preadv/pwritev/flush (while `on()`) with a platform error of `code`. */
function failEveryNth(inner: Backend, every: number, code: 'EIO' | 'ENOSPC', on: () => boolean): Backend & { failed: number } {
  let calls = 0;
  const wrapped = {
    kind: `every-${every}-${code}`, capabilities: inner.capabilities, limits: inner.limits, failed: 0,
    getSize: () => inner.getSize(),
    close: async () => {},
    preadv: (p: number, b: readonly Uint8Array[]) => gate('preadv', () => inner.preadv(p, b)),
    pwritev: (p: number, b: readonly Uint8Array[]) => gate('pwritev', () => inner.pwritev(p, b)),
    flush: () => gate('flush', () => inner.flush()),
  };
  function gate(op: string, call: () => Promise<void>): Promise<void> {
    if (on() && ++calls % every === 0) {
      wrapped.failed++;
      const cause = Object.assign(new Error(`${code}: injected, ${op}`), { code });
      return Promise.reject(new BackendError('BACKEND_IO_ERROR', `injected ${code} on ${op}`, { cause }));
    }
    return call();
  }
  return wrapped;
}

describeWithQemu('fault injection at every Nth backend call', () => {
  let dir: string;
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-faults-')); });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  for (const code of ['EIO', 'ENOSPC'] as const) {
    it(`${code} at every 3rd, 5th, 7th, 11th and 17th call: requests settle once, nothing acknowledged is lost, no corruption`, async () => {
      let failedRequests = 0;
      let injected = 0;
      for (const every of [3, 5, 7, 11, 17]) {
        const seed = SEED + every;
        const where = `${code} every ${every}, seed ${seed} (QCOW2_WASM_SEED=${SEED})`;
        const store = createMemoryBackend();
        const created = await Qcow2Image.create({ ...store, close: async () => {} } as Backend, { virtualSize: 2 * MiB, clusterSize: 4 * KiB });
        await created.close();
        // Open itself fails on a failing read (with the backend's error); the faults start after it.
        let faults = false;
        const backend = failEveryNth(store, every, code, () => faults);
        const disk = await Qcow2Image.open(backend, { cacheBytes: 4 * KiB });
        faults = true;
        const prng = makePrng(seed);
        /** What every byte must read as after a successful flush; `unknown` marks bytes a failed write left unspecified. */
        const model = new ModelDisk();
        const unknown = new ModelDisk();
        for (let round = 0; round < 30; round++) {
          const batch = Array.from({ length: 1 + prng.int(6) }, () => {
            const length = 1 + prng.int(20 * KiB);
            return { offset: prng.int(2 * MiB - length), data: prng.fill(new Uint8Array(length)) };
          });
          const zero = { offset: prng.int(MiB), length: 1 + prng.int(64 * KiB) };
          let settled = 0;
          const promises = [...disk.multiwrite(batch), disk.writeZeroes(zero.offset, zero.length)];
          for (const p of promises) p.then(() => { settled++; }, () => { settled++; });
          const outcomes = await Promise.allSettled(promises);
          await Promise.resolve();
          expect(settled, `${where}, round ${round}: every request settles exactly once`).toBe(promises.length);
          outcomes.forEach((outcome, i) => {
            const range = i < batch.length ? { offset: batch[i].offset, length: batch[i].data.byteLength } : zero;
            if (outcome.status === 'rejected') {
              failedRequests++;
              expect(outcome.reason, `${where}: a failed request's error`).toMatchObject({ code: 'IMAGE_IO_ERROR' });
              expect(String((outcome.reason as Error).message), where).toContain(code);
              unknown.write(range.offset, new Uint8Array(range.length).fill(1));
            } else {
              if (i < batch.length) model.write(range.offset, batch[i].data);
              else model.zero(range.offset, range.length);
              unknown.zero(range.offset, range.length);
            }
          });
          const flushed = await disk.flush().then(() => true, (error: unknown) => {
            expect(error, `${where}: a failed flush's error`).toMatchObject({ code: 'BACKEND_IO_ERROR' });
            return false;
          });
          if (!flushed) continue;
          // Acknowledged bytes read back (checked with faults paused: a read may fail too).
          faults = false;
          const lost = firstLost(await disk.read(0, 2 * MiB), model, unknown);
          faults = true;
          if (lost !== undefined) throw new Error(`${where}, round ${round}: acknowledged byte ${lost} lost`);
        }
        faults = false;
        await disk.close();
        injected += backend.failed;
        // The file after close, reopened: every acknowledged byte is there.
        const reopened = await Qcow2Image.open(createMemoryBackend(await bytesOf(store), { writable: false }), { readOnly: true });
        const lostInFile = firstLost(await reopened.read(0, 2 * MiB), model, unknown);
        await reopened.close();
        expect(lostInFile, `${where}: acknowledged byte lost in the reopened file`).toBeUndefined();
        const ours = await checkQcow2(createMemoryBackend(await bytesOf(store), { writable: false }));
        expect({ corruptions: ours.corruptions, checkErrors: ours.checkErrors }, `${where}: check()`).toEqual({ corruptions: 0, checkErrors: 0 });
        const path = join(dir, `faults-${code}-${every}.qcow2`);
        writeFileSync(path, await bytesOf(store));
        expect(firstLost(convertToRaw(path), model, unknown), `${where}: acknowledged byte lost in the file as qemu-img reads it`).toBeUndefined();
        const qemu = qemuCheck(path);
        expect({ corruptions: qemu.corruptions ?? 0, errors: qemu['check-errors'], leaks: qemu.leaks ?? 0 }, `${where}: qemu-img check`)
          .toEqual({ corruptions: 0, errors: 0, leaks: ours.leaks });
      }
      expect(failedRequests).toBeGreaterThan(0);
      console.log(`faults ${code}: ${injected} injected failures at every 3rd..17th call, ${failedRequests} requests rejected with IMAGE_IO_ERROR; ` +
        'acknowledged data survived every successful flush; check() and qemu-img check found no corruption');
    }, 300_000);
  }
});

async function bytesOf(backend: Backend): Promise<Uint8Array> {
  const bytes = new Uint8Array(await backend.getSize());
  await backend.preadv(0, [bytes]);
  return bytes;
}

/** The first guest offset where `got` differs from `model` outside the bytes `unknown` marks, or undefined. */
function firstLost(got: Uint8Array, model: ModelDisk, unknown: ModelDisk): number | undefined {
  const want = model.read(0, got.byteLength);
  const mask = unknown.read(0, got.byteLength);
  for (let i = 0; i < got.byteLength; i++) {
    if (mask[i] === 0 && got[i] !== want[i]) return i;
  }
  return undefined;
}
