// SPDX-License-Identifier: MIT
// Tests of the Deno file backend, run under Deno by run.test.ts: the conformance suite on real
// files (4 handles, and 1 handle where every transfer queues), what only this backend has
// (handle leasing under concurrency, staging of short buffers, short transfers, platform
// errors), and the `qcow2-wasm/deno` entry point opening image files by path.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMPLETED, type Backend } from '../../bindings/backends/backend.js';
import { denoFileBackend, type DenoFileLike } from '../../bindings/backends/deno.js';
import { BackendError, Qcow2WasmError } from '../../bindings/base/errors.js';
import { createImageFile, createMemoryBackend, openDenoBackend, openImageFile, Qcow2Image, RawImage } from '../../bindings/deno.js';
import { backendConformanceSuite } from '../backend-suite.js';
import { expectBytes, expectFilled } from '../helpers/bytes.js';
import { makePrng, type Prng } from '../helpers/prng.js';
import { ModelDisk } from '../helpers/model.js';

/** One temporary directory for every file of this module, removed at the end. */
let directory: string | undefined;
let fileCount = 0;

async function nextPath(): Promise<string> {
  directory ??= await Deno.makeTempDir({ prefix: 'qcow2-wasm-deno-' });
  return `${directory}/file-${fileCount++}.img`;
}

afterAll(async () => {
  if (directory !== undefined) await Deno.remove(directory, { recursive: true });
});

for (const [handles, sync] of [[4, 'auto'], [1, 'auto'], [4, false], [2, true]] as const) {
  backendConformanceSuite(
    `deno-file (${handles} handle${handles === 1 ? '' : 's'}, sync ${sync})`,
    async (initial, options) => {
      const path = await nextPath();
      await Deno.writeFile(path, initial ?? new Uint8Array(0));
      return openDenoBackend(path, { writable: options?.writable ?? true, handles, sync });
    },
    { kind: 'deno-file', farPosition: 2 ** 40, seed: handles + (sync === true ? 10 : sync === false ? 20 : 0) },
  );
}

/** Asserts a rejection with a Qcow2WasmError of `code` whose message names a file. */
async function codeOf(promise: Promise<unknown>, code: string): Promise<void> {
  const err = await promise.then(
    () => expect.fail(`resolved, expected ${code}`),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(Qcow2WasmError);
  expect((err as Qcow2WasmError).code).toBe(code);
}

/** Asserts a rejection with a BackendError of `code` and returns the error. */
async function rejection(promise: Promise<unknown>, code: string): Promise<BackendError> {
  const err = await promise.then(
    () => expect.fail(`resolved, expected ${code}`),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BackendError);
  expect((err as BackendError).code).toBe(code);
  return err as BackendError;
}

describe('deno backend: opening', () => {
  it('describes itself as documented, writable and read-only', async () => {
    const path = await nextPath();
    await Deno.writeTextFile(path, 'x');
    const rw = await openDenoBackend(path, { writable: true });
    const ro = await openDenoBackend(path);
    expect(rw.kind).toBe('deno-file');
    expect(rw.capabilities).toEqual({ writable: true, truncate: true, discard: false, durableFlush: true });
    expect(ro.capabilities).toEqual({ writable: false, truncate: false, discard: false, durableFlush: true });
    expect(rw.limits).toEqual({ maxIov: 1024, maxTransfer: 0x7ffff000 });
    expect(rw.discard).toBeUndefined();
    await rw.close();
    await ro.close();
  });

  it('rejects a missing file without create: BACKEND_IO_ERROR caused by NotFound (ENOENT), naming the path', async () => {
    const path = `${await nextPath()}.missing`;
    for (const options of [undefined, { writable: true }, { writable: true, handles: 3 }]) {
      const err = await rejection(openDenoBackend(path, options), 'BACKEND_IO_ERROR');
      expect(err.cause).toBeInstanceOf(Deno.errors.NotFound);
      expect((err.cause as { code?: string }).code).toBe('ENOENT');
      expect(err.message).toContain(path);
      expect(err.message).toContain('ENOENT');
    }
    await expect(Deno.stat(path)).rejects.toBeInstanceOf(Deno.errors.NotFound);
  });

  it('creates a missing file with create, and never truncates an existing one', async () => {
    const fresh = await nextPath();
    const b = await openDenoBackend(fresh, { writable: true, create: true });
    expect(await b.getSize()).toBe(0);
    await b.pwritev(3, [Uint8Array.of(1, 2)]);
    await b.close();
    expectBytes(await Deno.readFile(fresh), Uint8Array.of(0, 0, 0, 1, 2));

    const existing = await nextPath();
    const contents = makePrng(1).fill(new Uint8Array(10_000));
    await Deno.writeFile(existing, contents);
    const again = await openDenoBackend(existing, { writable: true, create: true });
    expect(await again.getSize()).toBe(10_000);
    const got = new Uint8Array(10_000);
    await again.preadv(0, [got]);
    expectBytes(got, contents, 'existing contents');
    await again.close();
    expectBytes(await Deno.readFile(existing), contents, 'file after close');
  });

  it('rejects create without writable and bad handle counts with INVALID_ARGUMENT, creating nothing', async () => {
    const path = await nextPath();
    await rejection(openDenoBackend(path, { create: true }), 'INVALID_ARGUMENT');
    for (const handles of [0, 65, 1.5, Number.NaN]) {
      await rejection(openDenoBackend(path, { writable: true, create: true, handles }), 'INVALID_ARGUMENT');
    }
    await expect(Deno.stat(path)).rejects.toBeInstanceOf(Deno.errors.NotFound);
  });

  it('wraps a platform error of an I/O call with the Deno error as cause (EISDIR)', async () => {
    const sub = `${await nextPath()}.dir`;
    await Deno.mkdir(sub);
    const b = await openDenoBackend(sub); // a directory opens read-only; reading it fails
    const err = await rejection(b.preadv(0, [new Uint8Array(16)]), 'BACKEND_IO_ERROR');
    expect(err.cause).toBeInstanceOf(Deno.errors.IsADirectory);
    expect(err.message).toContain(sub);
    expect(err.message).toContain('EISDIR');
    await b.close();
  });

  it('finishes a small transfer on an idle handle before returning (COMPLETED), a large one later', async () => {
    const path = await nextPath();
    await Deno.writeFile(path, new Uint8Array(0));
    const b = await openDenoBackend(path, { writable: true });
    const data = makePrng(4).fill(new Uint8Array(4096));
    expect(b.pwritev(0, [data])).toBe(COMPLETED);
    const back = new Uint8Array(4096);
    expect(b.preadv(0, [back])).toBe(COMPLETED);
    expectBytes(back, data, 'read back at once');
    const large = new Uint8Array(8 << 20);
    const pending = b.pwritev(4096, [large]);
    expect(pending).not.toBe(COMPLETED);
    await pending;
    await b.close();
  });

  it('writes that another reader of the file sees, after flush; truncate changes the file', async () => {
    const path = await nextPath();
    await Deno.writeFile(path, new Uint8Array(0));
    const w = await openDenoBackend(path, { writable: true });
    const data = makePrng(3).fill(new Uint8Array(200_000));
    await w.pwritev(100, [data.subarray(0, 7), data.subarray(7)]);
    await w.flush();
    const onDisk = await Deno.readFile(path);
    expect(onDisk.length).toBe(200_100);
    expectFilled(onDisk.subarray(0, 100), 0, 'hole');
    expectBytes(onDisk.subarray(100), data, 'written bytes');
    await w.truncate!(50);
    expect((await Deno.stat(path)).size).toBe(50);
    await w.close();
  });
});

/** Counters shared by the fake handles of one file. */
interface FakeStats {
  /** Calls per method, over all handles. */
  calls: Record<'seek' | 'read' | 'write' | 'truncate' | 'syncData' | 'stat', number>;
  /** Most operations ever outstanding on one handle at once (1 when calls never share a cursor). */
  maxOpsPerHandle: number;
  /** Most handles with an operation outstanding at once. */
  maxBusyHandles: number;
  /** The position of every seek, in order. */
  seeks: number[];
}

/**
 * A file of up to `capacity` bytes behind `count` fake handles, each with its own cursor. Every
 * operation completes after a random delay (a timer of 0-1 ms or a few microtask turns), and
 * reads and writes may move only a random prefix of what they were offered (short transfers).
 */
function fakeFile(prng: Prng, count: number, capacity: number, short = false) {
  const bytes = new Uint8Array(capacity);
  let size = 0;
  let busyHandles = 0;
  const stats: FakeStats = {
    calls: { seek: 0, read: 0, write: 0, truncate: 0, syncData: 0, stat: 0 },
    maxOpsPerHandle: 0,
    maxBusyHandles: 0,
    seeks: [],
  };
  const pause = async (): Promise<void> => {
    if (prng.int(2) === 0) await new Promise((resolve) => setTimeout(resolve, prng.int(2)));
    else for (let i = prng.int(5); i > 0; i--) await Promise.resolve();
  };
  const handles = Array.from({ length: count }, (): DenoFileLike & { closed: boolean } => {
    let cursor = 0;
    let outstanding = 0;
    const op = async <T>(name: keyof FakeStats['calls'], body: () => T): Promise<T> => {
      stats.calls[name]++;
      if (outstanding++ === 0) busyHandles++;
      stats.maxOpsPerHandle = Math.max(stats.maxOpsPerHandle, outstanding);
      stats.maxBusyHandles = Math.max(stats.maxBusyHandles, busyHandles);
      try {
        await pause();
        return body();
      } finally {
        if (--outstanding === 0) busyHandles--;
      }
    };
    const take = (offered: number): number => (short && offered > 1 ? 1 + prng.int(offered) : offered);
    return {
      closed: false,
      seek: (offset) => op('seek', () => {
        stats.seeks.push(offset);
        cursor = offset;
        return offset;
      }),
      read: (target) => op('read', () => {
        if (cursor >= size) return null;
        const n = take(Math.min(target.byteLength, size - cursor));
        target.set(bytes.subarray(cursor, cursor + n));
        cursor += n;
        return n;
      }),
      write: (source) => op('write', () => {
        const n = take(source.byteLength);
        bytes.set(source.subarray(0, n), cursor);
        cursor += n;
        size = Math.max(size, cursor);
        return n;
      }),
      truncate: (newSize) => op('truncate', () => {
        if (newSize < size) bytes.fill(0, newSize, size);
        size = newSize;
      }),
      syncData: () => op('syncData', () => undefined),
      stat: () => op('stat', () => ({ size, dev: 1, ino: 1 })),
      tryLock: async () => true,
      close() {
        this.closed = true;
      },
    };
  });
  return { handles, stats, bytes: () => bytes.subarray(0, size) };
}

describe('deno backend: one cursor per call (fake handles with random delays)', () => {
  /** Many concurrent writes, then reads, of disjoint ranges; returns the fake's counters. */
  async function concurrentTraffic(handleCount: number, seed: number): Promise<FakeStats> {
    const prng = makePrng(seed);
    const fake = fakeFile(makePrng(seed + 1000), handleCount, 4 << 20, true);
    const b = denoFileBackend('fake.img', fake.handles, true);
    const SLOT = 30_000;
    const ranges = Array.from({ length: 64 }, (_, i) => ({
      position: i * SLOT + prng.int(1000),
      data: prng.fill(new Uint8Array(1 + prng.int(SLOT - 1000))),
    }));
    // Each write is split into buffers, some short enough to be staged, some moved in place.
    await Promise.all(ranges.map((r) => {
      const cut = prng.int(r.data.length);
      return b.pwritev(r.position, [r.data.subarray(0, cut), r.data.subarray(cut)]);
    }));
    const reads = await Promise.all(ranges.map(async (r) => {
      const target = new Uint8Array(r.data.length);
      await b.preadv(r.position, [target.subarray(0, 7), target.subarray(7)]);
      return target;
    }));
    reads.forEach((got, i) => expectBytes(got, ranges[i]!.data, `seed ${seed}, range ${i}`));
    const model = new ModelDisk();
    for (const r of ranges) model.write(r.position, r.data);
    expectBytes(fake.bytes(), model.read(0, fake.bytes().length), `seed ${seed}: file contents`);
    await b.close();
    expect(fake.handles.every((h) => h.closed), 'close() closes every handle').toBe(true);
    return fake.stats;
  }

  it('never has two operations outstanding on one handle, and keeps every handle busy', async () => {
    for (let seed = 1; seed <= 2; seed++) {
      const stats = await concurrentTraffic(4, seed);
      expect(stats.maxOpsPerHandle, `seed ${seed}: operations at once on one handle`).toBe(1);
      expect(stats.maxBusyHandles, `seed ${seed}: handles busy at once`).toBe(4);
    }
  });

  it('with one handle, runs the calls one at a time in call order', async () => {
    const stats = await concurrentTraffic(1, 9);
    expect(stats.maxOpsPerHandle).toBe(1);
    // Every call seeks once, first thing: the seeks are the writes' positions, then the reads', in call order.
    const prng = makePrng(9);
    const positions = Array.from({ length: 64 }, (_, i) => {
      const position = i * 30_000 + prng.int(1000);
      prng.fill(new Uint8Array(1 + prng.int(29_000)));
      return position;
    });
    expect(stats.seeks).toEqual([...positions, ...positions]);
  });

  it('keeps handles apart when calls fail: a failed transfer frees its handle for the next call', async () => {
    const fake = fakeFile(makePrng(3), 2, 1 << 20);
    const failing = fake.handles[0]!;
    const realWrite = failing.write.bind(failing);
    let failures = 0;
    failing.write = async (source) => {
      if (failures++ < 3) throw Object.assign(new Error('injected'), { code: 'EIO' });
      return realWrite(source);
    };
    const b = denoFileBackend('fake.img', fake.handles, true);
    const outcomes = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => b.pwritev(i * 100, [new Uint8Array(100).fill(i + 1)])));
    const rejected = outcomes.filter((o) => o.status === 'rejected');
    expect(rejected.length).toBeGreaterThan(0);
    for (const o of rejected) expect((o as PromiseRejectedResult).reason).toMatchObject({ code: 'BACKEND_IO_ERROR' });
    // Every write that resolved landed where it was aimed.
    const got = fake.bytes();
    outcomes.forEach((o, i) => {
      if (o.status === 'fulfilled') expectFilled(got.subarray(i * 100, i * 100 + 100), i + 1, `write ${i}`);
    });
    await b.close();
  });
});

describe('deno backend: platform calls of a vectored call', () => {
  it('stages short buffers together and moves long ones in place', async () => {
    const fake = fakeFile(makePrng(4), 1, 8 << 20);
    const b = denoFileBackend('fake.img', fake.handles, true);
    const prng = makePrng(5);
    // 1000 buffers of 100 bytes: one seek and one write of 100,000 bytes.
    const small = Array.from({ length: 1000 }, () => prng.fill(new Uint8Array(100)));
    await b.pwritev(0, small);
    expect(fake.stats.calls).toMatchObject({ seek: 1, write: 1 });
    // A short buffer alone, a long one, two short ones: three writes (the last two staged).
    const mixed = [prng.fill(new Uint8Array(10)), prng.fill(new Uint8Array(70_000)), prng.fill(new Uint8Array(5)), prng.fill(new Uint8Array(6))];
    await b.pwritev(200_000, mixed);
    expect(fake.stats.calls).toMatchObject({ seek: 2, write: 4 });
    // 3 MiB in 4 KiB buffers: staged in 1 MiB platform calls.
    const pages = Array.from({ length: 768 }, () => prng.fill(new Uint8Array(4096)));
    await b.pwritev(300_000, pages);
    expect(fake.stats.calls).toMatchObject({ seek: 3, write: 7 });

    const readBack = (buffers: Uint8Array[]) => buffers.map((buffer) => new Uint8Array(buffer.length));
    const targets = readBack(small);
    await b.preadv(0, targets);
    expect(fake.stats.calls).toMatchObject({ seek: 4, read: 1 });
    targets.forEach((t, i) => expectBytes(t, small[i]!, `small buffer ${i}`));
    const mixedTargets = readBack(mixed);
    await b.preadv(200_000, mixedTargets);
    mixedTargets.forEach((t, i) => expectBytes(t, mixed[i]!, `mixed buffer ${i}`));
    const pageTargets = readBack(pages);
    await b.preadv(300_000, pageTargets);
    pageTargets.forEach((t, i) => expectBytes(t, pages[i]!, `page ${i}`));
    expect(fake.stats.calls).toMatchObject({ seek: 6, read: 1 + 3 + 3 });
    await b.close();
  });

  it('completes short reads and writes, and zero-fills after end-of-file in every buffer', async () => {
    for (let seed = 1; seed <= 12; seed++) {
      const prng = makePrng(seed);
      const fake = fakeFile(makePrng(seed * 7), 2, 1 << 20, true);
      const b = denoFileBackend('fake.img', fake.handles, true);
      const sizes = Array.from({ length: 1 + prng.int(12) }, () => (prng.int(4) === 0 ? 0 : prng.int(prng.int(3) === 0 ? 150_000 : 500)));
      const data = sizes.map((n) => prng.fill(new Uint8Array(n)));
      const total = sizes.reduce((sum, n) => sum + n, 0);
      const position = prng.int(10_000);
      await b.pwritev(position, data);
      expect(await b.getSize(), `seed ${seed}: size`).toBe(total === 0 ? 0 : position + total);
      // Read from a little before the data to well past its end, through odd buffers.
      const start = Math.max(0, position - prng.int(100));
      const readSizes = Array.from({ length: 1 + prng.int(12) }, () => prng.int(prng.int(3) === 0 ? 150_000 : 700));
      const targets = readSizes.map((n) => new Uint8Array(n).fill(0xa5));
      await b.preadv(start, targets);
      const model = new ModelDisk();
      model.write(position, data);
      const expected = model.read(start, readSizes.reduce((sum, n) => sum + n, 0));
      let at = 0;
      for (const t of targets) {
        expectBytes(t, expected.subarray(at, at + t.length), `seed ${seed}: read buffer at ${at}`);
        at += t.length;
      }
      await b.close();
    }
  });

  it('rejects a write that makes no progress with BACKEND_IO_ERROR instead of looping', async () => {
    const fake = fakeFile(makePrng(6), 1, 1024);
    fake.handles[0]!.write = async () => 0;
    const b = denoFileBackend('fake.img', fake.handles, true);
    const err = await rejection(b.pwritev(0, [new Uint8Array(5)]), 'BACKEND_IO_ERROR');
    expect((err.cause as { code?: string }).code).toBe('EIO');
    await b.close();
  });
});

describe('deno backend: synchronous small transfers', () => {
  it('by default moves a small write before pwritev returns, and a read before preadv returns', async () => {
    const path = await nextPath();
    await Deno.writeFile(path, new Uint8Array(8192));
    const b = await openDenoBackend(path, { writable: true });
    const data = makePrng(7).fill(new Uint8Array(4096));
    const written = b.pwritev(4096, [data.subarray(0, 1000), data.subarray(1000)]);
    expectBytes(Deno.readFileSync(path).subarray(4096), data);
    await written;
    const target = [new Uint8Array(3000), new Uint8Array(1096)];
    const read = b.preadv(4096, target);
    expectBytes(target[0]!, data.subarray(0, 3000));
    expectBytes(target[1]!, data.subarray(3000));
    await read;
    await b.close();
  });

  it('completes short synchronous reads and writes and zero-fills past end-of-file (fake file)', async () => {
    const bytes = new Uint8Array(64);
    let size = 0;
    let cursor = 0;
    const calls = { sync: 0, async: 0 };
    const unused = async (): Promise<never> => {
      calls.async++;
      throw new Error('the asynchronous path was taken');
    };
    const file: DenoFileLike = {
      seek: unused, read: unused, write: unused, truncate: unused, syncData: unused, tryLock: unused,
      stat: async () => ({ size, dev: 1, ino: 1 }),
      seekSync: (offset) => (cursor = offset),
      readSync: (target) => {
        calls.sync++;
        if (cursor >= size) return null;
        target[0] = bytes[cursor++]!;
        return 1;
      },
      writeSync: (source) => {
        calls.sync++;
        bytes[cursor++] = source[0]!;
        size = Math.max(size, cursor);
        return 1;
      },
      close() {},
    };
    const b = denoFileBackend('fake.img', [file], true, 32);
    await b.pwritev(2, [Uint8Array.of(1, 2, 3), Uint8Array.of(4)]);
    expectBytes(bytes.subarray(0, size), Uint8Array.of(0, 0, 1, 2, 3, 4));
    const target = [new Uint8Array(3).fill(9), new Uint8Array(4).fill(9)];
    await b.preadv(3, target);
    expectBytes(target[0]!, Uint8Array.of(2, 3, 4));
    expectBytes(target[1]!, new Uint8Array(4));
    expect(calls).toEqual({ sync: 4 + 3 + 1, async: 0 });
    await b.close();
  });

  it('rejects a bad sync option with INVALID_ARGUMENT', async () => {
    const path = await nextPath();
    await Deno.writeFile(path, new Uint8Array(1));
    await rejection(openDenoBackend(path, { sync: 'yes' as unknown as boolean }), 'INVALID_ARGUMENT');
    await rejection(openDenoBackend(path, { syncMaxBytes: -1 }), 'INVALID_ARGUMENT');
  });
});

describe('deno backend: concurrency on a real file', () => {
  it('mixes 240 concurrent reads and writes of disjoint ranges, short and long buffers, for 1 and 4 handles', async () => {
    for (const handles of [1, 4]) {
      const prng = makePrng(100 + handles);
      const path = await nextPath();
      const b: Backend = await openDenoBackend(path, { writable: true, create: true, handles });
      const SLOT = 80_000;
      const SLOTS = 120;
      const model = new ModelDisk();
      const initial = prng.fill(new Uint8Array(SLOTS * SLOT));
      await b.pwritev(0, [initial]);
      model.write(0, initial);
      const calls: Array<Promise<void>> = [];
      for (let i = 0; i < SLOTS; i++) {
        // Slot i: a write into its first half, a read of its second half, both in flight at once.
        const length = 1 + prng.int(prng.int(2) === 0 ? 1000 : 39_000);
        const data = prng.fill(new Uint8Array(length));
        const cuts = [0, prng.int(length), prng.int(length), length].sort((x, y) => x - y);
        const position = i * SLOT + prng.int(SLOT / 2 - length);
        calls.push(b.pwritev(position, cuts.slice(1).map((cut, k) => data.subarray(cuts[k], cut))));
        model.write(position, data);
        const readAt = i * SLOT + SLOT / 2 + prng.int(SLOT / 4);
        const expected = model.read(readAt, SLOT / 4);
        const target = new Uint8Array(SLOT / 4);
        calls.push(b.preadv(readAt, [target.subarray(0, 3), target.subarray(3, 4000), target.subarray(4000)])
          .then(() => expectBytes(target, expected, `handles ${handles}: read in slot ${i}`)));
      }
      await Promise.all(calls);
      const all = new Uint8Array(SLOTS * SLOT);
      await b.preadv(0, [all]);
      expectBytes(all, model.read(0, all.length), `handles ${handles}: file contents`);
      await b.close();
      expectBytes(await Deno.readFile(path), model.read(0, all.length), `handles ${handles}: file as Deno reads it`);
    }
  });
});

describe('qcow2-wasm/deno: image files by path', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await Deno.makeTempDir({ prefix: 'qcow2-wasm-deno-images-' });
  });
  afterAll(async () => {
    await Deno.remove(dir, { recursive: true });
  });

  it('creates a qcow2 overlay over a raw backing file named relatively, writes, reopens and reads it', async () => {
    const base = makePrng(7).fill(new Uint8Array(2 << 20));
    await Deno.writeFile(`${dir}/base.raw`, base);
    const overlay = await createImageFile(`${dir}/overlay.qcow2`, { virtualSize: 2 << 20, backingFile: 'base.raw', backingFormat: 'raw' });
    expect(overlay).toBeInstanceOf(Qcow2Image);
    const data = makePrng(8).fill(new Uint8Array(100_000));
    await Promise.all([overlay.write(1000, data.subarray(0, 50_000)), overlay.write(51_000, data.subarray(50_000))]);
    await overlay.flush();
    await overlay.close();

    const reopened = await openImageFile(`${dir}/overlay.qcow2`, { readOnly: true });
    expect(reopened).toBeInstanceOf(Qcow2Image);
    const expected = base.slice();
    expected.set(data, 1000);
    expectBytes(await reopened.read(0, 2 << 20), expected, 'overlay over its backing file');
    await reopened.close();
    expectBytes(await Deno.readFile(`${dir}/base.raw`), base, 'the backing file is untouched');
  });

  it('opens a raw file as RawImage and writes through to it', async () => {
    await Deno.writeFile(`${dir}/disk.raw`, new Uint8Array(1 << 20));
    const disk = await openImageFile(`${dir}/disk.raw`);
    expect(disk).toBeInstanceOf(RawImage);
    await Promise.all([disk.write(0, new Uint8Array(512).fill(7)), disk.write(512, new Uint8Array(512).fill(8))]);
    await disk.flush();
    expectBytes(await disk.read(510, 4), Uint8Array.of(7, 7, 8, 8));
    await disk.close();
    const onDisk = await Deno.readFile(`${dir}/disk.raw`);
    expectFilled(onDisk.subarray(0, 512), 7, 'first sector');
    expectFilled(onDisk.subarray(512, 1024), 8, 'second sector');
  });

  it('rejects a missing file with BACKEND_IO_ERROR and leaves no handle open', async () => {
    await rejection(openImageFile(`${dir}/nothing.qcow2`), 'BACKEND_IO_ERROR');
  });

  it('one writer per image: a second writable open is IMAGE_LOCKED, a reader needs shareWithWriter', async () => {
    await Deno.writeFile(`${dir}/locked.raw`, new Uint8Array(1 << 20));
    const writer = await openImageFile(`${dir}/locked.raw`, { format: 'raw' });
    await codeOf(openImageFile(`${dir}/locked.raw`, { format: 'raw' }), 'IMAGE_LOCKED');
    await codeOf(openImageFile(`${dir}/./locked.raw`, { format: 'raw', readOnly: true }), 'IMAGE_LOCKED');
    const reader = await openImageFile(`${dir}/locked.raw`, { format: 'raw', readOnly: true, shareWithWriter: true });
    await writer.write(0, new Uint8Array(512).fill(5));
    expectFilled(await reader.read(0, 512), 5, 'the reader beside the writer');
    await Promise.all([writer.close(), reader.close()]);
    await (await openImageFile(`${dir}/locked.raw`, { format: 'raw' })).close();
  });

  it('the flock: an exclusive lock keeps out every other lock, shared locks share, none is left after close', async () => {
    const path = `${dir}/flock.raw`;
    await Deno.writeFile(path, new Uint8Array(4096));
    const exclusive = await openDenoBackend(path, { writable: true, lock: 'exclusive' });
    await codeOf(openDenoBackend(path, { writable: true, lock: 'exclusive' }), 'IMAGE_LOCKED');
    await codeOf(openDenoBackend(path, { lock: 'shared' }), 'IMAGE_LOCKED');
    const unlocked = await openDenoBackend(path);
    await Promise.all([exclusive.close(), unlocked.close()]);
    const shared = [await openDenoBackend(path, { lock: 'shared' }), await openDenoBackend(path, { lock: 'shared' })];
    await codeOf(openDenoBackend(path, { writable: true, lock: 'exclusive' }), 'IMAGE_LOCKED');
    await Promise.all(shared.map((b) => b.close()));
    await (await openDenoBackend(path, { writable: true, lock: 'exclusive' })).close();
    await codeOf(openDenoBackend(path, { lock: 'sideways' as 'shared' }), 'INVALID_ARGUMENT');
  });

  it('resolves each backing name next to the image that records it: sub/top -> ../mid -> base', async () => {
    await Deno.mkdir(`${dir}/chain/sub`, { recursive: true });
    const base = await createImageFile(`${dir}/chain/base.qcow2`, { virtualSize: 1 << 20 });
    await base.write(0, new Uint8Array(4096).fill(1));
    await base.close();
    const mid = await createImageFile(`${dir}/chain/mid.qcow2`, { virtualSize: 1 << 20, backingFile: 'base.qcow2', backingFormat: 'qcow2' });
    await mid.write(4096, new Uint8Array(4096).fill(2));
    await mid.close();
    await (await createImageFile(`${dir}/chain/sub/base.qcow2`, { virtualSize: 1 << 20 })).close(); // a decoy next to the top
    const top = await createImageFile(`${dir}/chain/sub/top.qcow2`, { virtualSize: 1 << 20, backingFile: '../mid.qcow2', backingFormat: 'qcow2' });
    await top.write(8192, new Uint8Array(4096).fill(3));
    const bytes = await top.read(0, 12288);
    await top.close();
    for (const [i, fill] of [1, 2, 3].entries()) expectFilled(bytes.subarray(i * 4096, (i + 1) * 4096), fill, `layer ${i}`);
  });

  it('a probed raw image refuses a first sector that would probe as qcow2', async () => {
    await Deno.writeFile(`${dir}/guarded.raw`, new Uint8Array(1 << 20));
    const disk = await openImageFile(`${dir}/guarded.raw`);
    await codeOf(disk.write(0, Uint8Array.of(0x51, 0x46, 0x49, 0xfb)), 'IMAGE_WRITE_REFUSED');
    await disk.close();
    expectFilled((await Deno.readFile(`${dir}/guarded.raw`)).subarray(0, 512), 0, 'the first sector');
  });

  it('reaches no node: module from bindings/deno.ts', async () => {
    const bindings = new URL('../../bindings/', import.meta.url);
    const seen = new Set<string>();
    const pending = ['deno.ts'];
    const nodeImports: string[] = [];
    while (pending.length > 0) {
      const file = pending.pop()!;
      if (seen.has(file)) continue;
      seen.add(file);
      const source = await Deno.readTextFile(new URL(file, bindings));
      for (const [, specifier] of source.matchAll(/^(?:import|export)\b[^'"]*?\bfrom\s+'([^']+)'/gm)) {
        if (specifier!.startsWith('node:')) nodeImports.push(`${file} imports ${specifier}`);
        else if (specifier!.startsWith('.')) pending.push(new URL(specifier!.replace(/\.js$/, '.ts'), new URL(file, bindings)).href.slice(bindings.href.length));
      }
    }
    expect(seen.size, 'modules reached').toBeGreaterThan(10);
    expect(seen.has('backends/deno.ts') && seen.has('files/open-image.ts') && seen.has('index.ts')).toBe(true);
    expect(nodeImports).toEqual([]);
  });

  it('re-exports the neutral entry point', async () => {
    const memory = await Qcow2Image.create(createMemoryBackend(), { virtualSize: 1 << 20 });
    expectFilled(await memory.read(0, 4096), 0, 'fresh image');
    await memory.close();
  });
});
