// SPDX-License-Identifier: MIT
// The backend conformance suite: vitest blocks that check every clause of the Backend contract
// (bindings/backends/backend.ts) against one backend factory, gated by the backend's capabilities.

import { afterEach, describe, expect, it } from 'vitest';
import type { Backend } from '../bindings/backends/backend.js';
import { BackendError, type ErrorCode } from '../bindings/base/errors.js';
import { expectBytes, expectFilled } from './helpers/bytes.js';
import { makePrng, type Prng } from './helpers/prng.js';

/** What the suite asks of a factory besides the initial contents. */
export interface BackendFactoryOptions {
  /** False: the backend must be read-only (capabilities.writable false). Default true: writable. */
  writable?: boolean;
}

/**
 * Makes a fresh, independent backend whose contents are `initial` (empty when omitted) and whose
 * size is `initial.byteLength`. With `{ writable: false }` the backend must be read-only; without
 * it, writable. The suite closes every backend it makes after each test.
 */
export type BackendFactory = (initial?: Uint8Array, options?: BackendFactoryOptions) => Promise<Backend>;

/** Knobs of backendConformanceSuite. */
export interface BackendSuiteOptions {
  /** The factory honours `{ writable: false }` (default true); false skips the read-only tests. */
  readOnly?: boolean;
  /**
   * False: the backend can never write (a Blob, an HTTP resource): the factory always makes a
   * read-only backend over `initial`, the tests place their data through `initial` instead of
   * writing it, and the tests that are only about writes (growth, sparse far writes, buffers
   * mutated after a write) are not declared. Default true.
   */
  writable?: boolean;
  /** Where the sparse far-write test writes (default 2^40); must be a multiple of 65536. */
  farPosition?: number;
  /** The expected `kind`, checked when given. */
  kind?: string;
  /** Seed of the suite's PRNG (default 1); every test derives its own stream from it. */
  seed?: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
/** A byte value the backend never writes by accident; read targets start out filled with it. */
const GARBAGE = 0xa5;
/** Fills the padding around read targets; must survive every read. */
const SENTINEL = 0x5a;

/** Splits `total` bytes into 1..maxPieces sizes (some of them zero) that sum to `total`. */
function splitSizes(prng: Prng, total: number, maxPieces: number): number[] {
  const pieces = 1 + prng.int(maxPieces);
  const cuts: number[] = [];
  for (let i = 1; i < pieces; i++) cuts.push(prng.int(total + 1));
  cuts.sort((a, b) => a - b);
  const sizes: number[] = [];
  let last = 0;
  for (const cut of [...cuts, total]) {
    sizes.push(cut - last);
    last = cut;
    if (prng.int(6) === 0) sizes.push(0); // an explicit zero-length buffer in the list
  }
  return sizes;
}

/**
 * The buffers of a pwritev carrying `data`, cut by `sizes`: each piece is randomly a view into
 * `data`, a copy in its own ArrayBuffer, or a view at an offset inside a larger padded buffer.
 */
function sourcesOf(prng: Prng, data: Uint8Array, sizes: readonly number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let at = 0;
  for (const size of sizes) {
    const piece = data.subarray(at, at + size);
    at += size;
    const how = prng.int(3);
    if (how === 0) out.push(piece);
    else if (how === 1) out.push(piece.slice());
    else {
      const pad = 1 + prng.int(13);
      const host = new Uint8Array(size + 2 * pad).fill(0xee);
      host.set(piece, pad);
      out.push(host.subarray(pad, pad + size));
    }
  }
  expect(at).toBe(data.length);
  return out;
}

/** Read targets cut by `sizes`, each a view inside sentinel padding and pre-filled with garbage. */
class Targets {
  readonly views: Uint8Array[] = [];
  private readonly hosts: Array<{ host: Uint8Array; pad: number; size: number }> = [];

  constructor(sizes: readonly number[]) {
    for (const size of sizes) {
      const pad = 1 + (size % 7);
      const host = new Uint8Array(size + 2 * pad).fill(SENTINEL);
      host.fill(GARBAGE, pad, pad + size);
      this.hosts.push({ host, pad, size });
      this.views.push(host.subarray(pad, pad + size));
    }
  }

  /** The targets' bytes in order, after checking that no byte outside a view was touched. */
  gather(): Uint8Array {
    let total = 0;
    for (const { size } of this.hosts) total += size;
    const out = new Uint8Array(total);
    let at = 0;
    for (const { host, pad, size } of this.hosts) {
      expectFilled(host.subarray(0, pad), SENTINEL, 'padding before a read target');
      expectFilled(host.subarray(pad + size), SENTINEL, 'padding after a read target');
      out.set(host.subarray(pad, pad + size), at);
      at += size;
    }
    return out;
  }
}

/** Reads [position, position + length) through `buffers` of the given sizes and returns the bytes. */
async function readVia(backend: Backend, position: number, sizes: readonly number[]): Promise<Uint8Array> {
  const targets = new Targets(sizes);
  await backend.preadv(position, targets.views);
  return targets.gather();
}

/** Reads [position, position + length) into one buffer pre-filled with garbage. */
async function readRange(backend: Backend, position: number, length: number): Promise<Uint8Array> {
  const target = new Uint8Array(length).fill(GARBAGE);
  await backend.preadv(position, [target]);
  return target;
}

/**
 * Asserts that `start()` returns a promise (it must not throw synchronously) that rejects with a
 * BackendError carrying `code`; returns the error.
 */
async function expectRejects(start: () => Promise<unknown>, code: ErrorCode, what: string): Promise<BackendError> {
  let promise: Promise<unknown>;
  try {
    promise = start();
  } catch (err) {
    return expect.fail(`${what}: threw synchronously instead of rejecting: ${String(err)}`);
  }
  expect(promise, `${what}: must return a promise`).toBeInstanceOf(Promise);
  const outcome = await promise.then(
    () => ({ rejected: false as const }),
    (error: unknown) => ({ rejected: true as const, error }),
  );
  if (!outcome.rejected) return expect.fail(`${what}: resolved, expected a rejection with ${code}`);
  expect(outcome.error, `${what}: rejection type`).toBeInstanceOf(BackendError);
  expect((outcome.error as BackendError).code, `${what}: rejection code`).toBe(code);
  return outcome.error as BackendError;
}

/** Random bytes of the given length. */
function randomBytes(prng: Prng, length: number): Uint8Array {
  return prng.fill(new Uint8Array(length));
}

/**
 * Declares the conformance tests of the Backend contract for the backend made by `make`.
 *
 * Each test makes its own backend(s) with `make(initial, { writable })` (see BackendFactory) and
 * the suite closes them afterwards. Tests of optional features check, when the backend's
 * capabilities say the feature is absent, that it is absent or refuses (nothing is skipped); the
 * read-only tests need `opts.readOnly !== false`.
 * Covered: clause 1 (vectored, ordered, positional I/O incl. zero-length and offset views), 2 (no
 * short transfers, EOF zero-fill, growth, sparse far writes, large and >maxIov transfers), 3 (many
 * concurrent disjoint calls), 4 (flush resolves and keeps data), 5 (read-only), 6 (no buffer
 * retained), 7 (every rejection is a BackendError; platform causes are checked by the
 * backend-specific tests, since a generic suite cannot provoke a platform error), 8 (close), plus
 * truncate/discard semantics and INVALID_ARGUMENT for bad ranges.
 */
export function backendConformanceSuite(name: string, make: BackendFactory, opts: BackendSuiteOptions = {}): void {
  const baseSeed = opts.seed ?? 1;
  const farPosition = opts.farPosition ?? 2 ** 40;
  const readOnlySupported = opts.readOnly ?? true;
  const canWrite = opts.writable ?? true;
  /** Declares a test that only a backend that can write runs (see BackendSuiteOptions.writable). */
  const itWrites = canWrite ? it : (..._args: Parameters<typeof it>) => undefined;
  /** `data` placed at `position` after zeros: the contents a read-only backend starts with. */
  const placed = (position: number, data: Uint8Array): Uint8Array => {
    const out = new Uint8Array(position + data.length);
    out.set(data, position);
    return out;
  };

  describe(`backend conformance: ${name}`, () => {
    const opened: Backend[] = [];
    /** The PRNG of one test: a stream of its own, the same in every run and under test filters. */
    const prngFor = (salt: number): Prng => makePrng((Math.imul(baseSeed, 0x9e3779b1) ^ Math.imul(salt, 0x85ebca6b)) >>> 0);

    const open = async (initial?: Uint8Array, options?: BackendFactoryOptions): Promise<Backend> => {
      const backend = await make(initial, options);
      opened.push(backend);
      return backend;
    };

    afterEach(async () => {
      const all = opened.splice(0);
      await Promise.allSettled(all.map((b) => b.close()));
    });

    describe('self-description', () => {
      it('reports a kind, boolean capabilities matching its methods, and positive integer limits', async () => {
        const b = await open();
        expect(typeof b.kind).toBe('string');
        expect(b.kind.length).toBeGreaterThan(0);
        if (opts.kind !== undefined) expect(b.kind).toBe(opts.kind);
        const caps = b.capabilities;
        for (const key of ['writable', 'truncate', 'discard', 'durableFlush'] as const) {
          expect(typeof caps[key], `capabilities.${key}`).toBe('boolean');
        }
        expect(caps.writable, canWrite ? 'the default factory makes a writable backend' : 'a backend that cannot write').toBe(canWrite);
        if (caps.truncate) expect(typeof b.truncate).toBe('function');
        if (caps.discard) expect(typeof b.discard).toBe('function');
        expect(Number.isSafeInteger(b.limits.maxIov) && b.limits.maxIov >= 1).toBe(true);
        expect(Number.isSafeInteger(b.limits.maxTransfer) && b.limits.maxTransfer >= 4096).toBe(true);
      });

      it('starts with the factory contents: size and bytes', async () => {
        const prng = prngFor(1);
        const initial = randomBytes(prng, 70_001);
        const b = await open(initial);
        expect(await b.getSize()).toBe(70_001);
        expectBytes(await readRange(b, 0, 70_001), initial, 'initial contents');
        const empty = await open();
        expect(await empty.getSize()).toBe(0);
      });
    });

    describe('clause 1: positional vectored I/O', () => {
      it('writes and reads many odd-sized buffers (zero-length ones included) in order', async () => {
        const prng = prngFor(2);
        // 150 KiB at an odd position, so the range straddles several 64 KiB boundaries.
        const position = 65_536 - 777;
        const data = randomBytes(prng, 150 * KiB + 13);
        const writeSizes = splitSizes(prng, data.length, 200);
        expect(writeSizes.length).toBeGreaterThan(1);
        const b = await open(canWrite ? new Uint8Array(0) : placed(position, data));
        if (canWrite) await b.pwritev(position, sourcesOf(prng, data, writeSizes));
        expect(await b.getSize()).toBe(position + data.length);
        // Read back with the same split, a different split, and one buffer.
        expectBytes(await readVia(b, position, writeSizes), data, 'same split');
        expectBytes(await readVia(b, position, splitSizes(prng, data.length, 300)), data, 'other split');
        expectBytes(await readRange(b, position, data.length), data, 'one buffer');
        // The bytes before `position` were never written.
        expectFilled(await readRange(b, 0, position), 0, 'bytes before the write');
      });

      it('takes the buffers as contiguous: no gap after zero-length buffers, the same buffer twice', async () => {
        const b = await open(canWrite ? undefined : placed(10, Uint8Array.of(1, 2, 3, 1, 2, 3, 9)));
        const a = Uint8Array.of(1, 2, 3);
        const z = new Uint8Array(0);
        if (canWrite) await b.pwritev(10, [z, a, z, z, a, Uint8Array.of(9), z]);
        expect(await b.getSize()).toBe(17);
        expectBytes(await readRange(b, 10, 7), Uint8Array.of(1, 2, 3, 1, 2, 3, 9));
        const t = new Targets([0, 2, 0, 0, 5, 0]);
        await b.preadv(10, t.views);
        expectBytes(t.gather(), Uint8Array.of(1, 2, 3, 1, 2, 3, 9));
      });

      it('resolves zero-length calls without changing anything', async () => {
        const b = await open(Uint8Array.of(1, 2, 3));
        await b.preadv(0, []);
        await b.preadv(1000, [new Uint8Array(0)]);
        if (canWrite) {
          await b.pwritev(0, []);
          await b.pwritev(5000, [new Uint8Array(0), new Uint8Array(0)]);
        }
        expect(await b.getSize(), 'a zero-length write past EOF must not grow the file').toBe(3);
        expectBytes(await readRange(b, 0, 3), Uint8Array.of(1, 2, 3));
      });

      it('matches a reference model over a random sequence of reads, writes and truncates', async () => {
        const prng = prngFor(3);
        const CAPACITY = 640 * KiB;
        const model = new Uint8Array(CAPACITY); // invariant: zero beyond `size`
        let size = 100_000;
        prng.fill(model.subarray(0, size));
        const b = await open(model.slice(0, size));
        const canTruncate = b.capabilities.truncate && typeof b.truncate === 'function';
        const pickPosition = (limit: number): number => {
          // Often right around a 64 KiB boundary, where paged implementations split.
          if (prng.int(3) === 0) {
            const boundary = 65_536 * (1 + prng.int(Math.floor(limit / 65_536) - 1));
            return boundary - 300 + prng.int(600);
          }
          return prng.int(limit);
        };
        for (let step = 0; step < 300; step++) {
          const op = prng.int(20);
          if (op < 8 && canWrite) {
            const position = pickPosition(500 * KiB);
            const length = prng.int(5) === 0 ? prng.int(8) : prng.int(48 * KiB);
            const data = randomBytes(prng, length);
            await b.pwritev(position, sourcesOf(prng, data, splitSizes(prng, length, 12)));
            model.set(data, position);
            if (length > 0) size = Math.max(size, position + length);
          } else if (op < 17) {
            const position = pickPosition(560 * KiB);
            const length = prng.int(72 * KiB);
            const got = await readVia(b, position, splitSizes(prng, length, 12));
            expectBytes(got, model.subarray(position, position + length), `step ${step}: read [${position}, +${length})`);
          } else if (op < 19 && canTruncate) {
            const newSize = prng.int(2) === 0 ? prng.int(size + 1) : prng.int(560 * KiB);
            await b.truncate!(newSize);
            if (newSize < size) model.fill(0, newSize, size);
            size = newSize;
          } else {
            expect(await b.getSize(), `step ${step}: size`).toBe(size);
          }
        }
        expect(await b.getSize()).toBe(size);
        expectBytes(await readRange(b, 0, CAPACITY), model, 'final contents');
      });
    });

    describe('clause 2: no short transfers, EOF semantics', () => {
      it('zero-fills the part of a read past EOF (partially and fully past) and does not grow', async () => {
        const prng = prngFor(4);
        const initial = randomBytes(prng, 100_000);
        const b = await open(initial);
        // Partially past: the last 1000 bytes and 99_000 beyond, across buffers.
        const partial = await readVia(b, 99_000, [500, 0, 1500, 97_000, 1]);
        expectBytes(partial.subarray(0, 1000), initial.subarray(99_000), 'bytes before EOF');
        expectFilled(partial.subarray(1000), 0, 'bytes past EOF');
        // Fully past, near and far.
        expectFilled(await readVia(b, 100_000, [10, 70_000]), 0, 'read at EOF');
        expectFilled(await readVia(b, 3 * MiB + 7, [4096, 3]), 0, 'read far past EOF');
        expect(await b.getSize(), 'reads never grow the file').toBe(100_000);
      });

      itWrites('grows the file on a write past EOF; the gap reads as zeros', async () => {
        const prng = prngFor(5);
        const initial = randomBytes(prng, 1000);
        const b = await open(initial);
        const data = randomBytes(prng, 5000);
        await b.pwritev(200_000, [data.subarray(0, 1), data.subarray(1)]);
        expect(await b.getSize()).toBe(205_000);
        const all = await readRange(b, 0, 210_000);
        expectBytes(all.subarray(0, 1000), initial, 'original bytes');
        expectFilled(all.subarray(1000, 200_000), 0, 'gap');
        expectBytes(all.subarray(200_000, 205_000), data, 'written bytes');
        expectFilled(all.subarray(205_000), 0, 'past the new EOF');
        // A write that ends inside the file does not change its size.
        await b.pwritev(10, [Uint8Array.of(7)]);
        expect(await b.getSize()).toBe(205_000);
      });

      itWrites(`writes and reads at a far position on a sparse file (${farPosition})`, async () => {
        const prng = prngFor(6);
        const b = await open();
        const position = farPosition + 65_536 - 3001; // straddles a 64 KiB boundary
        const data = randomBytes(prng, 10_000);
        await b.pwritev(position, [data.subarray(0, 4321), data.subarray(4321)]);
        expect(await b.getSize()).toBe(position + 10_000);
        const around = await readVia(b, position - 4096, [4096, 10_000, 4096]);
        expectFilled(around.subarray(0, 4096), 0, 'before the far write');
        expectBytes(around.subarray(4096, 14_096), data, 'the far write');
        expectFilled(around.subarray(14_096), 0, 'after the far write');
        expectFilled(await readRange(b, Math.floor(farPosition / 2), 65_536), 0, 'the hole');
        expectFilled(await readRange(b, 0, 4096), 0, 'the start');
        if (b.capabilities.truncate && b.truncate) {
          await b.truncate(4096); // give the space back early
          expect(await b.getSize()).toBe(4096);
        }
      });

      it('moves a large transfer (8 MiB across 3 buffers) intact', async () => {
        const prng = prngFor(7);
        const data = randomBytes(prng, 8 * MiB);
        const b = await open(canWrite ? undefined : placed(4097, data));
        const sizes = [3 * MiB + 1, 4 * MiB - 3, MiB + 2];
        if (canWrite) await b.pwritev(4097, sourcesOf(prng, data, sizes));
        expect(await b.getSize()).toBe(4097 + 8 * MiB);
        const got = await readVia(b, 4097, [MiB - 1, 5 * MiB, 2 * MiB + 1]);
        expectBytes(got, data, '8 MiB transfer');
      });

      it('accepts more buffers than limits.maxIov in one call, for writes and reads', async () => {
        const prng = prngFor(8);
        const probe = await open();
        const count = Math.max(3000, Math.min(2 * probe.limits.maxIov + 5, 20_000));
        const sizes: number[] = [];
        for (let i = 0; i < count; i++) sizes.push(prng.int(8) === 0 ? 0 : 1 + prng.int(40));
        let total = 0;
        for (const s of sizes) total += s;
        const data = randomBytes(prng, total);
        const b = canWrite ? probe : await open(placed(999, data));
        const sources = sourcesOf(prng, data, sizes);
        expect(sources.length).toBeGreaterThan(b.limits.maxIov);
        if (canWrite) await b.pwritev(999, sources);
        expect(await b.getSize()).toBe(999 + total);
        const readSizes: number[] = [];
        let left = total;
        while (left > 0) {
          const s = Math.min(left, prng.int(7) === 0 ? 0 : 1 + prng.int(40));
          readSizes.push(s);
          left -= s;
        }
        expect(readSizes.length).toBeGreaterThan(b.limits.maxIov);
        expectBytes(await readVia(b, 999, readSizes), data, `${count}-buffer transfer`);
      });
    });

    describe('clause 3: concurrency on disjoint ranges', () => {
      it('runs 96 concurrent writes, then 96 concurrent reads, then mixed reads and writes', async () => {
        const prng = prngFor(9);
        const SLOT = 20_000;
        const ranges: Array<{ position: number; data: Uint8Array }> = [];
        for (let i = 0; i < 96; i++) {
          ranges.push({ position: i * SLOT + prng.int(5000), data: randomBytes(prng, 1 + prng.int(14_000)) });
        }
        const seeded = new Uint8Array(96 * SLOT);
        for (const r of ranges) seeded.set(r.data, r.position);
        const b = await open(canWrite ? undefined : seeded);
        if (canWrite) {
          await Promise.all(ranges.map((r) => b.pwritev(r.position, sourcesOf(prng, r.data, splitSizes(prng, r.data.length, 4)))));
        }
        const reads = await Promise.all(ranges.map((r) => readVia(b, r.position, splitSizes(prng, r.data.length, 4))));
        reads.forEach((got, i) => expectBytes(got, ranges[i]!.data, `range ${i}`));

        // Even ranges are read while odd ranges are rewritten, all at once.
        // (A backend that cannot write reads the odd ranges too.)
        const next = ranges.map((r, i) => (i % 2 === 1 && canWrite ? randomBytes(prng, r.data.length) : r.data));
        const mixed = await Promise.all(
          ranges.map((r, i) => (i % 2 === 0 || !canWrite ? readVia(b, r.position, [r.data.length]) : b.pwritev(r.position, [next[i]!]))),
        );
        mixed.forEach((got, i) => {
          if (i % 2 === 0) expectBytes(got as Uint8Array, ranges[i]!.data, `even range ${i} during writes`);
        });
        const all = await readRange(b, 0, 96 * SLOT);
        const expected = new Uint8Array(96 * SLOT);
        ranges.forEach((r, i) => expected.set(next[i]!, r.position));
        expectBytes(all, expected, 'contents after the concurrent phases');
        if (!canWrite) mixed.forEach((got, i) => expectBytes(got as Uint8Array, ranges[i]!.data, `range ${i} read concurrently`));
      });
    });

    describe('clause 4: flush', () => {
      it('resolves, alone, repeated and concurrent with writes, and keeps the data', async () => {
        const prng = prngFor(10);
        const data = randomBytes(prng, 100_000);
        const more = randomBytes(prng, 50_000);
        const b = await open(canWrite ? undefined : new Uint8Array([...data, ...more]));
        await b.flush();
        if (canWrite) await b.pwritev(0, [data]);
        await b.flush();
        await b.flush();
        await Promise.all([b.flush(), canWrite ? b.pwritev(100_000, [more]) : readRange(b, 100_000, 50_000), b.flush()]);
        await b.flush();
        expect(await b.getSize()).toBe(150_000);
        expectBytes(await readRange(b, 0, 100_000), data, 'flushed data');
        expectBytes(await readRange(b, 100_000, 50_000), more, 'data written around flushes');
      });
    });

    describe('truncate', () => {
      it('shrinks (bytes beyond are gone, also after growing again) and grows with zeros', async () => {
        const prng = prngFor(11);
        const initial = randomBytes(prng, 200_000);
        const b = await open(initial);
        if (!b.capabilities.truncate) {
          // Without the capability, truncate is absent or refuses; it must not half-work.
          if (b.truncate) await expect(b.truncate(0)).rejects.toBeInstanceOf(BackendError);
          expect(await b.getSize()).toBe(200_000);
          return;
        }
        await b.truncate!(70_001);
        expect(await b.getSize()).toBe(70_001);
        const shrunk = await readRange(b, 0, 200_000);
        expectBytes(shrunk.subarray(0, 70_001), initial.subarray(0, 70_001), 'kept bytes');
        expectFilled(shrunk.subarray(70_001), 0, 'bytes past the new size');

        await b.truncate!(300_000);
        expect(await b.getSize()).toBe(300_000);
        const grown = await readRange(b, 0, 300_000);
        expectBytes(grown.subarray(0, 70_001), initial.subarray(0, 70_001), 'kept bytes after growing');
        expectFilled(grown.subarray(70_001), 0, 'grown bytes (old data must not come back)');

        await b.truncate!(300_000);
        expect(await b.getSize(), 'truncate to the current size').toBe(300_000);

        await b.truncate!(131_072); // a 64 KiB multiple, then grow again
        await b.truncate!(200_000);
        expectFilled(await readRange(b, 70_001, 129_999), 0, 'after shrink/grow at a page multiple');

        await b.truncate!(0);
        expect(await b.getSize()).toBe(0);
        expectFilled(await readRange(b, 0, 1000), 0, 'empty file');
        await b.pwritev(10, [Uint8Array.of(4, 5)]);
        expect(await b.getSize()).toBe(12);
        expectBytes(await readRange(b, 0, 12), Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 5));
      });
    });

    describe('discard', () => {
      it('is allowed and leaves the size and the bytes outside the range alone', async () => {
        const prng = prngFor(12);
        const initial = randomBytes(prng, 300_000);
        const b = await open(initial);
        if (!b.capabilities.discard) {
          // Without the capability, discard is absent or refuses, and changes nothing.
          if (b.discard) await expect(b.discard(0, 10)).rejects.toBeInstanceOf(BackendError);
          expectBytes(await readRange(b, 0, 300_000), initial, 'contents without discard');
          return;
        }
        await b.discard!(70_000, 100_000);
        await b.discard!(65_536, 65_536);
        await b.discard!(250_000, 1_000_000); // reaches past EOF
        await b.discard!(10, 0);
        expect(await b.getSize()).toBe(300_000);
        const all = await readRange(b, 0, 300_000);
        expectBytes(all.subarray(0, 65_536), initial.subarray(0, 65_536), 'before the discarded ranges');
        expectBytes(all.subarray(170_000, 250_000), initial.subarray(170_000, 250_000), 'between the discarded ranges');
        // Contents inside a discarded range are undefined, but the range must be writable again.
        const again = randomBytes(prng, 5000);
        await b.pwritev(100_000, [again]);
        expectBytes(await readRange(b, 100_000, 5000), again, 'rewritten after discard');
      });
    });

    describe('clause 5: read-only', () => {
      it('rejects pwritev/truncate/discard with BACKEND_READ_ONLY and changes nothing', async () => {
        if (!readOnlySupported) throw new Error('the suite needs a factory that makes read-only backends');
        const prng = prngFor(13);
        const initial = randomBytes(prng, 80_000);
        const b = await open(initial, { writable: false });
        expect(b.capabilities.writable).toBe(false);
        await expectRejects(() => b.pwritev(0, [new Uint8Array(100).fill(1)]), 'BACKEND_READ_ONLY', 'pwritev inside');
        await expectRejects(() => b.pwritev(100_000, [new Uint8Array(10).fill(1)]), 'BACKEND_READ_ONLY', 'pwritev past EOF');
        await expectRejects(() => b.pwritev(0, [new Uint8Array(0)]), 'BACKEND_READ_ONLY', 'zero-length pwritev');
        if (typeof b.truncate === 'function') {
          await expectRejects(() => b.truncate!(10), 'BACKEND_READ_ONLY', 'truncate shrink');
          await expectRejects(() => b.truncate!(1_000_000), 'BACKEND_READ_ONLY', 'truncate grow');
        }
        if (typeof b.discard === 'function') {
          await expectRejects(() => b.discard!(0, 4096), 'BACKEND_READ_ONLY', 'discard');
        }
        await b.flush();
        expect(await b.getSize()).toBe(80_000);
        expectBytes(await readVia(b, 0, [1, 79_999, 500]), new Uint8Array([...initial, ...new Uint8Array(500)]), 'contents');
      });
    });

    describe('clause 6: no buffer kept after settling', () => {
      itWrites('is unaffected by mutating a written buffer after pwritev resolved', async () => {
        const prng = prngFor(14);
        const b = await open();
        const page = randomBytes(prng, 65_536); // a whole aligned page: tempting to adopt
        const odd = randomBytes(prng, 1000);
        const pageCopy = page.slice();
        const oddCopy = odd.slice();
        await b.pwritev(65_536, [page]);
        await b.pwritev(1000, [odd]);
        page.fill(0xee);
        odd.fill(0xee);
        expectBytes(await readRange(b, 65_536, 65_536), pageCopy, 'aligned page');
        expectBytes(await readRange(b, 1000, 1000), oddCopy, 'odd range');
      });

      it('does not change a read buffer after preadv resolved', async () => {
        const prng = prngFor(15);
        const initial = randomBytes(prng, 140_000);
        const b = await open(initial);
        const target = new Uint8Array(65_536);
        await b.preadv(65_536, [target]);
        const copy = target.slice();
        if (canWrite) await b.pwritev(65_536, [new Uint8Array(65_536).fill(0x11)]);
        if (b.capabilities.truncate && b.truncate) await b.truncate(0);
        expectBytes(target, copy, 'read buffer');
        expectBytes(copy, initial.subarray(65_536, 131_072), 'read data');
      });
    });

    describe('clause 7 and ranges: invalid arguments', () => {
      const BAD_POSITIONS = [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, 2 ** 53 + 2, 2 ** 60];

      it('rejects invalid ranges with INVALID_ARGUMENT (a BackendError) and changes nothing', async () => {
        const prng = prngFor(16);
        const initial = randomBytes(prng, 5000);
        const b = await open(initial);
        for (const p of BAD_POSITIONS) {
          await expectRejects(() => b.preadv(p, [new Uint8Array(10)]), 'INVALID_ARGUMENT', `preadv at ${p}`);
          if (canWrite) await expectRejects(() => b.pwritev(p, [new Uint8Array(10).fill(1)]), 'INVALID_ARGUMENT', `pwritev at ${p}`);
        }
        // The end, not just the start, must stay within 2^53.
        await expectRejects(() => b.preadv(2 ** 53 - 10, [new Uint8Array(100)]), 'INVALID_ARGUMENT', 'preadv ending past 2^53');
        if (canWrite) await expectRejects(() => b.pwritev(2 ** 53 - 10, [new Uint8Array(100)]), 'INVALID_ARGUMENT', 'pwritev ending past 2^53');
        if (b.capabilities.truncate && b.truncate) {
          for (const s of BAD_POSITIONS) await expectRejects(() => b.truncate!(s), 'INVALID_ARGUMENT', `truncate(${s})`);
        }
        if (b.capabilities.discard && b.discard) {
          await expectRejects(() => b.discard!(-1, 10), 'INVALID_ARGUMENT', 'discard at -1');
          await expectRejects(() => b.discard!(0, -1), 'INVALID_ARGUMENT', 'discard of -1 bytes');
          await expectRejects(() => b.discard!(1.5, 1), 'INVALID_ARGUMENT', 'discard at 1.5');
          await expectRejects(() => b.discard!(2 ** 53 - 1, 10), 'INVALID_ARGUMENT', 'discard past 2^53');
        }
        expect(await b.getSize()).toBe(5000);
        expectBytes(await readRange(b, 0, 5000), initial, 'contents');
      });
    });

    describe('clause 8: close', () => {
      it('is idempotent, and every other call afterwards rejects with BACKEND_CLOSED', async () => {
        const b = await open(Uint8Array.of(1, 2, 3));
        await b.close();
        await b.close();
        await Promise.all([b.close(), b.close()]);
        await expectRejects(() => b.getSize(), 'BACKEND_CLOSED', 'getSize');
        await expectRejects(() => b.preadv(0, [new Uint8Array(3)]), 'BACKEND_CLOSED', 'preadv');
        await expectRejects(() => b.preadv(0, []), 'BACKEND_CLOSED', 'zero-length preadv');
        await expectRejects(() => b.preadv(-1, [new Uint8Array(3)]), 'BACKEND_CLOSED', 'preadv with a bad range');
        await expectRejects(() => b.pwritev(0, [Uint8Array.of(9)]), 'BACKEND_CLOSED', 'pwritev');
        await expectRejects(() => b.pwritev(0, []), 'BACKEND_CLOSED', 'zero-length pwritev');
        await expectRejects(() => b.flush(), 'BACKEND_CLOSED', 'flush');
        if (typeof b.truncate === 'function') await expectRejects(() => b.truncate!(1), 'BACKEND_CLOSED', 'truncate');
        if (typeof b.discard === 'function') await expectRejects(() => b.discard!(0, 1), 'BACKEND_CLOSED', 'discard');
        await b.close();
      });

      it('lets calls started before close() complete', async () => {
        const prng = prngFor(17);
        const initial = randomBytes(prng, 64 * 4096);
        const b = await open(initial);
        const calls: Array<Promise<unknown>> = [];
        for (let i = 0; i < 16; i++) {
          calls.push(canWrite ? b.pwritev(i * 8192, [randomBytes(prng, 4096)]) : readRange(b, i * 8192, 4096));
          calls.push(readRange(b, i * 8192 + 4096, 4096).then((got) => {
            expectBytes(got, initial.subarray(i * 8192 + 4096, i * 8192 + 8192), `read ${i}`);
          }));
        }
        const closing = b.close();
        const outcomes = await Promise.allSettled(calls);
        await closing;
        for (const o of outcomes) {
          if (o.status === 'rejected') expect.fail(`a call started before close() failed: ${String(o.reason)}`);
        }
      });

      it('lets a call split into several platform calls complete when close() follows it', async () => {
        const prng = prngFor(18);
        const initial = randomBytes(prng, 10_000);
        const b = await open(initial);
        const many = Math.min(2 * b.limits.maxIov + 5, 4000);
        if (canWrite) {
          const data = randomBytes(prng, many);
          const write = b.pwritev(20_000, Array.from({ length: many }, (_, i) => data.subarray(i, i + 1)));
          const closing = b.close();
          const outcome = await write.then(() => 'ok', (e: unknown) => e);
          await closing;
          expect(outcome, 'a many-buffer write started before close()').toBe('ok');
        }

        const again = await open(initial);
        const targets = Array.from({ length: many }, () => new Uint8Array(1).fill(GARBAGE));
        const read = again.preadv(1, targets);
        const closingAgain = again.close();
        const readOutcome = await read.then(() => 'ok', (e: unknown) => e);
        await closingAgain;
        expect(readOutcome, 'a many-buffer read started before close()').toBe('ok');
        expectBytes(Uint8Array.from(targets, (t) => t[0]!), initial.subarray(1, 1 + many), 'many-buffer read');
      });

      it('closes read-only backends too', async () => {
        if (!readOnlySupported) throw new Error('the suite needs a factory that makes read-only backends');
        const b = await open(Uint8Array.of(1), { writable: false });
        await b.close();
        await b.close();
        await expectRejects(() => b.preadv(0, [new Uint8Array(1)]), 'BACKEND_CLOSED', 'preadv');
        await expectRejects(() => b.pwritev(0, [new Uint8Array(1)]), 'BACKEND_CLOSED', 'pwritev on a closed read-only backend');
      });
    });
  });
}
