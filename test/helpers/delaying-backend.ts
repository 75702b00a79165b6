// SPDX-License-Identifier: MIT
// A backend wrapper that delays and reorders calls as far as the backend contract lets a real
// platform do, and checks that its caller keeps its side of the contract:
// - calls on non-overlapping ranges complete in any order: each call waits a seeded while before
//   it reaches the inner backend and again before it settles (microtask turns, short timers,
//   now and then a long one);
// - flush() is a barrier for the writes completed before it was called, and nothing more: the
//   wrapper tracks which completed writes a resolved flush made durable, so a test can ask
//   whether everything completed before some moment is durable now;
// - the caller must not have two calls on overlapping bytes in flight when one of them writes,
//   and must not call anything after close(): both are recorded as violations (a read racing a
//   write that leaves the bytes as they were is harmless and not recorded);
// - optional small `limits` (maxIov, maxTransfer) that merged writes must respect (larger calls
//   still work, as the contract allows, but are counted).

import type { Backend, BackendLimits } from '../../bindings/backends/backend.js';
import { totalLength } from '../../bindings/backends/backend.js';
import { BackendError } from '../../bindings/base/errors.js';
import type { Prng } from './prng.js';

/** A caller's breach of the backend contract, as the wrapper saw it. */
export interface ContractViolation {
  what: 'overlap' | 'after-close';
  op: string;
  position: number;
  length: number;
  /** For an overlap: the call already in flight over the same bytes. */
  against?: { op: string; position: number; length: number };
  /** For a call after close(): where it came from (the caller's frames). */
  stack?: string;
}

/** Options of wrapDelayingBackend. */
export interface DelayingBackendOptions {
  /** Chooses every delay; the same seed gives the same schedule for the same call sequence. */
  prng: Prng;
  /** Limits to declare instead of the inner backend's. */
  limits?: BackendLimits;
  /** Share (0..1) of waits that are a long timer (5-20 ms) instead of a short one. Default 0.02. */
  longDelayShare?: number;
  /** Closes the inner backend on close() (default true; false keeps it readable for the test). */
  closeInner?: boolean;
}

/** The wrapper, plus what it observed. */
export interface DelayingBackend extends Backend {
  readonly inner: Backend;
  /** Contract breaches by the caller so far (should stay empty; ask once calls have settled). */
  violations(): ContractViolation[];
  /** Calls whose size exceeded the declared limits (allowed by the contract; counted). */
  readonly overLimitCalls: number;
  /** Identifies the writes completed so far that no resolved flush has made durable yet. */
  undurableWrites(): ReadonlySet<number>;
  /** True when every write in `writes` has been made durable by a resolved flush. */
  allDurable(writes: ReadonlySet<number>): boolean;
  /** Host calls started, by kind. */
  readonly counts: { preadv: number; pwritev: number; flush: number };
}

interface InFlightCall {
  op: string;
  position: number;
  length: number;
  writes: boolean;
  /** pwritev: the bytes written, and what the file held there just before (once read). */
  data?: Uint8Array;
  before?: Uint8Array;
}

/** A read and a write in flight together over the same bytes: a violation only if the write changed them. */
interface ReadWriteRace { read: InFlightCall; write: InFlightCall }

function concat(buffers: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(totalLength(buffers));
  let at = 0;
  for (const b of buffers) {
    out.set(b, at);
    at += b.byteLength;
  }
  return out;
}

/** True when `write` changes any byte it shares with `read` (unknown: assume it does). */
function changesSharedBytes(read: InFlightCall, write: InFlightCall): boolean {
  if (!write.data || !write.before) return true;
  const start = Math.max(read.position, write.position) - write.position;
  const end = Math.min(read.position + read.length, write.position + write.length) - write.position;
  return Buffer.compare(write.data.subarray(start, end), write.before.subarray(start, end)) !== 0;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Wraps `inner` (see the file comment). */
export function wrapDelayingBackend(inner: Backend, options: DelayingBackendOptions): DelayingBackend {
  const { prng } = options;
  const longShare = options.longDelayShare ?? 0.02;
  const limits = options.limits ?? inner.limits;
  const violations: ContractViolation[] = [];
  const races: ReadWriteRace[] = [];
  const inFlight = new Set<InFlightCall>();
  const running = new Set<Promise<unknown>>();
  /** Writes completed and not yet covered by a resolved flush. */
  const undurable = new Set<number>();
  let nextWriteId = 0;
  let overLimitCalls = 0;
  let closing: Promise<void> | undefined;
  const counts = { preadv: 0, pwritev: 0, flush: 0 };

  const wait = async (): Promise<void> => {
    const roll = prng.next() / 2 ** 32;
    if (roll < longShare) return sleep(5 + prng.int(16));
    const r = prng.int(10);
    if (r < 6) {
      for (let i = 0; i < r * 2; i++) await Promise.resolve();
    } else {
      await sleep(r - 6); // 0..3 ms
    }
  };

  const checkOverlap = (call: InFlightCall): void => {
    if (call.length === 0) return;
    for (const other of inFlight) {
      if (!call.writes && !other.writes) continue;
      if (other.length === 0) continue;
      if (call.position < other.position + other.length && other.position < call.position + call.length) {
        if (call.writes !== other.writes) {
          races.push(call.writes ? { read: other, write: call } : { read: call, write: other });
          continue;
        }
        violations.push({ what: 'overlap', op: call.op, position: call.position, length: call.length,
          against: { op: other.op, position: other.position, length: other.length } });
      }
    }
  };

  const run = <T>(op: string, position: number, length: number, writes: boolean, call: (record: InFlightCall) => Promise<T>,
    data?: Uint8Array): Promise<T> => {
    if (closing !== undefined) {
      const stack = new Error().stack?.split('\n').slice(3, 9).map((line) => line.trim()).join(' < ');
      violations.push({ what: 'after-close', op, position, length, stack });
      return Promise.reject(new BackendError('BACKEND_CLOSED', `delaying(${inner.kind}): ${op} after close()`));
    }
    const record: InFlightCall = { op, position, length, writes, data };
    checkOverlap(record);
    inFlight.add(record);
    const promise = (async () => {
      try {
        await wait();
        const result = await call(record);
        await wait();
        return result;
      } finally {
        inFlight.delete(record);
      }
    })();
    running.add(promise);
    const forget = () => { running.delete(promise); };
    promise.then(forget, forget);
    return promise;
  };

  const countLimits = (buffers: readonly Uint8Array[]): number => {
    const length = totalLength(buffers);
    if (buffers.length > limits.maxIov || length > limits.maxTransfer) overLimitCalls++;
    return length;
  };

  const wrapped: DelayingBackend = {
    kind: `delaying(${inner.kind})`,
    capabilities: inner.capabilities,
    limits,
    inner,
    violations: () => [
      ...violations,
      ...races.filter((race) => changesSharedBytes(race.read, race.write)).map((race): ContractViolation => ({
        what: 'overlap', op: race.read.op, position: race.read.position, length: race.read.length,
        against: { op: race.write.op, position: race.write.position, length: race.write.length },
      })),
    ],
    counts,
    get overLimitCalls() { return overLimitCalls; },
    getSize: () => run('getSize', 0, 0, false, () => inner.getSize()),
    preadv(position, buffers) {
      counts.preadv++;
      return run('preadv', position, countLimits(buffers), false, () => inner.preadv(position, buffers));
    },
    pwritev(position, buffers) {
      counts.pwritev++;
      const id = nextWriteId++;
      const length = countLimits(buffers);
      return run('pwritev', position, length, true, async (record) => {
        // What the bytes held before, to tell a harmless race with a read from a real one.
        const before = new Uint8Array(length);
        await inner.preadv(position, [before]);
        record.before = before;
        await inner.pwritev(position, buffers);
        undurable.add(id);
      }, concat(buffers));
    },
    flush() {
      counts.flush++;
      // Only writes completed by the time of the call are covered (contract clause 4).
      const covered = [...undurable];
      return run('flush', 0, 0, false, async () => {
        await inner.flush();
        for (const id of covered) undurable.delete(id);
      });
    },
    undurableWrites: () => new Set(undurable),
    allDurable(writes) {
      for (const id of writes) if (undurable.has(id)) return false;
      return true;
    },
    close(): Promise<void> {
      closing ??= (async () => {
        await Promise.allSettled([...running]);
        if (options.closeInner ?? true) await inner.close();
      })();
      return closing;
    },
  };
  if (typeof inner.truncate === 'function') {
    wrapped.truncate = (size) => run('truncate', size, Number.MAX_SAFE_INTEGER - size, true, () => inner.truncate!(size));
  }
  if (typeof inner.discard === 'function') {
    wrapped.discard = (position, length) => run('discard', position, length, true, () => inner.discard!(position, length));
  }
  return wrapped;
}
