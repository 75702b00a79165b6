// SPDX-License-Identifier: MIT
// A backend for race tests: wraps another backend, delays each call by a seeded number of
// microtask turns (no timers, so a schedule replays exactly from its seed), can hold calls of one
// kind until released, records every call, and keeps the inner backend's bytes after close() so
// a test can hand them to QEMU. A call made after close() was called is recorded as a violation
// and rejected with BACKEND_CLOSED, as a closed backend would.

import type { Backend, BackendLimits } from '../../bindings/backends/backend.js';
import { BackendError } from '../../bindings/base/errors.js';
import { makePrng } from './prng.js';

type Op = 'getSize' | 'preadv' | 'pwritev' | 'flush' | 'truncate' | 'discard';

/** How calls are delayed, limited and held. */
export interface ScriptedOptions {
  /** Seed of the per-call delays (0..maxTurns microtask turns before and after the inner call). */
  seed?: number;
  maxTurns?: number;
  /** Limits the wrapper declares (default: the inner backend's). */
  limits?: BackendLimits;
  /** Milliseconds every preadv waits on a timer (a slow disk), default 0. */
  readDelayMs?: number;
}

/** One recorded call. */
export interface ScriptedCall { op: Op; position: number; length: number; afterClose: boolean }

/** The wrapper, its record and its controls. */
export interface ScriptedBackend extends Backend {
  readonly calls: ScriptedCall[];
  /** Calls that arrived once close() was called (the image closes its backend last: must stay empty). */
  readonly afterClose: ScriptedCall[];
  /** Parks every later call of `op` until release(op). */
  hold(op: Op): void;
  /** Lets the parked calls of `op` (and later ones) through. */
  release(op: Op): void;
  /** Number of calls of `op` parked now. */
  parked(op: Op): number;
  /** Resolves once a call of `op` is parked. */
  whenParked(op: Op): Promise<void>;
  /** The inner backend's bytes (readable after close()). */
  snapshot(): Promise<Uint8Array>;
}

/** Wraps `inner` (whose close() is never called: its bytes stay readable through snapshot()). */
export function scriptedBackend(inner: Backend, options: ScriptedOptions = {}): ScriptedBackend {
  const prng = makePrng(options.seed ?? 1);
  const maxTurns = options.maxTurns ?? 0;
  const calls: ScriptedCall[] = [];
  const afterClose: ScriptedCall[] = [];
  const held = new Map<Op, (() => void)[]>();
  const parkWaiters = new Map<Op, (() => void)[]>();
  let closing = false;

  const turns = async (): Promise<void> => {
    const n = maxTurns === 0 ? 0 : prng.int(maxTurns + 1);
    for (let i = 0; i < n; i++) await Promise.resolve();
  };

  const run = async <T>(op: Op, position: number, length: number, call: () => Promise<T>): Promise<T> => {
    const record: ScriptedCall = { op, position, length, afterClose: closing };
    calls.push(record);
    if (closing) {
      afterClose.push(record);
      throw new BackendError('BACKEND_CLOSED', `scripted(${inner.kind}): ${op} at ${position} after close()`);
    }
    const parked = held.get(op);
    if (parked) {
      await new Promise<void>((resolve) => {
        parked.push(resolve);
        for (const wake of parkWaiters.get(op) ?? []) wake();
        parkWaiters.delete(op);
      });
    }
    if (op === 'preadv' && options.readDelayMs) await new Promise((resolve) => setTimeout(resolve, options.readDelayMs));
    await turns();
    const result = await call();
    await turns();
    return result;
  };

  const bytesOf = (buffers: readonly Uint8Array[]) => buffers.reduce((n, b) => n + b.byteLength, 0);

  return {
    kind: `scripted(${inner.kind})`,
    capabilities: inner.capabilities,
    limits: options.limits ?? inner.limits,
    calls,
    afterClose,
    getSize: () => run('getSize', 0, 0, () => inner.getSize()),
    preadv: (position, buffers) => run('preadv', position, bytesOf(buffers), () => inner.preadv(position, buffers)),
    pwritev: (position, buffers) => run('pwritev', position, bytesOf(buffers), () => inner.pwritev(position, buffers)),
    flush: () => run('flush', 0, 0, () => inner.flush()),
    truncate: (size) => run('truncate', size, 0, () => inner.truncate!(size)),
    discard: (position, length) => run('discard', position, length, () => inner.discard!(position, length)),
    async close() {
      closing = true;
    },
    hold(op) {
      if (!held.has(op)) held.set(op, []);
    },
    release(op) {
      const parked = held.get(op) ?? [];
      held.delete(op);
      for (const resume of parked) resume();
    },
    parked: (op) => held.get(op)?.length ?? 0,
    whenParked(op) {
      if ((held.get(op)?.length ?? 0) > 0) return Promise.resolve();
      return new Promise((resolve) => {
        const waiters = parkWaiters.get(op) ?? [];
        waiters.push(resolve);
        parkWaiters.set(op, waiters);
      });
    },
    async snapshot() {
      const size = await inner.getSize();
      const bytes = new Uint8Array(size);
      await inner.preadv(0, [bytes]);
      return bytes;
    },
  };
}
