// SPDX-License-Identifier: MIT
// Building blocks of the hostile-image corpus and the fuzzer: small valid qcow2 images made by
// this engine in memory, a parser of their layout (where the header, tables and data clusters
// are) so mutations can aim at real structures, byte-level editing, a backend that records every
// write, and one "exercise" routine that opens an image read-only and writable, reads, writes,
// flushes and checks it, classifying every outcome as success, a typed error, or a crash.

import type { Backend } from '../../bindings/backends/backend.js';
import type { ErrorCode } from '../../bindings/base/errors.js';
import type { CreateOptions, OpenOptions } from '../../bindings/dispatch/image.js';
import { Qcow2WasmError } from '../../bindings/base/errors.js';
import { createMemoryBackend } from '../../bindings/backends/memory.js';
import { Qcow2Image } from '../../bindings/qcow2/qcow2-image.js';
import { checkQcow2 } from '../../bindings/qcow2/qcow2-check.js';
import { makePrng } from './prng.js';
import { backendBytes } from './backend-contents.js';

// ---------------------------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------------------------

export const getU32 = (b: Uint8Array, at: number): number => new DataView(b.buffer, b.byteOffset).getUint32(at);
export const getU64 = (b: Uint8Array, at: number): bigint => new DataView(b.buffer, b.byteOffset).getBigUint64(at);
export const setU16 = (b: Uint8Array, at: number, v: number): void => new DataView(b.buffer, b.byteOffset).setUint16(at, v);
export const setU32 = (b: Uint8Array, at: number, v: number): void => new DataView(b.buffer, b.byteOffset).setUint32(at, v >>> 0);
export const setU64 = (b: Uint8Array, at: number, v: bigint): void => new DataView(b.buffer, b.byteOffset).setBigUint64(at, BigInt.asUintN(64, v));

/** A copy of `bytes` grown (zero-filled) to at least `size` bytes. */
export function grown(bytes: Uint8Array, size: number): Uint8Array {
  if (bytes.length >= size) return bytes.slice();
  const out = new Uint8Array(size);
  out.set(bytes);
  return out;
}

/** The first `length` bytes of a backend. */
export async function headBytes(backend: Backend, length = 112): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await backend.preadv(0, [out]);
  return out;
}

/** All bytes of a backend (kept here for the tests that import it with the hostile images). */
export { backendBytes };

// ---------------------------------------------------------------------------------------------
// Base images
// ---------------------------------------------------------------------------------------------

/** Header field offsets (qcow2 spec, "Header"). */
export const HDR = {
  version: 4, backingOffset: 8, backingSize: 16, clusterBits: 20, size: 24, cryptMethod: 32, l1Size: 36, l1Offset: 40,
  reftableOffset: 48, reftableClusters: 56, snapshotCount: 60, snapshotsOffset: 64, incompatible: 72, compatible: 80,
  autoclear: 88, refcountOrder: 96, headerLength: 100, compressionType: 104,
} as const;

/** What buildBaseImage makes. */
export interface BaseImageOptions extends Partial<CreateOptions> {
  /** Guest clusters (by index) written with a pattern; default the first four and one at 1 MiB. */
  writtenClusters?: number[];
}

/** The pattern byte of guest cluster `index` (so reads can be recognised). */
export const patternOf = (index: number): number => (index * 37 + 11) & 0xff || 1;

/**
 * A valid image made by this engine in memory (default: version 3, 4 MiB, 64 KiB clusters) with
 * the pattern of each written cluster in it, flushed and closed; returns the file's bytes.
 */
export async function buildBaseImage(options: BaseImageOptions = {}): Promise<Uint8Array> {
  const { writtenClusters, ...create } = options;
  const backend = createMemoryBackend();
  const image = await Qcow2Image.create(backend, { virtualSize: 4 << 20, ...create });
  const clusterSize = image.header.clusterSize;
  const clusters = writtenClusters ?? [0, 1, 2, 3, Math.floor((1 << 20) / clusterSize)];
  for (const index of clusters) {
    if ((index + 1) * clusterSize <= image.virtualSize) await image.write(index * clusterSize, new Uint8Array(clusterSize).fill(patternOf(index)));
  }
  await image.flush();
  const bytes = await backendBytes(backend);
  await image.close();
  return bytes;
}

/** One allocated L2 entry of the active mapping. */
export interface DataEntry {
  guestCluster: number;
  /** Host byte offset of the entry itself (inside its L2 table). */
  entryAt: number;
  entry: bigint;
}

/** Where an image's structures are (from its bytes; trusting them, so use on valid images). */
export interface ImageLayout {
  version: number;
  clusterBits: number;
  clusterSize: number;
  virtualSize: number;
  l1Offset: number;
  l1Size: number;
  reftableOffset: number;
  reftableClusters: number;
  snapshotsOffset: number;
  snapshotCount: number;
  extendedL2: boolean;
  /** Host offsets of the L2 tables the L1 table references, by L1 index. */
  l2Tables: Map<number, number>;
  /** Host offsets of the refcount blocks, by refcount table index. */
  refblocks: Map<number, number>;
  /** Allocated (non-zero) L2 entries, in guest order. */
  data: DataEntry[];
  fileSize: number;
}

const OFFSET_MASK = 0x00fffffffffffe00n;

/** Reads the layout of a valid image. */
export function parseLayout(bytes: Uint8Array): ImageLayout {
  const clusterBits = getU32(bytes, HDR.clusterBits);
  const version = getU32(bytes, HDR.version);
  const clusterSize = 2 ** clusterBits;
  const extendedL2 = version === 3 && (getU64(bytes, HDR.incompatible) & 16n) !== 0n;
  const entryBytes = extendedL2 ? 16 : 8;
  const layout: ImageLayout = {
    version, clusterBits, clusterSize, virtualSize: Number(getU64(bytes, HDR.size)),
    l1Offset: Number(getU64(bytes, HDR.l1Offset)), l1Size: getU32(bytes, HDR.l1Size),
    reftableOffset: Number(getU64(bytes, HDR.reftableOffset)), reftableClusters: getU32(bytes, HDR.reftableClusters),
    snapshotsOffset: Number(getU64(bytes, HDR.snapshotsOffset)), snapshotCount: getU32(bytes, HDR.snapshotCount),
    extendedL2, l2Tables: new Map(), refblocks: new Map(), data: [], fileSize: bytes.length,
  };
  const read64 = (at: number): bigint => (at + 8 <= bytes.length ? getU64(bytes, at) : 0n);
  for (let i = 0; i < layout.l1Size; i++) {
    const l2 = Number(read64(layout.l1Offset + 8 * i) & OFFSET_MASK);
    if (l2 === 0) continue;
    layout.l2Tables.set(i, l2);
    for (let j = 0; j < clusterSize / entryBytes; j++) {
      const entryAt = l2 + j * entryBytes;
      const entry = read64(entryAt);
      if (entry !== 0n) layout.data.push({ guestCluster: i * (clusterSize / entryBytes) + j, entryAt, entry });
    }
  }
  for (let i = 0; i < (layout.reftableClusters * clusterSize) / 8; i++) {
    const block = Number(read64(layout.reftableOffset + 8 * i) & 0xfffffffffffffe00n);
    if (block !== 0) layout.refblocks.set(i, block);
  }
  return layout;
}

// ---------------------------------------------------------------------------------------------
// A backend that records writes
// ---------------------------------------------------------------------------------------------

/** One recorded host write. */
export interface RecordedWrite { position: number; length: number }

/** A memory backend over a copy of `bytes` that records every pwritev; close() leaves `inner` open. */
export function recordingBackend(bytes: Uint8Array, writable = true): Backend & { writes: RecordedWrite[]; inner: Backend } {
  const inner = createMemoryBackend(bytes, { writable });
  const writes: RecordedWrite[] = [];
  return {
    kind: 'recording', capabilities: inner.capabilities, limits: inner.limits, inner, writes,
    getSize: () => inner.getSize(),
    preadv: (position, buffers) => inner.preadv(position, buffers),
    pwritev: (position, buffers) => {
      writes.push({ position, length: buffers.reduce((n, b) => n + b.byteLength, 0) });
      return inner.pwritev(position, buffers);
    },
    flush: () => inner.flush(),
    truncate: (size) => inner.truncate!(size),
    discard: (position, length) => inner.discard!(position, length),
    // The inner backend stays open so the test can read the result after the image closed.
    close: async () => undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// Exercising an image
// ---------------------------------------------------------------------------------------------

/**
 * The error codes a step may end with on a hostile image: every code that tells the caller what
 * is wrong with its input, its image or its storage. The core's report of its own lost
 * invariants is not among them: like an untyped error, it is a bug (a crash).
 */
const TYPED_OUTCOMES = [
  'INVALID_ARGUMENT', 'IMAGE_OUT_OF_RANGE', 'IMAGE_READ_ONLY', 'IMAGE_CLOSED', 'IMAGE_IO_ERROR', 'IMAGE_FORMAT_UNKNOWN',
  'IMAGE_LOCKED', 'IMAGE_WRITE_REFUSED', 'QCOW2_CORRUPT', 'QCOW2_UNSUPPORTED_FEATURE', 'QCOW2_READ_ONLY', 'QCOW2_NO_SPACE',
  'BACKEND_READ_ONLY', 'BACKEND_CLOSED', 'BACKEND_IO_ERROR', 'BACKEND_NOT_SUPPORTED',
] as const satisfies readonly ErrorCode[];
type TypedOutcome = (typeof TYPED_OUTCOMES)[number];

/** How one step ended: 'ok', one of TYPED_OUTCOMES, or 'CRASH' (anything else, with the error). */
export type StepOutcome = 'ok' | TypedOutcome | 'CRASH';

/** One step of an exercise. */
export interface StepRecord { step: string; outcome: StepOutcome; elapsedMs: number; message?: string; error?: unknown }

/** What exercise() found. */
export interface ExerciseResult {
  steps: StepRecord[];
  /** The first non-typed failure, if any. */
  crash: StepRecord | undefined;
  /** Host writes the writable session made (on its own copy of the bytes). */
  writes: RecordedWrite[];
  /** The file after the writable session (a memory backend, possibly sparse and huge). */
  after: Backend;
  /** True when the writable session refused a write with QCOW2_CORRUPT as a metadata overlap. */
  overlapRefused: boolean;
  /** Time of both sessions (not the final check of the result). */
  elapsedMs: number;
  /** Largest growth of the process's resident set seen during both sessions, in bytes. */
  peakMemoryGrowthBytes: number;
}

/** Guest writes a session makes: byte offset and length. */
export interface GuestWrite { offset: number; length: number }

export interface ExerciseOptions {
  /** Guest writes of the writable session (clipped to the virtual size); default: a spread. */
  writes?: GuestWrite[];
  /** Backing files by name, for images with a backing file. */
  files?: Record<string, Uint8Array>;
  /** Most guest bytes read whole; larger images are read in samples. Default 8 MiB. */
  maxReadBytes?: number;
  /** Also run checkQcow2 on the result (default true). */
  check?: boolean;
  /** Run the writable session too (default true). */
  writable?: boolean;
  /** Seed of the write data and the read samples. */
  seed?: number;
}

/** Classifies a thrown value: its code when it is one of TYPED_OUTCOMES, else CRASH (which fails every test). */
export function outcomeOf(error: unknown): StepOutcome {
  if (!(error instanceof Qcow2WasmError)) return 'CRASH';
  return (TYPED_OUTCOMES as readonly string[]).includes(error.code) ? error.code as TypedOutcome : 'CRASH';
}

/** The memory figure bounded by the tests: resident set size. */
export const memoryNow = (): number => process.memoryUsage().rss;

/**
 * Opens `bytes` read-only (reads, snapshots, check) and then writable on a recording copy
 * (writes, writeZeroes, discard, flush, close, check of the result). Never throws: every step's
 * outcome is recorded, and a step whose error is not a Qcow2WasmError is a crash.
 */
export async function exercise(bytes: Uint8Array, options: ExerciseOptions = {}): Promise<ExerciseResult> {
  const started = performance.now();
  const baseline = memoryNow();
  let peak = 0;
  const sample = (): void => { peak = Math.max(peak, memoryNow() - baseline); };
  const steps: StepRecord[] = [];
  const run = async <T>(step: string, body: () => Promise<T>): Promise<T | undefined> => {
    const stepStart = performance.now();
    try {
      const value = await body();
      steps.push({ step, outcome: 'ok', elapsedMs: performance.now() - stepStart });
      return value;
    } catch (error) {
      steps.push({ step, outcome: outcomeOf(error), elapsedMs: performance.now() - stepStart, message: String((error as Error)?.message ?? error), error });
      return undefined;
    } finally {
      sample();
    }
  };
  const files = options.files ?? {};
  const openOptions = (readOnly: boolean): OpenOptions => ({
    readOnly, cacheBytes: 64 << 10,
    openBacking: async (name) => {
      const file = files[name];
      if (!file) throw new Qcow2WasmError('INVALID_ARGUMENT', `no backing file '${name}' in the test`);
      return createMemoryBackend(file, { writable: false });
    },
  });
  const prng = makePrng(options.seed ?? 1);
  const maxRead = options.maxReadBytes ?? 8 << 20;

  // Read-only session.
  const readOnly = await run('open read-only', () => Qcow2Image.open(createMemoryBackend(bytes, { writable: false }), openOptions(true)));
  if (readOnly) {
    await run('read', () => readSpread(readOnly, maxRead, prng.next()));
    await run('snapshots', () => readOnly.snapshots());
    if (options.check !== false) await run('check read-only', () => readOnly.check());
    await run('close read-only', () => readOnly.close());
  }

  // Writable session on a recording copy.
  const backend = recordingBackend(bytes);
  const image = options.writable === false ? undefined : await run('open writable', () => Qcow2Image.open(backend, openOptions(false)));
  if (image) {
    const size = image.virtualSize;
    const writes = (options.writes ?? defaultWrites(size, image.header.clusterSize)).filter((w) => w.offset < size);
    for (const w of writes) {
      const length = Math.min(w.length, size - w.offset);
      if (length > 0) await run(`write ${w.offset}+${length}`, () => image.write(w.offset, prng.fill(new Uint8Array(length))));
    }
    if (size >= 2 * image.header.clusterSize) {
      await run('writeZeroes', () => image.writeZeroes(image.header.clusterSize, image.header.clusterSize));
      await run('discard', () => image.discard(0, image.header.clusterSize));
    }
    await run('read back', () => readSpread(image, Math.min(maxRead, 1 << 20), prng.next()));
    await run('flush', () => image.flush());
    await run('close writable', () => image.close());
  }
  // The bounds cover handling the hostile image; checking what the session left (which may be a
  // sparse file of 1 TiB when the image pointed there) is verification, measured apart.
  const elapsedMs = performance.now() - started;
  const peakMemoryGrowthBytes = peak;
  const after = backend.inner;
  if (options.check !== false && image) await run('check result', () => checkQcow2(after));
  const crash = steps.find((s) => s.outcome === 'CRASH');
  const overlapRefused = steps.some((s) => s.outcome === 'QCOW2_CORRUPT' && /metadata overlap|marked corrupt/.test(s.message ?? ''));
  return { steps, crash, writes: backend.writes, after, overlapRefused, elapsedMs, peakMemoryGrowthBytes };
}

/** A spread of guest writes: the first clusters, a partial cluster, the middle and the end. */
function defaultWrites(size: number, clusterSize: number): GuestWrite[] {
  const writes: GuestWrite[] = [];
  for (let i = 0; i < 6; i++) writes.push({ offset: i * clusterSize, length: 4096 });
  writes.push({ offset: clusterSize + 100, length: 3000 });
  writes.push({ offset: Math.floor(size / 2 / clusterSize) * clusterSize, length: 2 * clusterSize });
  writes.push({ offset: Math.max(0, size - 4096), length: 4096 });
  return writes;
}

/** Reads the image whole when it is at most `maxBytes`, else the first and last MiB and samples. */
async function readSpread(image: Qcow2Image, maxBytes: number, seed: number): Promise<void> {
  const size = image.virtualSize;
  if (size <= maxBytes) {
    await image.read(0, size);
    return;
  }
  const prng = makePrng(seed);
  const piece = Math.min(1 << 20, size);
  await image.read(0, piece);
  await image.read(size - piece, piece);
  for (let i = 0; i < 16; i++) {
    const offset = prng.int(Math.max(1, size - 65536));
    await image.read(offset, Math.min(65536, size - offset));
  }
}

/** Counts of outcomes over many exercises, for the printed summary. */
export class OutcomeTally {
  readonly byOutcome = new Map<string, number>();
  cases = 0;

  add(result: ExerciseResult): void {
    this.cases++;
    for (const s of result.steps) this.byOutcome.set(s.outcome, (this.byOutcome.get(s.outcome) ?? 0) + 1);
  }

  toString(): string {
    const parts = [...this.byOutcome.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`);
    return `${this.cases} cases; step outcomes: ${parts.join(', ')}`;
  }
}
