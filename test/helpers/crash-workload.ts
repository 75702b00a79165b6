// SPDX-License-Identifier: MIT
// A seeded qcow2 workload over the crash simulator, and the checker of what must survive a power
// cut: for every guest byte, the set of values it may read as at a given point of the history
// (what the last completed flush guarantees, or any value written to it after that flush began).

import { Qcow2Image } from '../../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../../bindings/backends/memory.js';
import type { Backend } from '../../bindings/backends/backend.js';
import type { CreateOptions, WriteRequest } from '../../bindings/dispatch/image.js';
import { createCrashBackend, type CrashBackend } from './crash-backend.js';
import { makePrng, type Prng } from './prng.js';

/** One guest operation as the model sees it: its bytes become `data` (or zeros) when submitted. */
export interface GuestOp {
  kind: 'write' | 'zero';
  offset: number;
  length: number;
  data?: Uint8Array;
  /** Crash-backend clock value just before submission. */
  submittedAt: number;
}

/** One completed guest flush, on the crash-backend clock. */
export interface GuestFlush { startedAt: number; resolvedAt: number }

/** What a workload did, for replaying crash states against it. */
export interface WorkloadRecord {
  backend: CrashBackend;
  /** The image file before the workload. */
  initialImage: Uint8Array;
  /** The guest content before the workload (zeros, or the backing file's). */
  initialContent: Uint8Array;
  ops: GuestOp[];
  flushes: GuestFlush[];
  /** Counts by kind, for the report. */
  counts: { batches: number; requests: number; writes: number; zeroes: number; discards: number; flushes: number };
}

/** A workload setting: the image to create and how to open it. */
export interface WorkloadSetting {
  name: string;
  create: CreateOptions;
  /** Raw backing file contents (the image names it 'base.raw'). */
  backing?: Uint8Array;
  /** Guest operations to run. */
  operations: number;
  /** Starts with one multiwrite batch filling the whole disk (grows the file, and so the refcount table). */
  fillFirst?: boolean;
  /** L2 cache bytes (small values force write-back under cache pressure). */
  cacheBytes: number;
  /**
   * Starts from these image bytes (e.g. an image qemu-img made) and their guest content instead
   * of creating the image from `create` (whose virtualSize and clusterSize must match it).
   */
  image?: { bytes: Uint8Array; content: Uint8Array };
}

/** openBacking for a setting's raw backing file. */
export function backingOpener(backing: Uint8Array | undefined): ((name: string) => Promise<Backend>) | undefined {
  return backing ? async () => createMemoryBackend(backing, { writable: false }) : undefined;
}

/** Creates the setting's image in memory (closed, so durable) and returns its bytes. */
export async function createImageBytes(setting: WorkloadSetting): Promise<Uint8Array> {
  const store = createMemoryBackend();
  const create: CreateOptions = setting.backing ? { ...setting.create, backingFile: 'base.raw', backingFormat: 'raw' } : setting.create;
  const image = await Qcow2Image.create(store, { ...create, openBacking: backingOpener(setting.backing) });
  await image.flush();
  const bytes = new Uint8Array(await store.getSize());
  await store.preadv(0, [bytes]);
  await image.close();
  return bytes;
}

/**
 * Runs `setting.operations` seeded guest operations on a fresh copy of the setting's image over a
 * crash backend: multiwrite batches (overlapping, unaligned, some many clusters long), single
 * writes, writeZeroes, discards of whole clusters, flushes; several left in flight together.
 * Ends with close() (a final flush). Returns the record the checker needs. Without `jitter` every
 * backend call completes at once; `maxReads` caps the backend reads (see CrashBackendOptions).
 */
export async function runWorkload(setting: WorkloadSetting, seed: number, jitter: boolean, maxReads?: number): Promise<WorkloadRecord> {
  const prng = makePrng(seed);
  const initialImage = setting.image?.bytes ?? await createImageBytes(setting);
  const backend = createCrashBackend(initialImage, { ...(jitter ? { jitter: makePrng(seed ^ 0x5bd1e995) } : {}), maxReads });
  const virtualSize = setting.create.virtualSize;
  const cluster = setting.create.clusterSize ?? 65536;
  const initialContent = new Uint8Array(virtualSize);
  if (setting.backing) initialContent.set(setting.backing.subarray(0, virtualSize));
  if (setting.image) initialContent.set(setting.image.content);
  const disk = await Qcow2Image.open(backend, { cacheBytes: setting.cacheBytes, openBacking: backingOpener(setting.backing) });
  // Whole-cluster discards read as zeros on v3 images and images without a backing file.
  const discardZeroes = (setting.create.compat ?? '1.1') === '1.1' || !setting.backing;
  const ops: GuestOp[] = [];
  const flushes: GuestFlush[] = [];
  const counts = { batches: 0, requests: 0, writes: 0, zeroes: 0, discards: 0, flushes: 0 };
  let inFlight: Promise<unknown>[] = [];
  let cursor = 0;

  const pickRange = (): { offset: number; length: number } => {
    const shape = prng.int(10);
    let length: number;
    if (shape < 5) length = 1 + prng.int(2 * cluster);
    else if (shape < 8) length = cluster * (1 + prng.int(8));
    else length = 1 + prng.int(10 * cluster);
    length = Math.min(length, virtualSize);
    let offset: number;
    if (prng.int(3) === 0) offset = Math.min(cursor, virtualSize - length);
    else if (shape >= 5 && shape < 8) offset = Math.floor(prng.int(virtualSize - length + 1) / cluster) * cluster;
    else offset = prng.int(virtualSize - length + 1);
    cursor = (offset + length) % virtualSize;
    return { offset, length };
  };

  if (setting.fillFirst) {
    const batch: WriteRequest[] = [];
    for (let offset = 0; offset < virtualSize; offset += 65536) {
      const data = prng.fill(new Uint8Array(Math.min(65536, virtualSize - offset)));
      batch.push({ offset, data });
      ops.push({ kind: 'write', offset, length: data.byteLength, data, submittedAt: backend.mark() });
    }
    counts.batches++;
    counts.requests += batch.length;
    inFlight.push(...disk.multiwrite(batch));
  }
  for (let op = 0; op < setting.operations; op++) {
    const choice = prng.int(100);
    if (choice < 50) {
      const batch: WriteRequest[] = [];
      for (let i = 1 + prng.int(6); i > 0; i--) {
        const { offset, length } = pickRange();
        const data = prng.fill(new Uint8Array(length));
        batch.push({ offset, data });
        ops.push({ kind: 'write', offset, length, data, submittedAt: backend.mark() });
      }
      counts.batches++;
      counts.requests += batch.length;
      inFlight.push(...disk.multiwrite(batch));
    } else if (choice < 60) {
      const { offset, length } = pickRange();
      const data = prng.fill(new Uint8Array(length));
      ops.push({ kind: 'write', offset, length, data, submittedAt: backend.mark() });
      counts.writes++;
      inFlight.push(disk.write(offset, data));
    } else if (choice < 70) {
      const { offset, length } = pickRange();
      ops.push({ kind: 'zero', offset, length, submittedAt: backend.mark() });
      counts.zeroes++;
      inFlight.push(disk.writeZeroes(offset, length));
    } else if (choice < 77) {
      const { offset, length } = pickRange();
      const submittedAt = backend.mark();
      const start = Math.ceil(offset / cluster) * cluster;
      const end = Math.floor((offset + length) / cluster) * cluster;
      if (discardZeroes && start < end) ops.push({ kind: 'zero', offset: start, length: end - start, submittedAt });
      counts.discards++;
      inFlight.push(disk.discard(offset, length));
    } else if (choice < 88) {
      const startedAt = backend.mark();
      counts.flushes++;
      inFlight.push(disk.flush().then(() => { flushes.push({ startedAt, resolvedAt: backend.mark() }); }));
    } else {
      await Promise.all(inFlight);
      inFlight = [];
    }
    if (prng.int(6) === 0) {
      await Promise.all(inFlight);
      inFlight = [];
    }
  }
  await Promise.all(inFlight);
  const startedAt = backend.mark();
  await disk.close();
  flushes.push({ startedAt, resolvedAt: backend.mark() });
  flushes.sort((a, b) => a.resolvedAt - b.resolvedAt);
  return { backend, initialImage, initialContent, ops, flushes, counts };
}

/** Where a read-back differs from what the history allows. */
export interface ContentViolation { guestOffset: number; got: number; allowed: number[] }

const BLOCK_BYTES = 4096;

/**
 * Checks guest contents against the history, at increasing cut clocks: at a cut, every byte must
 * read as what the last guest flush completed before the cut guarantees (every op submitted
 * before that flush began, in submission order), or as a value an op submitted after that
 * flush began (and before the cut) wrote to it.
 */
export class ContentChecker {
  private readonly base: Uint8Array;
  private applied = 0;
  private flushIndex = -1;

  constructor(private readonly record: WorkloadRecord) {
    this.base = record.initialContent.slice();
  }

  /** Moves the guaranteed contents to `cutClock` (never backwards) and returns the ops after it. */
  private advance(cutClock: number): GuestOp[] {
    const { flushes, ops } = this.record;
    while (this.flushIndex + 1 < flushes.length && flushes[this.flushIndex + 1].resolvedAt < cutClock) this.flushIndex++;
    const guaranteedBefore = this.flushIndex >= 0 ? flushes[this.flushIndex].startedAt : -Infinity;
    while (this.applied < ops.length && ops[this.applied].submittedAt < guaranteedBefore) {
      const op = ops[this.applied++];
      if (op.kind === 'write') this.base.set(op.data!, op.offset);
      else this.base.fill(0, op.offset, op.offset + op.length);
    }
    const extras: GuestOp[] = [];
    for (let i = this.applied; i < ops.length && ops[i].submittedAt < cutClock; i++) extras.push(ops[i]);
    return extras;
  }

  /** The violations of `contents` (the whole guest disk read back) at `cutClock`; at most `max`. */
  check(cutClock: number, contents: Uint8Array, max = 8): ContentViolation[] {
    const extras = this.advance(cutClock);
    const out: ContentViolation[] = [];
    const base = this.base;
    for (let block = 0; block < base.length && out.length < max; block += BLOCK_BYTES) {
      const end = Math.min(base.length, block + BLOCK_BYTES);
      if (Buffer.compare(contents.subarray(block, end), base.subarray(block, end)) === 0) continue;
      const over = extras.filter((op) => op.offset < end && block < op.offset + op.length);
      for (let i = block; i < end && out.length < max; i++) {
        const got = contents[i];
        if (got === base[i]) continue;
        let allowed = false;
        for (const op of over) {
          if (i < op.offset || i >= op.offset + op.length) continue;
          if ((op.kind === 'write' ? op.data![i - op.offset] : 0) === got) {
            allowed = true;
            break;
          }
        }
        if (!allowed) {
          const values = new Set<number>([base[i]]);
          for (const op of over) if (i >= op.offset && i < op.offset + op.length) values.add(op.kind === 'write' ? op.data![i - op.offset] : 0);
          out.push({ guestOffset: i, got, allowed: [...values] });
        }
      }
    }
    return out;
  }
}

/** A prng derived from a seed and further numbers (cut point, state), for reproducible states. */
export function derivedPrng(seed: number, ...parts: number[]): Prng {
  let mixed = seed >>> 0;
  for (const part of parts) mixed = (Math.imul(mixed ^ (part >>> 0), 0x9e3779b1) + 0x7f4a7c15) >>> 0;
  return makePrng(mixed);
}
