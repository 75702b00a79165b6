// SPDX-License-Identifier: MIT
// Failure behaviour of the multiwrite dispatcher over a backend that fails or delays chosen
// calls: every request settles exactly once, never while a host write over its bytes is still in
// flight; failed requests reject with IMAGE_IO_ERROR carrying the backend error as `cause`; the
// others resolve, and no sibling's failure settles a request early.

import { describe, it, expect } from 'vitest';
import { RawImage } from '../bindings/raw/raw-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { BackendError } from '../bindings/base/errors.js';
import type { WriteRequest } from '../bindings/dispatch/image.js';
import { wrapFaultyBackend, type FaultPlan } from './helpers/faulty-backend.js';
import { makePrng } from './helpers/prng.js';
import { ModelDisk } from './helpers/model.js';
import { expectBytes } from './helpers/bytes.js';

const SEED = Number(process.env.QCOW2_WASM_SEED ?? 7);
const filled = (length: number, value: number) => new Uint8Array(length).fill(value);

function requestBytes(request: WriteRequest): Uint8Array {
  return request.data instanceof Uint8Array ? request.data : new Uint8Array(Buffer.concat(request.data as Uint8Array[]));
}

describe('multiwrite under backend failures', () => {
  it('settles every request once, after the host writes over its bytes, with the right outcome (300 random batches)', async () => {
    const prng = makePrng(SEED);
    const plan: FaultPlan = {
      decide: (call) => call.op !== 'pwritev' ? undefined
        : { fail: prng.int(8) === 0, failAfter: prng.int(16) === 0, delayMs: prng.int(4) === 0 ? prng.int(3) : undefined },
    };
    const backend = wrapFaultyBackend(createMemoryBackend(1 << 20), plan);
    const image = await RawImage.open(backend, { merge: 'full' });
    const model = new ModelDisk();
    const WINDOW = 32 * 1024;
    for (let b = 0; b < 300; b++) {
      const base = prng.int(16) * WINDOW;
      const count = 1 + prng.int(12);
      const batch: WriteRequest[] = [];
      for (let i = 0; i < count; i++) {
        const length = 1 + prng.int(3000);
        batch.push({ offset: base + prng.int(WINDOW - length), data: prng.fill(new Uint8Array(length)) });
      }
      const firstCall = backend.calls.length;
      const settledWhileInFlight: string[] = [];
      const outcomes = await Promise.all(image.multiwrite(batch).map((promise, r) => {
        const { offset } = batch[r];
        const length = requestBytes(batch[r]).byteLength;
        const check = () => {
          const busy = backend.inFlightOver(offset, length, 'pwritev');
          if (busy.length > 0) settledWhileInFlight.push(`request ${r} settled while call ${busy[0].index} was in flight`);
        };
        return promise.then(() => { check(); return undefined; }, (error: unknown) => { check(); return error; });
      }));
      expect(settledWhileInFlight, `seed ${SEED}, batch ${b}`).toEqual([]);
      const failedCalls = backend.calls.slice(firstCall).filter((call) => call.op === 'pwritev' && call.outcome === 'injected');
      batch.forEach((request, r) => {
        const length = requestBytes(request).byteLength;
        const hitByFailure = failedCalls.some((call) => call.position < request.offset + length && request.offset < call.position + call.length);
        const outcome = outcomes[r];
        if (hitByFailure) {
          expect(outcome, `seed ${SEED}, batch ${b}, request ${r} should have failed`).toBeInstanceOf(Error);
          expect(outcome).toMatchObject({ code: 'IMAGE_IO_ERROR' });
          const cause = (outcome as Error).cause;
          expect(cause).toBeInstanceOf(BackendError);
          expect((cause as BackendError).cause).toMatchObject({ code: 'EIO' });
        } else {
          expect(outcome, `seed ${SEED}, batch ${b}, request ${r} should have succeeded`).toBeUndefined();
        }
      });
      // Bytes outside failed host writes hold exactly what the batch applied in order gives;
      // bytes under a failed write are unspecified, so the model adopts what the image holds.
      for (const request of batch) model.write(request.offset, request.data);
      const actual = await image.read(base, WINDOW);
      const expected = model.read(base, WINDOW);
      for (const call of failedCalls) {
        const from = Math.max(call.position, base) - base;
        const to = Math.min(call.position + call.length, base + WINDOW) - base;
        if (to > from) expected.set(actual.subarray(from, to), from);
      }
      expectBytes(actual, expected, `seed ${SEED}, batch ${b}`);
      model.write(base, actual);
    }
    expect(backend.calls.some((c) => c.outcome === 'injected')).toBe(true);
  });

  it('a failing sibling extent does not settle a request whose other extent is still held', async () => {
    // maxTransfer 1000 splits the 2500-byte request into three extents.
    const inner = createMemoryBackend(1 << 16);
    const backend = wrapFaultyBackend(Object.assign(Object.create(inner), inner, { limits: { maxIov: 1024, maxTransfer: 1000 } }), {
      decide: (call) => call.op !== 'pwritev' ? undefined : call.position === 0 ? { fail: true } : call.position === 1000 ? { hold: true } : undefined,
    });
    const image = await RawImage.open(backend);
    let settled = false;
    const promise = image.write(0, filled(2500, 1)).finally(() => { settled = true; });
    await backend.whenHeld(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(settled).toBe(false);
    backend.releaseAll();
    await expect(promise).rejects.toMatchObject({ code: 'IMAGE_IO_ERROR' });
    // The extents that did not fail landed.
    expectBytes(await image.read(1000, 1500), filled(1500, 1));
  });

  it('requests in unaffected extents resolve while another extent of the batch is held', async () => {
    const backend = wrapFaultyBackend(createMemoryBackend(1 << 16), {
      decide: (call) => (call.op === 'pwritev' && call.position === 8192 ? { hold: true } : undefined),
    });
    const image = await RawImage.open(backend);
    const [a, b, c] = image.multiwrite([
      { offset: 0, data: filled(100, 1) }, { offset: 8192, data: filled(100, 2) }, { offset: 100, data: filled(100, 3) },
    ]);
    await Promise.all([a, c]);
    let bSettled = false;
    void b.finally(() => { bSettled = true; });
    await backend.whenHeld(1);
    expect(bSettled).toBe(false);
    backend.releaseAll();
    await b;
  });

  it('a later overlapping write waits for an earlier held one and wins', async () => {
    let holdFirst = true;
    const backend = wrapFaultyBackend(createMemoryBackend(1 << 16), {
      decide: (call) => {
        if (call.op !== 'pwritev' || !holdFirst) return undefined;
        holdFirst = false;
        return { hold: true };
      },
    });
    const image = await RawImage.open(backend);
    const first = image.write(0, filled(1000, 1));
    await backend.whenHeld(1);
    const second = image.write(500, filled(1000, 2));
    await new Promise((resolve) => setTimeout(resolve, 10));
    // The second write must not reach the backend while the first is held.
    expect(backend.calls.filter((call) => call.op === 'pwritev')).toHaveLength(1);
    backend.releaseAll();
    await Promise.all([first, second]);
    const expected = filled(1500, 1);
    expected.fill(2, 500);
    expectBytes(await image.read(0, 1500), expected);
  });

  it('a failed read rejects with IMAGE_IO_ERROR caused by the backend error and leaves the image usable', async () => {
    let failReads = true;
    const backend = wrapFaultyBackend(createMemoryBackend(4096), {
      decide: (call) => (call.op === 'preadv' && failReads ? { fail: true } : undefined),
    });
    const image = await RawImage.open(backend);
    await image.write(0, filled(10, 9));
    const failure = await image.read(0, 10).catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: 'IMAGE_IO_ERROR' });
    expect((failure as Error).cause).toBeInstanceOf(BackendError);
    failReads = false;
    expectBytes(await image.read(0, 10), filled(10, 9));
  });
});
