// SPDX-License-Identifier: MIT
// Tests of the test-only backend wrappers (helpers/faulty-backend.ts): both must honour the
// Backend contract themselves, and the fault injection, holds, records and reordering must work.

import { describe, expect, it } from 'vitest';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { BackendError } from '../bindings/base/errors.js';
import { backendConformanceSuite } from './backend-suite.js';
import { expectBytes } from './helpers/bytes.js';
import { wrapFaultyBackend, wrapReorderingBackend } from './helpers/faulty-backend.js';
import { makePrng } from './helpers/prng.js';

let reorderSeed = 100;
backendConformanceSuite(
  'reordering(memory)',
  async (initial, options) =>
    wrapReorderingBackend(createMemoryBackend(initial, { writable: options?.writable ?? true }), reorderSeed++),
  { farPosition: 2 ** 52 },
);

backendConformanceSuite(
  'faulty(memory) with random delays',
  async (initial, options) => {
    const prng = makePrng(7);
    return wrapFaultyBackend(createMemoryBackend(initial, { writable: options?.writable ?? true }), {
      decide: () => (prng.int(4) === 0 ? { delayMs: prng.int(3) } : undefined),
    });
  },
  { farPosition: 2 ** 40 },
);

/** Settles `promise` into a value: its rejection reason, or 'resolved'. */
const outcomeOf = (promise: Promise<unknown>): Promise<unknown> => promise.then(() => 'resolved', (e: unknown) => e);

describe('wrapFaultyBackend', () => {
  it('records every op with its range, outcome and sequence numbers', async () => {
    const f = wrapFaultyBackend(createMemoryBackend(100));
    await f.pwritev(5, [new Uint8Array(3), new Uint8Array(4)]);
    await f.preadv(1, [new Uint8Array(2)]);
    await f.flush();
    await f.truncate!(50);
    await f.discard!(8, 9);
    await f.getSize(); // not recorded
    expect(f.calls.map((c) => [c.index, c.op, c.position, c.length, c.outcome])).toEqual([
      [0, 'pwritev', 5, 7, 'ok'],
      [1, 'preadv', 1, 2, 'ok'],
      [2, 'flush', 0, 0, 'ok'],
      [3, 'truncate', 50, 0, 'ok'],
      [4, 'discard', 8, 9, 'ok'],
    ]);
    let last = 0;
    for (const c of f.calls) {
      expect(c.startedAt).toBeGreaterThan(last);
      expect(c.settledAt!).toBeGreaterThan(c.startedAt);
      last = c.settledAt!;
    }
    expect(f.mark()).toBeGreaterThan(last);
    expect(f.inFlight()).toEqual([]);
  });

  it('injects EIO failures without touching the inner backend, or after it (failAfter)', async () => {
    const inner = createMemoryBackend(Uint8Array.of(1, 2, 3, 4));
    const f = wrapFaultyBackend(inner, {
      decide: (c) => (c.index === 0 ? { fail: true } : c.index === 1 ? { failAfter: true } : undefined),
    });
    const first = await outcomeOf(f.pwritev(0, [Uint8Array.of(9)]));
    expect(first).toBeInstanceOf(BackendError);
    expect((first as BackendError).code).toBe('BACKEND_IO_ERROR');
    expect(((first as BackendError).cause as { code?: string }).code).toBe('EIO');
    const check = new Uint8Array(4);
    await inner.preadv(0, [check]);
    expectBytes(check, Uint8Array.of(1, 2, 3, 4), 'after an injected failure');

    const second = await outcomeOf(f.pwritev(1, [Uint8Array.of(8)]));
    expect((second as BackendError).code).toBe('BACKEND_IO_ERROR');
    await inner.preadv(0, [check]);
    expectBytes(check, Uint8Array.of(1, 8, 3, 4), 'failAfter: the write landed');

    expect(f.calls.map((c) => c.outcome)).toEqual(['injected', 'injected']);
    expect(f.calls[0]!.error).toBe(first);
  });

  it('passes the inner backend\'s own rejections through as outcome "error"', async () => {
    const f = wrapFaultyBackend(createMemoryBackend(10, { writable: false }));
    const err = await outcomeOf(f.pwritev(0, [Uint8Array.of(1)]));
    expect((err as BackendError).code).toBe('BACKEND_READ_ONLY');
    expect(f.calls[0]!.outcome).toBe('error');
  });

  it('holds calls until released, one by one or all, and reports them in flight', async () => {
    const inner = createMemoryBackend(1000);
    const f = wrapFaultyBackend(inner, { decide: (c) => ({ hold: c.op === 'pwritev' }) });
    const settledOrder: number[] = [];
    const writes = [0, 1, 2].map((i) =>
      f.pwritev(i * 100, [new Uint8Array(50).fill(i + 1)]).then(() => {
        settledOrder.push(i);
        return f.mark();
      }),
    );
    await f.whenHeld(3);
    expect(f.heldCalls().map((c) => c.index)).toEqual([0, 1, 2]);
    expect(f.inFlight().length).toBe(3);
    expect(f.inFlightOver(120, 10).map((c) => c.index)).toEqual([1]);
    expect(f.inFlightOver(150, 50)).toEqual([]); // [100, 150) ends where this starts
    expect(f.inFlightOver(0, 1000, 'preadv')).toEqual([]);
    // Reads are not held and see nothing of the held writes.
    const probe = new Uint8Array(1);
    await f.preadv(100, [probe]);
    expect(probe[0]).toBe(0);

    expect(f.release(1)).toBe(true);
    expect(f.release(1)).toBe(false);
    const markAfterSecond = await writes[1]!;
    expect(settledOrder).toEqual([1]);
    expect(f.calls[1]!.settledAt!).toBeLessThan(markAfterSecond);
    expect(f.inFlight().map((c) => c.index)).toEqual([0, 2]);
    await inner.preadv(100, [probe]);
    expect(probe[0]).toBe(2);

    expect(f.releaseAll()).toBe(2);
    await Promise.all(writes);
    expect(settledOrder.sort()).toEqual([0, 1, 2]);
    expect(f.inFlight()).toEqual([]);
    expect(f.heldCalls()).toEqual([]);
  });

  it('delays calls by delayMs', async () => {
    const f = wrapFaultyBackend(createMemoryBackend(10), { decide: () => ({ delayMs: 30 }) });
    const started = performance.now();
    await f.flush();
    expect(performance.now() - started).toBeGreaterThanOrEqual(25);
  });

  it('close() waits for calls in flight, then rejects later calls with BACKEND_CLOSED', async () => {
    const f = wrapFaultyBackend(createMemoryBackend(10), { decide: () => ({ hold: true }) });
    const write = f.pwritev(0, [Uint8Array.of(1)]);
    await f.whenHeld(1);
    let closed = false;
    const closing = f.close().then(() => {
      closed = true;
    });
    await new Promise((r) => setTimeout(r, 5));
    expect(closed).toBe(false);
    expect((await outcomeOf(f.flush()) as BackendError).code).toBe('BACKEND_CLOSED');
    f.releaseAll();
    await write;
    await closing;
    expect(closed).toBe(true);
  });
});

describe('wrapReorderingBackend', () => {
  it('completes concurrent calls out of order, with every write landing', async () => {
    const inner = createMemoryBackend();
    const r = wrapReorderingBackend(inner, 42);
    const order: number[] = [];
    await Promise.all(
      Array.from({ length: 64 }, (_, i) => r.pwritev(i * 10, [new Uint8Array(10).fill(i)]).then(() => order.push(i))),
    );
    expect(order.length).toBe(64);
    expect(order).not.toEqual([...order].sort((a, b) => a - b));
    const all = new Uint8Array(640);
    await inner.preadv(0, [all]);
    for (let i = 0; i < 64; i++) expect(all[i * 10 + 9]).toBe(i);
  });

  it('keeps the order of overlapping calls that the caller serialized by awaiting', async () => {
    const r = wrapReorderingBackend(createMemoryBackend(), 9);
    for (let i = 1; i <= 30; i++) await r.pwritev(0, [new Uint8Array(16).fill(i)]);
    const got = new Uint8Array(16);
    await r.preadv(0, [got]);
    expect([...got]).toEqual(new Array(16).fill(30));
  });
});
