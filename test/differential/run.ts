// SPDX-License-Identifier: MIT
// One differential stress run: a seeded workload on one image kind, in phases, against a flat
// model disk. Each phase opens the image (memory or file backend, behind a delaying, reordering
// wrapper that checks the backend contract), with seeded options (cache size, merge mode, deferred
// copy-on-write, backend limits), and submits operations without awaiting them: multiwrite
// batches, writes (same-tick writes batch), reads checked against the model as of their
// submission, writeZeroes, discards, flushes (checked: everything the backend had completed before
// the call is durable when it resolves), merge-mode switches, sleeps across the deferred-COW timer,
// drains, and sometimes close() with requests still in flight. After each phase: the whole disk
// reads as the model, close, qemu-img check is clean (no errors, no corruption, no leaks),
// qemu-img convert gives the model's bytes, an internal snapshot is unchanged; then the next phase
// reopens the file. Every failure names the seed and a replay command.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Qcow2Image } from '../../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../../bindings/backends/memory.js';
import { openNodeBackend } from '../../bindings/backends/node.js';
import type { Backend } from '../../bindings/backends/backend.js';
import type { OpenOptions, WriteRequest } from '../../bindings/dispatch/image.js';
import type { MergeMode } from '../../bindings/core/merge-core.js';
import { Qcow2WasmError } from '../../bindings/base/errors.js';
import { convertToRaw, qemuCheck } from '../helpers/qemu.js';
import { makePrng, type Prng } from '../helpers/prng.js';
import { wrapDelayingBackend, type DelayingBackend } from '../helpers/delaying-backend.js';
import { IMAGE_FILE, IMAGE_KINDS, snapshotContent, type BuiltImage, type ImageKind } from './image-kinds.js';

/** How much one run does. */
export interface RunSize {
  /** The size's name (QCOW2_WASM_DIFF_SIZE replays with it). */
  name: string;
  phases: number;
  operationsPerPhase: number;
  /** Most operations in flight at once. */
  maxInFlight: number;
  /** How long a phase's operations may take to settle before the run counts as hung. */
  settleTimeoutMs: number;
}

/** What a run did, for the closing summary. */
export interface RunCounts {
  phases: number;
  batches: number;
  requests: number;
  writes: number;
  reads: number;
  zeroes: number;
  discards: number;
  flushes: number;
  sleeps: number;
  modeSwitches: number;
  closesInFlight: number;
  /** Phases during which the refcount table grew (its cluster count in the header rose). */
  reftableGrowths: number;
  hostWrites: number;
  hostFlushes: number;
}

/** A failed run: the message names the seed, the kind and the replay command. */
export class DifferentialFailure extends Error {}
DifferentialFailure.prototype.name = 'DifferentialFailure';

/** The shell command that replays `seed` on image kind `kindIndex`. */
export function replayCommand(kindIndex: number, seed: number, sizeName: string): string {
  return `QCOW2_WASM_DIFF_KIND=${kindIndex} QCOW2_WASM_DIFF_SEED=${seed} QCOW2_WASM_DIFF_SIZE=${sizeName} ` +
    'npx vitest run --project node test/differential/differential.test.ts';
}

const MERGE_MODES: readonly MergeMode[] = ['full', 'adjacent', 'off'];
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const describeError = (error: unknown): string => {
  if (error instanceof Qcow2WasmError) return `${error.name} ${error.code}: ${error.message}`;
  if (error instanceof Error) return `UNTYPED ${error.name}: ${error.message}\n${error.stack ?? ''}`;
  return `UNTYPED non-Error: ${String(error)}`;
};

/** Rejects with `what` unless `promise` settles within `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string | (() => string)): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: ${typeof what === 'string' ? what : what()} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The first difference between two equally long byte arrays, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.byteLength !== b.byteLength) return Math.min(a.byteLength, b.byteLength);
  if (Buffer.compare(a, b) === 0) return -1;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** Describes where `got` differs from `expected` (which start at guest `base`). */
function differenceReport(got: Uint8Array, expected: Uint8Array, base: number): string {
  const first = firstDifference(got, expected);
  if (got.byteLength !== expected.byteLength) return `length ${got.byteLength}, expected ${expected.byteLength}`;
  let bytes = 0;
  let last = first;
  for (let i = first; i < got.byteLength; i++) if (got[i] !== expected[i]) { bytes++; last = i; }
  return `${bytes} bytes differ in guest [${base + first}, ${base + last + 1}); first at ${base + first}: got 0x${got[first].toString(16)}, ` +
    `expected 0x${expected[first].toString(16)}`;
}

/** Everything one phase needs to know and record. */
interface PhaseContext {
  built: BuiltImage;
  model: Uint8Array;
  prng: Prng;
  counts: RunCounts;
  size: RunSize;
  /** Failures so far (the run stops after the phase that found the first). */
  failures: string[];
  phase: number;
  /** refcount_table_clusters in the header after the last phase. */
  reftableClusters: number;
}

/** Byte offset of refcount_table_clusters (u32, big-endian) in a qcow2 header. */
const REFTABLE_CLUSTERS_FIELD = 56;

function refcountTableClusters(path: string): number {
  return new DataView(readFileSync(path).buffer).getUint32(REFTABLE_CLUSTERS_FIELD);
}

/** Runs one seed on one image kind. Throws DifferentialFailure (with seed and replay) on any finding. */
export async function runDifferential(kindIndex: number, seed: number, size: RunSize, scratch: string): Promise<RunCounts> {
  const kind = IMAGE_KINDS[kindIndex];
  const where = `image kind ${kindIndex} '${kind.name}', seed ${seed}`;
  const counts: RunCounts = { phases: 0, batches: 0, requests: 0, writes: 0, reads: 0, zeroes: 0, discards: 0, flushes: 0,
    sleeps: 0, modeSwitches: 0, closesInFlight: 0, reftableGrowths: 0, hostWrites: 0, hostFlushes: 0 };
  const dir = mkdtempSync(join(scratch, 'run-'));
  const failures: string[] = [];
  const onUnhandled = (reason: unknown) => { failures.push(`unhandled rejection: ${describeError(reason)}`); };
  process.on('unhandledRejection', onUnhandled);
  let keep = false;
  try {
    const prng = makePrng(seed);
    const built = await buildKind(kind, dir, seed);
    const context: PhaseContext = { built, model: built.content.slice(), prng, counts, size, failures, phase: 0,
      reftableClusters: refcountTableClusters(join(dir, IMAGE_FILE)) };
    for (let phase = 0; phase < size.phases && failures.length === 0; phase++) {
      context.phase = phase;
      try {
        await runPhase(context);
      } catch (error) {
        failures.push(`phase ${phase}: ${error instanceof Error && error.message.startsWith('hang:') ? error.message : describeError(error)}`);
      }
      counts.phases++;
    }
    if (failures.length > 0) {
      keep = true;
      throw new DifferentialFailure(`${where}: ${failures.length} finding(s):\n  ${failures.slice(0, 12).join('\n  ')}\n` +
        `files kept in ${dir}\nreplay: ${replayCommand(kindIndex, seed, size.name)}`);
    }
    return counts;
  } finally {
    process.off('unhandledRejection', onUnhandled);
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
}

function buildKind(kind: ImageKind, dir: string, seed: number): Promise<BuiltImage> {
  return kind.build(dir, makePrng(seed ^ 0x5eed));
}

/** Opens the image of one phase: memory or file backend behind the delaying wrapper. */
async function openPhase(context: PhaseContext): Promise<{ disk: Qcow2Image; wrapper: DelayingBackend; backings: DelayingBackend[]; memory: Backend | undefined; options: string }> {
  const { built, prng } = context;
  const path = join(built.dir, IMAGE_FILE);
  const useFile = prng.int(4) === 0;
  const memory = useFile ? undefined : createMemoryBackend(new Uint8Array(readFileSync(path)));
  const inner = memory ?? (await openNodeBackend(path, { writable: true }));
  const smallLimits = prng.int(8) === 0 ? { maxIov: 2 + prng.int(15), maxTransfer: 4096 * (1 + prng.int(8)) } : undefined;
  const delayPrng = makePrng(prng.next());
  const wrapper = wrapDelayingBackend(inner, { prng: delayPrng, limits: smallLimits, closeInner: !memory });
  const backings: DelayingBackend[] = [];
  const openBacking = async (name: string): Promise<Backend> => {
    const backingPath = join(built.dir, name);
    const backingInner = memory ? createMemoryBackend(new Uint8Array(readFileSync(backingPath)), { writable: false }) : await openNodeBackend(backingPath);
    const backing = wrapDelayingBackend(backingInner, { prng: makePrng(delayPrng.next()) });
    backings.push(backing);
    return backing;
  };
  const cacheBytes = built.cacheChoices[prng.int(built.cacheChoices.length)];
  const merge = MERGE_MODES[prng.int(MERGE_MODES.length)];
  const deferRoll = prng.int(4);
  const deferredCow: OpenOptions['deferredCow'] = deferRoll === 0 ? false : deferRoll === 1 ? true : { delayMs: prng.int(12), maxPending: 1 + prng.int(8) };
  const open: OpenOptions = { merge, deferredCow, openBacking, ...(cacheBytes !== undefined ? { cacheBytes } : {}) };
  const disk = await Qcow2Image.open(wrapper, open);
  const options = `${useFile ? 'file' : 'memory'} backend${smallLimits ? ` (maxIov ${smallLimits.maxIov}, maxTransfer ${smallLimits.maxTransfer})` : ''}, ` +
    `cacheBytes ${cacheBytes ?? 'default'}, merge '${merge}', deferredCow ${JSON.stringify(deferredCow)}`;
  return { disk, wrapper, backings, memory, options };
}

/** Picks a guest range: short or long, aligned or not, near a cursor (streams) or anywhere. */
function rangePicker(prng: Prng, virtualSize: number, clusterSize: number): () => { offset: number; length: number } {
  let cursor = 0;
  // Operations crowd into a hot spot half the time, so they overlap in flight.
  const hotStart = prng.int(Math.max(1, virtualSize - 256 * 1024));
  return () => {
    const shape = prng.int(12);
    let length: number;
    if (shape < 4) length = 1 + prng.int(Math.min(2 * clusterSize, 16384));
    else if (shape < 7) length = clusterSize * (1 + prng.int(4));
    else if (shape < 9) length = 1 + prng.int(4 * clusterSize + 65536);
    else if (shape < 11) length = 512 * (1 + prng.int(16));
    else length = prng.int(3); // empty and tiny requests
    length = Math.min(length, virtualSize);
    let offset: number;
    const where = prng.int(10);
    if (where < 3) offset = Math.min(cursor, virtualSize - length);
    else if (where < 6) offset = Math.min(virtualSize - length, hotStart + prng.int(256 * 1024));
    else if (where < 7) offset = virtualSize - length; // the end of the disk
    else offset = prng.int(virtualSize - length + 1);
    if (shape >= 4 && shape < 7 && prng.int(2) === 0) offset = Math.min(virtualSize - length, Math.floor(offset / clusterSize) * clusterSize);
    cursor = (offset + length) % virtualSize;
    return { offset, length };
  };
}

/** Data for a request: one buffer, or sometimes an iovec list of several. */
function requestData(prng: Prng, length: number): Uint8Array | Uint8Array[] {
  const whole = prng.fill(new Uint8Array(length));
  if (length < 2 || prng.int(5) !== 0) return whole;
  const parts: Uint8Array[] = [];
  for (let at = 0; at < length;) {
    const take = Math.min(length - at, 1 + prng.int(Math.max(1, length >> 1)));
    parts.push(whole.slice(at, at + take));
    at += take;
  }
  return parts;
}

function applyToModel(model: Uint8Array, offset: number, data: Uint8Array | readonly Uint8Array[]): void {
  let at = offset;
  for (const part of data instanceof Uint8Array ? [data] : data) {
    model.set(part, at);
    at += part.byteLength;
  }
}

async function runPhase(context: PhaseContext): Promise<void> {
  const { built, model, prng, counts, size, failures } = context;
  const { disk, wrapper, backings, memory, options } = await openPhase(context);
  const label = `phase ${context.phase} (${options})`;
  const { virtualSize, clusterSize } = built;
  const pick = rangePicker(prng, virtualSize, clusterSize);
  const deferDelay = 12;
  const inFlight = new Map<Promise<void>, string>();
  const fail = (message: string) => { if (failures.length < 50) failures.push(`${label}: ${message}`); };
  // Starts an API call and checks how it settles; a synchronous throw is a finding too (every
  // call reports through its promise).
  const track = (what: string, start: () => Promise<unknown>, check?: (value: unknown) => void) => {
    let promise: Promise<unknown>;
    try {
      promise = start();
    } catch (error) {
      fail(`${what} threw synchronously: ${describeError(error)}`);
      return;
    }
    const tracked = promise.then(
      (value) => { check?.(value); },
      (error: unknown) => { fail(`${what} rejected: ${describeError(error)}`); })
      .finally(() => { inFlight.delete(tracked); });
    inFlight.set(tracked, what);
  };
  const drain = () => within(Promise.all(inFlight.keys()), size.settleTimeoutMs,
    () => `${inFlight.size} operations (${[...inFlight.values()].slice(0, 6).join('; ')})`);
  const submitRead = (op: number, offset: number, length: number) => {
    const expected = model.slice(offset, offset + length);
    counts.reads++;
    track(`op ${op}: read(${offset}, ${length})`, () => disk.read(offset, length), (value) => {
      const got = value as Uint8Array;
      if (firstDifference(got, expected) >= 0) fail(`op ${op}: read(${offset}, ${length}) differs from the model: ${differenceReport(got, expected, offset)}`);
    });
  };

  const submitZeroes = (op: number) => {
    const { offset, length } = pick();
    model.fill(0, offset, offset + length);
    track(`op ${op}: writeZeroes(${offset}, ${length})`, () => disk.writeZeroes(offset, length));
    counts.zeroes++;
  };
  const submitDiscard = (op: number) => {
    const { offset, length } = pick();
    // What the image documents: whole clusters read as zeros afterwards (v3, or no backing
    // file; a range reaching the end of the disk covers the last cluster), the rest keeps its data.
    const start = Math.ceil(offset / clusterSize) * clusterSize;
    const end = offset + length === virtualSize ? virtualSize : Math.floor((offset + length) / clusterSize) * clusterSize;
    if (built.discardZeroes && start < end) model.fill(0, start, end);
    track(`op ${op}: discard(${offset}, ${length})`, () => disk.discard(offset, length));
    counts.discards++;
  };
  const submitFlush = (op: number) => {
    // Everything the backend completed before the call must be durable once it resolves.
    const covered = wrapper.undurableWrites();
    counts.flushes++;
    track(`op ${op}: flush()`, () => disk.flush(), () => {
      if (!wrapper.allDurable(covered)) {
        fail(`op ${op}: flush() resolved while host writes completed before it was called were not yet durable (no backend flush covering them had resolved)`);
      }
    });
  };

  let closing: Promise<void> | undefined;
  const closeInFlight = prng.int(3) === 0 ? prng.int(size.operationsPerPhase) : -1;
  for (let op = 0; op < size.operationsPerPhase && failures.length === 0; op++) {
    if (op === closeInFlight) {
      // close() with requests in flight: every one submitted before it must still complete.
      counts.closesInFlight++;
      closing = disk.close();
      track(`op ${op}: close() with ${inFlight.size} in flight`, () => closing!);
      break;
    }
    const choice = prng.int(100);
    if (choice < 22) {
      const batch: WriteRequest[] = [];
      const stream = prng.int(3) === 0;
      // Now and then a stream of many tiny requests: more than one extent's iovec holds.
      const tiny = stream && prng.int(6) === 0;
      let { offset } = pick();
      for (let i = tiny ? 100 + prng.int(1100) : 1 + prng.int(stream ? 40 : 10); i > 0; i--) {
        let length: number;
        if (stream) {
          // A sequential stream, unaligned, with small gaps now and then (gap merges), and
          // sometimes empty requests.
          length = Math.min(virtualSize - offset, tiny ? prng.int(24) : 1 + prng.int(3000));
          batch.push({ offset, data: requestData(prng, length) });
          offset += length + (prng.int(4) === 0 ? 1 + prng.int(200) : 0);
          if (offset >= virtualSize) offset = 0;
        } else {
          ({ offset, length } = pick());
          batch.push({ offset, data: requestData(prng, length) });
        }
      }
      for (const request of batch) applyToModel(model, request.offset, request.data);
      let promises: Promise<void>[] = [];
      try {
        promises = disk.multiwrite(batch);
      } catch (error) {
        fail(`op ${op}: multiwrite of ${batch.length} requests threw synchronously: ${describeError(error)}`);
      }
      promises.forEach((promise, i) => track(`op ${op}: multiwrite request ${i} of ${batch.length} at ${batch[i].offset}`, () => promise));
      counts.batches++;
      counts.requests += batch.length;
    } else if (choice < 36) {
      // A few writes in one tick (the dispatcher batches them).
      for (let i = 1 + (prng.int(3) === 0 ? prng.int(6) : 0); i > 0; i--) {
        const { offset, length } = pick();
        const data = prng.fill(new Uint8Array(length));
        model.set(data, offset);
        track(`op ${op}: write(${offset}, ${length})`, () => disk.write(offset, data));
        counts.writes++;
      }
    } else if (choice < 60) {
      const { offset, length } = pick();
      submitRead(op, offset, length);
    } else if (choice < 76) {
      // Zeroing and discards, sometimes several in one tick and a flush with them (zeroing racing
      // a metadata write-back).
      for (let i = prng.int(4) === 0 ? 2 + prng.int(8) : 1; i > 0; i--) {
        if (prng.int(9) < 5) submitZeroes(op);
        else submitDiscard(op);
      }
      if (prng.int(4) === 0) submitFlush(op);
    } else if (choice < 84) {
      submitFlush(op);
    } else if (choice < 88) {
      disk.mergeMode = MERGE_MODES[prng.int(MERGE_MODES.length)];
      counts.modeSwitches++;
    } else if (choice < 92) {
      // Past the deferred copy-on-write timer, with everything still in flight.
      counts.sleeps++;
      await sleep(prng.int(deferDelay + 6));
    } else if (choice < 95) {
      await drain();
    }
    while (inFlight.size >= size.maxInFlight) await within(Promise.race(inFlight.keys()), size.settleTimeoutMs, 'the oldest operation');
  }

  if (closing) {
    // Calls after close() must reject with IMAGE_CLOSED, as promises.
    for (const [what, call] of [['read', () => disk.read(0, 1)], ['write', () => disk.write(0, new Uint8Array(1))],
      ['flush', () => disk.flush()]] as const) {
      track(`${what} after close()`, async () => {
        try {
          await call();
        } catch (error) {
          if (error instanceof Qcow2WasmError && error.code === 'IMAGE_CLOSED') return;
          throw error;
        }
        throw new Error(`${what} after close() resolved`);
      });
    }
  }
  await drain();
  if (!closing) {
    // The whole disk reads as the model, then close.
    const piece = 256 * 1024;
    for (let offset = 0; offset < virtualSize; offset += piece) submitRead(-1, offset, Math.min(piece, virtualSize - offset));
    await drain();
    await within(disk.close(), size.settleTimeoutMs, 'close()');
  } else {
    await within(closing, size.settleTimeoutMs, 'close()');
  }
  // Anything the engine still does after close() resolved lands here as a contract violation.
  await sleep(20);
  counts.hostWrites += wrapper.counts.pwritev;
  counts.hostFlushes += wrapper.counts.flush;
  for (const backend of [wrapper, ...backings]) {
    for (const v of backend.violations().slice(0, 5)) {
      fail(`backend contract broken by the engine on ${backend.kind}: ${v.what} ${v.op} [${v.position}, +${v.length})` +
        (v.against ? ` while ${v.against.op} [${v.against.position}, +${v.against.length}) was in flight` : '') +
        (v.stack ? `, called from ${v.stack}` : ''));
    }
  }
  if (failures.length > 0) return;

  // QEMU judges the file.
  const path = join(built.dir, IMAGE_FILE);
  if (memory) {
    const bytes = new Uint8Array(await memory.getSize());
    await memory.preadv(0, [bytes]);
    writeFileSync(path, bytes);
  }
  const reftableClusters = refcountTableClusters(path);
  if (reftableClusters > context.reftableClusters) counts.reftableGrowths++;
  context.reftableClusters = reftableClusters;
  const check = qemuCheck(path);
  const problems = { exitCode: check.exitCode, errors: check['check-errors'], corruptions: check.corruptions ?? 0, leaks: check.leaks ?? 0 };
  if (problems.exitCode !== 0 || problems.errors !== 0 || problems.corruptions !== 0 || problems.leaks !== 0) {
    fail(`qemu-img check after close: ${JSON.stringify(problems)}`);
  }
  const converted = convertToRaw(path, 'qcow2');
  if (firstDifference(converted, model) >= 0) fail(`qemu-img convert differs from the model: ${differenceReport(converted, model, 0)}`);
  if (built.snapshot) {
    const snapshot = snapshotContent(built.dir, built.snapshot.name);
    if (firstDifference(snapshot, built.snapshot.content) >= 0) {
      fail(`internal snapshot '${built.snapshot.name}' changed: ${differenceReport(snapshot, built.snapshot.content, 0)}`);
    }
  }
}
