// SPDX-License-Identifier: MIT
// A crash-simulator workload built to overlap flushes: guest writes to disjoint ranges (rewrites
// of allocated clusters, which need no metadata, and first writes of new ones), and flush() calls
// made while other flushes are still in flight: right after a write is acknowledged, between
// writes, several in one tick; on a backend whose flushes are slow. What must survive a power cut
// at any point: every write acknowledged before a flush was called, once that flush resolved.

import { Qcow2Image } from '../../bindings/qcow2/qcow2-image.js';
import type { OpenOptions } from '../../bindings/dispatch/image.js';
import { createMemoryBackend } from '../../bindings/backends/memory.js';
import { createCrashBackend, type CrashBackend } from './crash-backend.js';
import { makePrng } from './prng.js';

/** One guest write of the workload and when the engine acknowledged it (crash-backend clock). */
export interface AckedWrite {
  offset: number;
  data: Uint8Array;
  /** Clock value when its promise resolved; undefined if it never did. */
  ackedAt: number | undefined;
}

/** One guest flush: called and (once it resolved) resolved, on the crash-backend clock. */
export interface GuestFlushRecord {
  calledAt: number;
  resolvedAt: number | undefined;
}

/** What the workload did. */
export interface FlushWorkloadRecord {
  backend: CrashBackend;
  virtualSize: number;
  writes: AckedWrite[];
  flushes: GuestFlushRecord[];
  /** Most guest flushes in flight at once. */
  maxFlushesInFlight: number;
  /** Failures of guest requests (there should be none). */
  errors: unknown[];
}

/** Settings of the workload. */
export interface FlushWorkloadSetting {
  clusterSize: number;
  virtualSize: number;
  /** Bytes at the start of the disk written (allocated) before the workload: rewrites there need no metadata. */
  prefilledBytes: number;
  /** Guest writes to issue. */
  writes: number;
  /** Longest backend flush, in milliseconds. */
  flushDelayMs: number;
  /** Longest host write, in milliseconds (default 0: writes complete within a 0 ms timer). */
  writeDelayMs?: number;
  /** Options for opening the image under test (beyond its 4 KiB metadata cache). */
  openOptions?: OpenOptions;
}

/**
 * Runs the workload for `seed`. Writes go to consecutive disjoint slots (so no write hides
 * another), first over the prefilled part (in place), then past it (allocating).
 */
export async function runFlushOverlapWorkload(setting: FlushWorkloadSetting, seed: number): Promise<FlushWorkloadRecord> {
  const prng = makePrng(seed);
  const { virtualSize, clusterSize } = setting;
  // The image, with the prefilled part written, closed: that file is the durable start.
  const store = createMemoryBackend();
  const setup = await Qcow2Image.create(store, { virtualSize, clusterSize });
  await setup.write(0, makePrng(seed ^ 0xf111).fill(new Uint8Array(setting.prefilledBytes)));
  await setup.flush();
  const initial = new Uint8Array(await store.getSize());
  await store.preadv(0, [initial]);
  await setup.close();

  const backend = createCrashBackend(initial, { jitter: makePrng(seed ^ 0x5bd1e995), flushDelayMs: setting.flushDelayMs, writeDelayMs: setting.writeDelayMs });
  const disk = await Qcow2Image.open(backend, { cacheBytes: 4096, ...setting.openOptions });
  const writes: AckedWrite[] = [];
  const flushes: GuestFlushRecord[] = [];
  const errors: unknown[] = [];
  const inFlight = new Set<Promise<void>>();
  let flushesInFlight = 0;
  let maxFlushesInFlight = 0;
  let slot = prng.int(setting.prefilledBytes >> 1);

  const track = (promise: Promise<void>) => {
    const tracked = promise.catch((error: unknown) => { errors.push(error); }).finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
  };
  // A write issued the moment a flush resolves lands while any backend flush still runs: a cut
  // point there sees whether that flush resolved too early.
  const flush = (thenWrite: boolean) => {
    const record: GuestFlushRecord = { calledAt: backend.mark(), resolvedAt: undefined };
    flushes.push(record);
    flushesInFlight++;
    maxFlushesInFlight = Math.max(maxFlushesInFlight, flushesInFlight);
    track(disk.flush().then(() => {
      record.resolvedAt = backend.mark();
      if (thenWrite) write(0);
    }).finally(() => { flushesInFlight--; }));
  };
  /** A write; once acknowledged, `thenFlushes` flushes in one tick (the last writes on once it resolves). */
  const write = (thenFlushes: number) => {
    // Mostly in the prefilled part (in place); sometimes past it (a new cluster, metadata).
    const length = 1 + prng.int(prng.int(4) === 0 ? 3 * clusterSize : 1024);
    if (prng.int(5) === 0 && slot < setting.prefilledBytes) slot = setting.prefilledBytes + prng.int(clusterSize);
    if (slot + length > virtualSize) return;
    const record: AckedWrite = { offset: slot, data: prng.fill(new Uint8Array(length)), ackedAt: undefined };
    slot += length + prng.int(64);
    writes.push(record);
    track(disk.write(record.offset, record.data).then(() => {
      record.ackedAt = backend.mark();
      for (let i = 1; i <= thenFlushes; i++) flush(i === thenFlushes);
    }));
  };

  for (let step = 0; step < setting.writes; step++) {
    const choice = prng.int(10);
    if (choice < 4) write(1 + prng.int(3));
    else if (choice < 7) {
      write(0);
      flush(prng.int(2) === 0);
    } else if (choice < 8) {
      flush(false);
      flush(true);
    } else {
      write(0);
    }
    const wait = prng.int(6);
    if (wait === 0) await new Promise((resolve) => setTimeout(resolve, prng.int(3)));
    else if (wait === 1 && inFlight.size > 0) await Promise.race(inFlight);
    while (inFlight.size > 24) await Promise.race(inFlight);
  }
  while (inFlight.size > 0) await Promise.all(inFlight);
  await disk.close();
  return { backend, virtualSize, writes, flushes, maxFlushesInFlight, errors };
}

/**
 * The writes a power cut at `cutClock` must keep: those acknowledged before the call of a flush
 * that resolved before the cut.
 */
export function guaranteedWrites(record: FlushWorkloadRecord, cutClock: number): AckedWrite[] {
  let coveredBefore = -Infinity;
  for (const f of record.flushes) {
    if (f.resolvedAt !== undefined && f.resolvedAt < cutClock) coveredBefore = Math.max(coveredBefore, f.calledAt);
  }
  return record.writes.filter((w) => w.ackedAt !== undefined && w.ackedAt < coveredBefore);
}
