// SPDX-License-Identifier: MIT
// A power-cut simulator for crash-consistency tests: a backend that records every host write and
// flush on one sequence clock, and afterwards rebuilds what the file could hold had the power
// failed at any point: what flushes made durable, plus any subset of the writes after them
// (unordered, some torn at 512-byte sectors).

import type { Backend } from '../../bindings/backends/backend.js';
import { totalLength } from '../../bindings/backends/backend.js';
import { BackendError } from '../../bindings/base/errors.js';
import type { Prng } from './prng.js';

/** Bytes of one sector: the unit a torn write keeps or loses. */
export const SECTOR_BYTES = 512;

/** One recorded host write. */
export interface HostWrite {
  /** Position in `writes` (the k of "cut after host write k"). */
  readonly index: number;
  readonly position: number;
  /** A copy of the bytes written. */
  readonly data: Uint8Array;
  /** Clock value when the call was made (and the live file changed). */
  readonly issuedAt: number;
  /** Clock value when its promise settled; undefined while in flight. */
  completedAt: number | undefined;
}

/** One recorded flush: durable for every write completed before `calledAt`, once it resolves. */
export interface HostFlush {
  readonly calledAt: number;
  resolvedAt: number | undefined;
}

/** Two host calls in flight together on overlapping bytes (a caller bug the backend contract forbids). */
export interface OverlapViolation { op: 'preadv' | 'pwritev'; position: number; length: number; against: number }

/** A crash state: the file's bytes after a power cut. */
export interface CrashState {
  bytes: Uint8Array;
  /** Unflushed writes kept whole, kept torn (some sectors), and lost. */
  kept: number;
  torn: number;
  lost: number;
}

/** What the simulator does to calls while recording. */
export interface CrashBackendOptions {
  /** Delays each call's completion by a few microtask turns or a 0 ms timer (completes calls out of order). */
  jitter?: Prng;
  /** Rejects reads after this many (turns a livelock that spins on slice loads into a failure). */
  maxReads?: number;
  /**
   * Makes every flush take a while: up to this many milliseconds (chosen by `jitter`, or exactly
   * this long without it), so that flushes overlap each other and later writes.
   */
  flushDelayMs?: number;
  /**
   * Makes writes slow: each takes up to this many milliseconds (chosen by `jitter`, or exactly
   * this long without it) to complete, so that flushes are called while writes are in flight.
   */
  writeDelayMs?: number;
}

/** A recording Backend over a flat in-memory file, and the crash states it can rebuild. */
export interface CrashBackend extends Backend {
  /** Every host write since recording started, in issue order. */
  readonly writes: readonly HostWrite[];
  /** Every flush since recording started, in call order. */
  readonly flushes: readonly HostFlush[];
  /** Overlapping calls seen in flight together (should stay empty). */
  readonly overlaps: readonly OverlapViolation[];
  /** Takes the next clock value, to place a test's own events among the calls. */
  mark(): number;
  /** The file as it is now (a copy). */
  snapshot(): Uint8Array;
  /**
   * Starts a replay over the recorded history: cut points must be asked for in increasing
   * order (durable contents are carried forward incrementally).
   */
  replay(): CrashReplay;
}

/** Walks cut points in order and builds crash states for each. */
export interface CrashReplay {
  /**
   * The clock value of the cut after host write `k`: just before write k + 1 was issued (or
   * after everything, for the last write). Everything recorded before it has happened.
   */
  cutClock(k: number): number;
  /** Moves the durable image to cut point `k` (k never decreases between calls). */
  advance(k: number): void;
  /** Writes issued up to the cut and not durable at it (each may or may not be in a crash state). */
  pending(): HostWrite[];
  /**
   * One crash state at the current cut: the durable bytes plus each pending write with
   * probability 1/2, of which a share `tornShare` keep only a random subset of their sectors.
   * Kept writes are applied in issue order (overlapping writes are never in flight together,
   * so this is the only order in which they could land over each other).
   */
  state(prng: Prng, tornShare: number): CrashState;
  /** The state where every pending write landed whole (no loss). */
  fullState(): CrashState;
  /** The state where every pending write was lost: only what flushes made durable. */
  durableState(): CrashState;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const sleep0 = (): Promise<void> => sleep(0);

/** A flat, growable byte file. */
class FlatFile {
  bytes = new Uint8Array(0);
  size = 0;

  constructor(initial: Uint8Array) {
    this.write(0, initial);
  }

  write(position: number, data: Uint8Array): void {
    const end = position + data.byteLength;
    if (end > this.bytes.byteLength) {
      const grown = new Uint8Array(Math.max(end, this.bytes.byteLength * 2));
      grown.set(this.bytes.subarray(0, this.size));
      this.bytes = grown;
    }
    this.bytes.set(data, position);
    if (end > this.size) this.size = end;
  }

  read(position: number, target: Uint8Array): void {
    target.fill(0);
    if (position >= this.size) return;
    target.set(this.bytes.subarray(position, Math.min(this.size, position + target.byteLength)));
  }

  /** True when the file already holds `data` at `position`. */
  holds(position: number, data: Uint8Array): boolean {
    const current = new Uint8Array(data.byteLength);
    this.read(position, current);
    return Buffer.compare(current, data) === 0;
  }

  copy(): Uint8Array {
    return this.bytes.slice(0, this.size);
  }
}

/** Applies `write` to `file`, keeping only its sectors (absolute 512-byte units) that `keep` accepts. */
function applyTorn(file: FlatFile, write: HostWrite, keep: () => boolean): number {
  const end = write.position + write.data.byteLength;
  let applied = 0;
  for (let start = write.position; start < end;) {
    const sectorEnd = Math.min(end, (Math.floor(start / SECTOR_BYTES) + 1) * SECTOR_BYTES);
    if (keep()) {
      file.write(start, write.data.subarray(start - write.position, sectorEnd - write.position));
      applied++;
    }
    start = sectorEnd;
  }
  return applied;
}

/**
 * A crash-recording backend whose file starts as `initial` (taken as durable). Capabilities:
 * writable, durable flush, no truncate or discard (the qcow2 engine uses neither after create).
 */
export function createCrashBackend(initial: Uint8Array, options: CrashBackendOptions = {}): CrashBackend {
  const live = new FlatFile(initial);
  const baseline = initial.slice();
  const writes: HostWrite[] = [];
  const flushes: HostFlush[] = [];
  const overlaps: OverlapViolation[] = [];
  const inFlight = new Set<HostWrite>();
  const readsInFlight = new Set<{ position: number; length: number }>();
  let clock = 0;
  let closed = false;
  let readBudget = options.maxReads ?? 0;

  const settle = async (): Promise<void> => {
    const prng = options.jitter;
    if (!prng) return;
    const r = prng.int(8);
    if (r === 7) await sleep0();
    else for (let i = 0; i < r; i++) await Promise.resolve();
  };
  const ensureOpen = (op: string): void => {
    if (closed) throw new BackendError('BACKEND_CLOSED', `crash backend: ${op} after close()`);
  };
  const overlapsRange = (a: number, aLength: number, b: number, bLength: number): boolean => a < b + bLength && b < a + aLength;

  const backend: CrashBackend = {
    kind: 'crash-sim',
    capabilities: Object.freeze({ writable: true, truncate: false, discard: false, durableFlush: true }),
    limits: Object.freeze({ maxIov: 1024, maxTransfer: 2 ** 31 - 4096 }),
    writes,
    flushes,
    overlaps,

    async getSize(): Promise<number> {
      ensureOpen('getSize');
      return live.size;
    },

    async preadv(position: number, buffers: readonly Uint8Array[]): Promise<void> {
      ensureOpen('preadv');
      if (options.maxReads !== undefined && --readBudget < 0) throw new BackendError('BACKEND_IO_ERROR', `crash backend: more than ${options.maxReads} reads`);
      const length = totalLength(buffers);
      for (const w of inFlight) {
        if (overlapsRange(position, length, w.position, w.data.byteLength)) overlaps.push({ op: 'preadv', position, length, against: w.index });
      }
      const read = { position, length };
      readsInFlight.add(read);
      try {
        const all = new Uint8Array(length);
        live.read(position, all);
        let at = 0;
        for (const b of buffers) {
          b.set(all.subarray(at, at + b.byteLength));
          at += b.byteLength;
        }
        await settle();
      } finally {
        readsInFlight.delete(read);
      }
    },

    async pwritev(position: number, buffers: readonly Uint8Array[]): Promise<void> {
      ensureOpen('pwritev');
      const length = totalLength(buffers);
      if (length === 0) return;
      const data = new Uint8Array(length);
      let at = 0;
      for (const b of buffers) {
        data.set(b, at);
        at += b.byteLength;
      }
      const write: HostWrite = { index: writes.length, position, data, issuedAt: ++clock, completedAt: undefined };
      for (const w of inFlight) {
        if (overlapsRange(position, length, w.position, w.data.byteLength)) overlaps.push({ op: 'pwritev', position, length, against: w.index });
      }
      for (const r of readsInFlight) {
        // Racing a read is harmless only when the write leaves the bytes as they were.
        if (overlapsRange(position, length, r.position, r.length) && !live.holds(position, data)) {
          overlaps.push({ op: 'pwritev', position, length, against: -1 });
        }
      }
      writes.push(write);
      inFlight.add(write);
      live.write(position, data);
      await settle();
      const slowest = options.writeDelayMs ?? 0;
      if (slowest > 0) await sleep(options.jitter ? options.jitter.int(slowest + 1) : slowest);
      inFlight.delete(write);
      write.completedAt = ++clock;
    },

    async flush(): Promise<void> {
      ensureOpen('flush');
      const record: HostFlush = { calledAt: ++clock, resolvedAt: undefined };
      flushes.push(record);
      await settle();
      const slowest = options.flushDelayMs ?? 0;
      if (slowest > 0) await sleep(options.jitter ? options.jitter.int(slowest + 1) : slowest);
      record.resolvedAt = ++clock;
    },

    async close(): Promise<void> {
      closed = true;
    },

    mark: () => ++clock,
    snapshot: () => live.copy(),

    replay(): CrashReplay {
      const durable = new FlatFile(baseline);
      const isDurable = new Uint8Array(writes.length);
      let nextFlush = 0;
      let cut = -1;
      let cutAt = 0;
      // In the order they resolved, not the order they were called: flushes overlap, and one
      // that resolves while an earlier one still runs makes its writes durable all the same.
      const successful = flushes.filter((f) => f.resolvedAt !== undefined).sort((a, b) => a.resolvedAt! - b.resolvedAt!);
      const pending = (): HostWrite[] => {
        const out: HostWrite[] = [];
        for (let i = 0; i <= cut; i++) if (!isDurable[i]) out.push(writes[i]);
        return out;
      };
      const cutClock = (k: number): number => (k + 1 < writes.length ? writes[k + 1].issuedAt - 0.5 : Number.POSITIVE_INFINITY);
      return {
        cutClock,
        advance(k: number): void {
          if (k < cut) throw new Error(`crash replay: cut points must not go back (${k} after ${cut})`);
          cut = k;
          cutAt = cutClock(k);
          // Flushes resolved before the cut make the writes completed before their call durable.
          while (nextFlush < successful.length && successful[nextFlush].resolvedAt! < cutAt) {
            const calledAt = successful[nextFlush++].calledAt;
            for (const w of writes) {
              if (!isDurable[w.index] && w.completedAt !== undefined && w.completedAt < calledAt) {
                isDurable[w.index] = 1;
                durable.write(w.position, w.data);
              }
            }
          }
        },
        pending,
        state(prng: Prng, tornShare: number): CrashState {
          const file = new FlatFile(durable.copy());
          let kept = 0;
          let torn = 0;
          let lost = 0;
          for (const w of pending()) {
            if (prng.int(2) === 0) {
              lost++;
              continue;
            }
            if (prng.next() / 2 ** 32 < tornShare) {
              torn++;
              applyTorn(file, w, () => prng.int(2) === 0);
            } else {
              kept++;
              file.write(w.position, w.data);
            }
          }
          return { bytes: file.copy(), kept, torn, lost };
        },
        durableState(): CrashState {
          return { bytes: durable.copy(), kept: 0, torn: 0, lost: pending().length };
        },
        fullState(): CrashState {
          const file = new FlatFile(durable.copy());
          const all = pending();
          for (const w of all) file.write(w.position, w.data);
          return { bytes: file.copy(), kept: all.length, torn: 0, lost: 0 };
        },
      };
    },
  };
  return backend;
}
