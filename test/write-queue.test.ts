// SPDX-License-Identifier: MIT
// WriteQueue and WritebackFlusher (bindings/backends/): neighbouring writes gathered into 4 MiB
// backend writes, at most two in flight, the first error kept, the final flush not queued behind
// an early one; a flush started after every
// interval of completed writes, one at a time, the next started as one ends when another interval
// completed meanwhile, none after settle() or a failure, its error surfacing from settle().

import { describe, expect, it } from 'vitest';
import type { Backend } from '../bindings/backends/backend.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { WriteQueue } from '../bindings/backends/write-queue.js';
import { WRITEBACK_INTERVAL_BYTES, WritebackFlusher } from '../bindings/backends/writeback.js';

const MIB = 1 << 20;

/** A memory backend whose writes wait until released, counting calls and the most in flight. */
function gatedBackend() {
  const inner = createMemoryBackend();
  const calls: { position: number; bytes: number }[] = [];
  const waiting: (() => void)[] = [];
  let inFlight = 0;
  let mostInFlight = 0;
  let flushes = 0;
  let failNextWrite = false;
  const backend: Backend = {
    ...inner,
    async pwritev(position, buffers) {
      calls.push({ position, bytes: buffers.reduce((sum, b) => sum + b.byteLength, 0) });
      inFlight++;
      mostInFlight = Math.max(mostInFlight, inFlight);
      await new Promise<void>((resolve) => waiting.push(resolve));
      inFlight--;
      if (failNextWrite) {
        failNextWrite = false;
        throw new Error('disk full');
      }
      return inner.pwritev(position, buffers);
    },
    async flush() {
      flushes++;
    },
  };
  return {
    backend, inner, calls,
    release: () => waiting.splice(0).forEach((resolve) => resolve()),
    stats: () => ({ mostInFlight, flushes }),
    failNextWrite: () => { failNextWrite = true; },
  };
}

/** Releases the gated writes until `done` settles. */
async function pump(gate: ReturnType<typeof gatedBackend>, done: Promise<unknown>): Promise<void> {
  let settled = false;
  void done.then(() => { settled = true; }, () => { settled = true; });
  while (!settled) {
    gate.release();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

describe('WriteQueue', () => {
  it('gathers neighbouring writes into 4 MiB backend writes, at most two in flight, in the right places', async () => {
    const gate = gatedBackend();
    const queue = new WriteQueue(gate.backend);
    const expected = new Uint8Array(13 * MIB);
    const run = (async () => {
      // 1 MiB pieces end to end up to 9 MiB, then a gap, then 3 MiB more.
      for (let at = 0; at < 13 * MIB; at += MIB) {
        if (at >= 9 * MIB && at < 10 * MIB) continue;
        const piece = new Uint8Array(MIB).fill((at / MIB) + 1);
        expected.set(piece, at);
        queue.write(at, piece);
        await queue.backpressure();
      }
      await queue.flush();
    })();
    await pump(gate, run);
    await run;
    expect(gate.calls).toEqual([
      { position: 0, bytes: 4 * MIB }, { position: 4 * MIB, bytes: 4 * MIB }, { position: 8 * MIB, bytes: MIB },
      { position: 10 * MIB, bytes: 3 * MIB },
    ]);
    expect(gate.stats().mostInFlight).toBeLessThanOrEqual(2);
    const stored = new Uint8Array(13 * MIB);
    await gate.inner.preadv(0, [stored]);
    expect(Buffer.compare(stored, expected)).toBe(0);
  });

  it('starts a flush once its first writes completed, while the stream goes on, and one more each interval', async () => {
    expect(WRITEBACK_INTERVAL_BYTES).toBeLessThanOrEqual(8 * MIB); // the device starts writing within the first MiBs
    const gate = gatedBackend();
    const queue = new WriteQueue(gate.backend);
    const flushesAfter: number[] = [];
    const run = (async () => {
      for (let at = 0; at < 3 * WRITEBACK_INTERVAL_BYTES; at += MIB) {
        queue.write(at, new Uint8Array(MIB).fill(at / MIB));
        await queue.backpressure();
        if ((at + MIB) % WRITEBACK_INTERVAL_BYTES === 0) {
          await queue.written();
          flushesAfter.push(gate.stats().flushes);
        }
      }
    })();
    await pump(gate, run);
    await run;
    expect(flushesAfter).toEqual([1, 2, 3]);
    await queue.flush();
    expect(gate.stats().flushes).toBe(4); // three early, one final
  });

  it('keeps the first write error: backpressure and flush reject with it, written() still resolves', async () => {
    const gate = gatedBackend();
    const queue = new WriteQueue(gate.backend);
    gate.failNextWrite();
    queue.write(0, new Uint8Array(4 * MIB));
    const written = queue.written();
    await pump(gate, written);
    await expect(written).resolves.toBeUndefined();
    await expect(queue.backpressure()).rejects.toThrow('disk full');
    await expect(queue.flush()).rejects.toThrow('disk full');
  });

  it('starts its final flush while an early-writeback flush still runs, and resolves only once both have', async () => {
    const inner = createMemoryBackend();
    const pending: ((error?: Error) => void)[] = [];
    const backend: Backend = {
      ...inner,
      flush: () => new Promise<void>((resolve, reject) => pending.push((error) => (error ? reject(error) : resolve()))),
    };
    const queue = new WriteQueue(backend);
    queue.write(0, new Uint8Array(WRITEBACK_INTERVAL_BYTES));
    await queue.written();
    expect(pending).toHaveLength(1); // the early flush, held
    let flushed = false;
    const flushing = queue.flush().then(() => { flushed = true; });
    for (let i = 0; i < 5; i++) await Promise.resolve();
    expect(pending).toHaveLength(2); // the final flush did not wait for the early one
    pending[1]();
    for (let i = 0; i < 5; i++) await Promise.resolve();
    expect(flushed).toBe(false); // the early one still runs
    pending[0]();
    await flushing;
    expect(flushed).toBe(true);
  });

  it('rejects its flush with an early-writeback flush\'s error, even when its own flush succeeds', async () => {
    const inner = createMemoryBackend();
    let calls = 0;
    const backend: Backend = { ...inner, flush: () => (++calls === 1 ? Promise.reject(new Error('device gone')) : Promise.resolve()) };
    const queue = new WriteQueue(backend);
    queue.write(0, new Uint8Array(WRITEBACK_INTERVAL_BYTES));
    await queue.written();
    await expect(queue.flush()).rejects.toThrow('device gone');
    expect(calls).toBe(2);
  });
});

describe('WritebackFlusher', () => {
  /** A memory backend whose flushes wait until finish() ends the oldest, counting them and the most at once. */
  function flushGate() {
    const inner = createMemoryBackend();
    const pending: (() => void)[] = [];
    let flushes = 0;
    let mostRunning = 0;
    const backend: Backend = {
      ...inner,
      flush: () => {
        flushes++;
        mostRunning = Math.max(mostRunning, pending.length + 1);
        return new Promise<void>((resolve) => pending.push(resolve));
      },
    };
    return {
      backend,
      flushes: () => flushes,
      mostRunning: () => mostRunning,
      /** Ends the flush in flight and lets the flusher react. */
      finish: async () => {
        pending.shift()!();
        for (let i = 0; i < 5; i++) await Promise.resolve();
      },
    };
  }


  it('starts one flush per interval of completed writes, never two at once, and none on a backend without durable flush', async () => {
    const gate = flushGate();
    const flusher = new WritebackFlusher(gate.backend, 10);
    flusher.completed(9);
    expect(gate.flushes()).toBe(0);
    flusher.completed(1);
    expect(gate.flushes()).toBe(1);
    flusher.completed(5); // a flush is running: none started
    expect(gate.flushes()).toBe(1);
    await gate.finish(); // 5 bytes since: not an interval
    expect(gate.flushes()).toBe(1);
    flusher.completed(5);
    expect(gate.flushes()).toBe(2);
    const settled = flusher.settle();
    await gate.finish();
    await settled;
    expect(gate.mostRunning()).toBe(1);

    const inner = createMemoryBackend();
    const barrierOnly: Backend = { ...inner, capabilities: { ...inner.capabilities, durableFlush: false }, flush: () => { throw new Error('not called'); } };
    const idle = new WritebackFlusher(barrierOnly, 10);
    idle.completed(100);
    await expect(idle.settle()).resolves.toBeUndefined();
  });

  it('starts the next flush as soon as one ends with another interval completed meanwhile, with no write completing', async () => {
    const gate = flushGate();
    const flusher = new WritebackFlusher(gate.backend, 10);
    flusher.completed(10);
    flusher.completed(25); // completed while the first flush runs
    expect(gate.flushes()).toBe(1);
    await gate.finish();
    expect(gate.flushes()).toBe(2);
    await gate.finish(); // nothing completed during the second: no third
    expect(gate.flushes()).toBe(2);
    expect(gate.mostRunning()).toBe(1);
  });

  it('starts no flush once settle() is called: it waits for the one in flight, and later writes are the final flush\'s', async () => {
    const gate = flushGate();
    const flusher = new WritebackFlusher(gate.backend, 10);
    flusher.completed(10);
    flusher.completed(30);
    let settled = false;
    const settling = flusher.settle().then(() => { settled = true; });
    await Promise.resolve();
    expect(settled).toBe(false);
    await gate.finish();
    await settling;
    expect(settled).toBe(true);
    flusher.completed(100);
    expect(gate.flushes()).toBe(1);
  });

  it('surfaces a failed flush from settle() and starts no flush after it', async () => {
    let flushes = 0;
    const inner = createMemoryBackend();
    const flusher = new WritebackFlusher({ ...inner, flush: () => { flushes++; return Promise.reject(new Error('flush failed')); } }, 1);
    flusher.completed(1);
    for (let i = 0; i < 5; i++) await Promise.resolve();
    flusher.completed(1);
    expect(flushes).toBe(1);
    await expect(flusher.settle()).rejects.toThrow('flush failed');
  });
});
