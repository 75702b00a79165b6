// SPDX-License-Identifier: MIT
// Backend wrappers for failure and ordering tests: one injects failures, delays and manual holds
// and records every call on a sequence clock; the other completes calls out of order.

import type { Backend } from '../../bindings/backends/backend.js';
import { totalLength } from '../../bindings/backends/backend.js';
import { BackendError } from '../../bindings/base/errors.js';
import { makePrng } from './prng.js';

/** The recorded operations (getSize and close pass through unrecorded). */
export type FaultOp = 'preadv' | 'pwritev' | 'flush' | 'truncate' | 'discard';

/**
 * One call as the plan sees it. `index` is its position in `calls`; `position`/`length` are the
 * byte range (flush: 0/0; truncate: the new size/0; discard: its range).
 */
export interface FaultCallInfo {
  readonly index: number;
  readonly op: FaultOp;
  readonly position: number;
  readonly length: number;
}

/**
 * What happens to one call, in this order: wait `delayMs` milliseconds; then, with `hold`, wait
 * until release(index)/releaseAll(); then, with `fail`, reject with an injected EIO without
 * touching the inner backend; otherwise run the inner call, and with `failAfter` reject with an
 * injected EIO even though it completed (a write that landed but reported failure).
 */
export interface FaultDecision {
  fail?: boolean;
  failAfter?: boolean;
  delayMs?: number;
  hold?: boolean;
}

/** Decides each call's fate; no `decide` (or an undefined answer) passes the call straight through. */
export interface FaultPlan {
  decide?(call: FaultCallInfo): FaultDecision | undefined | void;
}

/** How a call ended: still running, inner success, injected failure, or the inner backend's own rejection. */
export type FaultOutcome = 'pending' | 'ok' | 'injected' | 'error';

/**
 * The record of one call. `startedAt` and `settledAt` come from one sequence clock shared by every
 * start, every settle and mark(), so they order events across calls. `settledAt` is taken just
 * before the caller's promise settles: anything the caller does in reaction to it (e.g. mark())
 * gets a larger number.
 */
export interface FaultCallRecord extends FaultCallInfo {
  readonly decision: Readonly<FaultDecision>;
  readonly startedAt: number;
  settledAt: number | undefined;
  outcome: FaultOutcome;
  /** The rejection reason when outcome is 'injected' or 'error'. */
  error: unknown;
  /** True while the call waits for release (from its start if `hold`, until released). */
  held: boolean;
}

/** A Backend that forwards to `inner` under a FaultPlan, plus inspection and gate control. */
export interface FaultyBackend extends Backend {
  /** The wrapped backend (e.g. for checking contents without going through the plan). */
  readonly inner: Backend;
  /** Every recorded call in start order; records update in place as calls settle. */
  readonly calls: readonly FaultCallRecord[];
  /** Calls started and not yet settled, in start order. */
  inFlight(): FaultCallRecord[];
  /** In-flight calls whose byte range overlaps [position, position + length), optionally of one op. */
  inFlightOver(position: number, length: number, op?: FaultOp): FaultCallRecord[];
  /** Calls currently held (decided `hold` and not released yet). */
  heldCalls(): FaultCallRecord[];
  /** Resolves once at least `count` calls are held at the same time. */
  whenHeld(count: number): Promise<void>;
  /** Lets the held call `index` continue; false when it is not (or no longer) held. */
  release(index: number): boolean;
  /** Lets every currently held call continue; returns how many were released. */
  releaseAll(): number;
  /** Takes the next number of the sequence clock, to place a test's own events among the calls'. */
  mark(): number;
}

/** The error of an injected failure: BACKEND_IO_ERROR caused by an Error with code 'EIO'. */
export function injectedIoError(op: string, position: number, length: number): BackendError {
  const cause = Object.assign(new Error(`EIO: i/o error, ${op} (injected)`), { code: 'EIO', errno: -5, syscall: op });
  return new BackendError('BACKEND_IO_ERROR', `injected fault: ${op} at ${position} (+${length} bytes)`, { cause });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Wraps `inner` so each preadv/pwritev/flush/truncate/discard call is recorded and handled as
 * `plan.decide` says (see FaultDecision). Capabilities and limits are the inner backend's;
 * truncate/discard exist when the inner backend has them. close() waits until every recorded
 * call has settled (release held calls first, or it waits for them) and then closes `inner`;
 * calls after close() reject with BACKEND_CLOSED without being recorded.
 */
export function wrapFaultyBackend(inner: Backend, plan: FaultPlan = {}): FaultyBackend {
  const calls: FaultCallRecord[] = [];
  const gates = new Map<number, () => void>();
  const heldWaiters: Array<{ count: number; resolve: () => void }> = [];
  const settling = new Set<Promise<unknown>>();
  let clock = 0;
  let closing: Promise<void> | undefined;

  const heldCount = (): number => gates.size;
  const wakeHeldWaiters = (): void => {
    for (let i = heldWaiters.length - 1; i >= 0; i--) {
      const waiter = heldWaiters[i]!;
      if (heldCount() >= waiter.count) {
        heldWaiters.splice(i, 1);
        waiter.resolve();
      }
    }
  };

  const closedError = (op: string): BackendError =>
    new BackendError('BACKEND_CLOSED', `faulty(${inner.kind}): ${op} after close()`);

  function run(op: FaultOp, position: number, length: number, call: () => Promise<void>): Promise<void> {
    if (closing !== undefined) return Promise.reject(closedError(op));
    const index = calls.length;
    const decision: FaultDecision = { ...(plan.decide?.({ index, op, position, length }) ?? {}) };
    const record: FaultCallRecord = {
      index, op, position, length, decision,
      startedAt: ++clock, settledAt: undefined, outcome: 'pending', error: undefined, held: false,
    };
    calls.push(record);
    let gate: Promise<void> | undefined;
    if (decision.hold) {
      record.held = true;
      gate = new Promise<void>((resolve) => gates.set(index, resolve));
      wakeHeldWaiters();
    }
    const promise = (async () => {
      try {
        if (decision.delayMs !== undefined && decision.delayMs > 0) await sleep(decision.delayMs);
        if (gate) await gate;
        if (decision.fail) throw injectedIoError(op, position, length);
        try {
          await call();
        } catch (err) {
          record.outcome = 'error';
          throw err;
        }
        if (decision.failAfter) throw injectedIoError(op, position, length);
        record.outcome = 'ok';
      } catch (err) {
        if (record.outcome === 'pending') record.outcome = 'injected';
        record.error = err;
        record.settledAt = ++clock;
        throw err;
      }
      record.settledAt = ++clock;
    })();
    settling.add(promise);
    const forget = () => {
      settling.delete(promise);
    };
    promise.then(forget, forget);
    return promise;
  }

  const release = (index: number): boolean => {
    const open = gates.get(index);
    if (open === undefined) return false;
    gates.delete(index);
    calls[index]!.held = false;
    open();
    return true;
  };

  const faulty: FaultyBackend = {
    kind: `faulty(${inner.kind})`,
    capabilities: inner.capabilities,
    limits: inner.limits,
    inner,
    calls,

    getSize: () => (closing !== undefined ? Promise.reject(closedError('getSize')) : inner.getSize()),
    preadv: (position, buffers) => run('preadv', position, totalLength(buffers), () => inner.preadv(position, buffers)),
    pwritev: (position, buffers) => run('pwritev', position, totalLength(buffers), () => inner.pwritev(position, buffers)),
    flush: () => run('flush', 0, 0, () => inner.flush()),

    close(): Promise<void> {
      if (closing === undefined) {
        closing = (async () => {
          await Promise.allSettled([...settling]);
          await inner.close();
        })();
      }
      return closing;
    },

    inFlight: () => calls.filter((c) => c.settledAt === undefined),
    inFlightOver: (position, length, op) =>
      calls.filter((c) => c.settledAt === undefined && (op === undefined || c.op === op) &&
        c.position < position + length && position < c.position + c.length),
    heldCalls: () => calls.filter((c) => c.held),
    whenHeld: (count) =>
      heldCount() >= count ? Promise.resolve() : new Promise<void>((resolve) => heldWaiters.push({ count, resolve })),
    release,
    releaseAll(): number {
      let released = 0;
      for (const index of [...gates.keys()]) if (release(index)) released++;
      return released;
    },
    mark: () => ++clock,
  };
  if (typeof inner.truncate === 'function') {
    faulty.truncate = (size) => run('truncate', size, 0, () => inner.truncate!(size));
  }
  if (typeof inner.discard === 'function') {
    faulty.discard = (position, length) => run('discard', position, length, () => inner.discard!(position, length));
  }
  return faulty;
}

/**
 * Wraps `inner` so calls complete out of order: each preadv/pwritev/flush/truncate/discard/getSize
 * waits a pseudo-random while before reaching `inner` and again before settling (a few microtask
 * turns, or a 0-3 ms timer), chosen by a PRNG seeded with `seed`. It only delays: a call settles
 * only after the inner call completed, so callers that order overlapping calls by awaiting them
 * (the contract's clause 3) still see their order. close() waits for calls in flight, then closes
 * `inner`; calls after close() reject with BACKEND_CLOSED.
 */
export function wrapReorderingBackend(inner: Backend, seed: number): Backend {
  const prng = makePrng(seed);
  const inFlight = new Set<Promise<unknown>>();
  let closing: Promise<void> | undefined;

  const jitter = async (): Promise<void> => {
    const r = prng.int(8);
    if (r < 4) {
      for (let i = 0; i < r * 3; i++) await Promise.resolve();
    } else {
      await sleep(r - 4); // 0..3 ms
    }
  };

  const run = <T>(op: string, call: () => Promise<T>): Promise<T> => {
    if (closing !== undefined) {
      return Promise.reject(new BackendError('BACKEND_CLOSED', `reordering(${inner.kind}): ${op} after close()`));
    }
    const promise = (async () => {
      await jitter();
      let result: T;
      try {
        result = await call();
      } catch (err) {
        await jitter();
        throw err;
      }
      await jitter();
      return result;
    })();
    inFlight.add(promise);
    const forget = () => {
      inFlight.delete(promise);
    };
    promise.then(forget, forget);
    return promise;
  };

  const wrapped: Backend = {
    kind: `reordering(${inner.kind})`,
    capabilities: inner.capabilities,
    limits: inner.limits,
    getSize: () => run('getSize', () => inner.getSize()),
    preadv: (position, buffers) => run('preadv', () => inner.preadv(position, buffers)),
    pwritev: (position, buffers) => run('pwritev', () => inner.pwritev(position, buffers)),
    flush: () => run('flush', () => inner.flush()),
    close(): Promise<void> {
      if (closing === undefined) {
        closing = (async () => {
          await Promise.allSettled([...inFlight]);
          await inner.close();
        })();
      }
      return closing;
    },
  };
  if (typeof inner.truncate === 'function') {
    wrapped.truncate = (size) => run('truncate', () => inner.truncate!(size));
  }
  if (typeof inner.discard === 'function') {
    wrapped.discard = (position, length) => run('discard', () => inner.discard!(position, length));
  }
  return wrapped;
}
