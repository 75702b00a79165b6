// SPDX-License-Identifier: MIT
// Tests of the Node.js file backend on temp files: the conformance suite, opening/creating,
// platform errors as causes, and the transfer loop's splitting and short-transfer handling.

import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend, BackendLimits } from '../bindings/backends/backend.js';
import { openNodeBackend, transferAll, type VectoredCall } from '../bindings/backends/node.js';
import { BackendError } from '../bindings/base/errors.js';
import { backendConformanceSuite } from './backend-suite.js';
import { expectBytes, expectFilled } from './helpers/bytes.js';
import { makePrng } from './helpers/prng.js';

let dir = '';
let counter = 0;
const nextPath = (): string => join(dir, `f${counter++}.img`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qcow2-wasm-backend-'));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

backendConformanceSuite(
  'node-file (defaults: synchronous up to 128 KiB, thread pool beyond)',
  async (initial, options) => {
    const path = nextPath();
    await writeFile(path, initial ?? new Uint8Array(0));
    return openNodeBackend(path, { writable: options?.writable ?? true });
  },
  { kind: 'node-file', farPosition: 2 ** 40 },
);

backendConformanceSuite(
  'node-file (sync syscalls)',
  async (initial, options) => {
    const path = nextPath();
    await writeFile(path, initial ?? new Uint8Array(0));
    return openNodeBackend(path, { writable: options?.writable ?? true, sync: true });
  },
  { kind: 'node-file', farPosition: 2 ** 40 },
);

backendConformanceSuite(
  'node-file (thread pool only)',
  async (initial, options) => {
    const path = nextPath();
    await writeFile(path, initial ?? new Uint8Array(0));
    return openNodeBackend(path, { writable: options?.writable ?? true, sync: false });
  },
  { kind: 'node-file', farPosition: 2 ** 40 },
);

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

describe('node backend: opening', () => {
  it('describes itself as documented, writable and read-only', async () => {
    const path = nextPath();
    await writeFile(path, 'x');
    const rw = await openNodeBackend(path, { writable: true });
    const ro = await openNodeBackend(path);
    expect(rw.kind).toBe('node-file');
    expect(rw.capabilities).toEqual({ writable: true, truncate: true, discard: false, durableFlush: true });
    expect(ro.capabilities).toEqual({ writable: false, truncate: false, discard: false, durableFlush: true });
    expect(rw.limits).toEqual({ maxIov: 1024, maxTransfer: 0x7ffff000 });
    expect(rw.discard).toBeUndefined();
    await rw.close();
    await ro.close();
  });

  it('rejects a missing file without create: BACKEND_IO_ERROR caused by ENOENT, naming the path', async () => {
    const path = join(dir, 'missing.img');
    for (const options of [undefined, { writable: true }]) {
      const err = await rejection(openNodeBackend(path, options), 'BACKEND_IO_ERROR');
      expect((err.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
      expect(err.message).toContain(path);
      expect(err.message).toContain('ENOENT');
    }
    await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('creates a missing file with create, and never truncates an existing one', async () => {
    const fresh = join(dir, 'created.img');
    const b = await openNodeBackend(fresh, { writable: true, create: true });
    expect(await b.getSize()).toBe(0);
    await b.pwritev(3, [Uint8Array.of(1, 2)]);
    await b.close();
    expectBytes(new Uint8Array(await readFile(fresh)), Uint8Array.of(0, 0, 0, 1, 2));

    const existing = nextPath();
    const contents = makePrng(1).fill(new Uint8Array(10_000));
    await writeFile(existing, contents);
    const again = await openNodeBackend(existing, { writable: true, create: true });
    expect(await again.getSize()).toBe(10_000);
    const got = new Uint8Array(10_000);
    await again.preadv(0, [got]);
    expectBytes(got, contents, 'existing contents');
    await again.close();
    expectBytes(new Uint8Array(await readFile(existing)), contents, 'file after close');
  });

  it('rejects create without writable with INVALID_ARGUMENT and creates nothing', async () => {
    const path = join(dir, 'not-created.img');
    await rejection(openNodeBackend(path, { create: true }), 'INVALID_ARGUMENT');
    await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('wraps a platform error of an I/O call with the errno as cause (EISDIR)', async () => {
    const sub = join(dir, 'a-directory');
    await mkdir(sub);
    const b = await openNodeBackend(sub); // O_RDONLY on a directory opens; reading it fails
    const err = await rejection(b.preadv(0, [new Uint8Array(16)]), 'BACKEND_IO_ERROR');
    expect((err.cause as NodeJS.ErrnoException).code).toBe('EISDIR');
    expect(err.message).toContain(sub);
    expect(err.message).toContain('EISDIR');
    await b.close();
  });
});

describe('node backend: I/O against the real file', () => {
  let b: Backend | undefined;
  afterAll(async () => {
    await b?.close();
  });

  it('reads a range straddling EOF through several buffers (short read, then EOF)', async () => {
    const path = nextPath();
    const contents = makePrng(2).fill(new Uint8Array(10_000));
    await writeFile(path, contents);
    b = await openNodeBackend(path);
    const targets = [new Uint8Array(3000), new Uint8Array(0), new Uint8Array(4000), new Uint8Array(13_000)];
    for (const t of targets) t.fill(0xa5);
    await b.preadv(5000, targets);
    const got = new Uint8Array(20_000);
    let at = 0;
    for (const t of targets) {
      got.set(t, at);
      at += t.length;
    }
    expectBytes(got.subarray(0, 5000), contents.subarray(5000), 'bytes before EOF');
    expectFilled(got.subarray(5000), 0, 'bytes past EOF');
    expect(await b.getSize()).toBe(10_000);
  });

  it('writes that another reader of the file sees, after flush', async () => {
    const path = nextPath();
    await writeFile(path, new Uint8Array(0));
    const w = await openNodeBackend(path, { writable: true });
    const data = makePrng(3).fill(new Uint8Array(200_000));
    await w.pwritev(100, [data.subarray(0, 7), data.subarray(7)]);
    await w.flush();
    const onDisk = new Uint8Array(await readFile(path));
    expect(onDisk.length).toBe(200_100);
    expectFilled(onDisk.subarray(0, 100), 0, 'hole');
    expectBytes(onDisk.subarray(100), data, 'written bytes');
    await w.truncate!(50);
    expect((await stat(path)).size).toBe(50);
    await w.close();
  });

  it('leaves the file untouched when a read-only backend refuses writes', async () => {
    const path = nextPath();
    const contents = makePrng(4).fill(new Uint8Array(5000));
    await writeFile(path, contents);
    const ro = await openNodeBackend(path);
    await rejection(ro.pwritev(0, [new Uint8Array(10)]), 'BACKEND_READ_ONLY');
    await rejection(ro.pwritev(9000, [new Uint8Array(10)]), 'BACKEND_READ_ONLY');
    await rejection(ro.truncate!(0), 'BACKEND_READ_ONLY');
    await ro.close();
    expectBytes(new Uint8Array(await readFile(path)), contents, 'file contents');
  });
});

describe('node backend: transferAll (the loop behind preadv/pwritev)', () => {
  const LIMITS: BackendLimits = { maxIov: 3, maxTransfer: 10 };

  /** A fake file: each call moves a random prefix (at least 1 byte) of what it was offered. */
  function fakeFile(seed: number, size: number) {
    const prng = makePrng(seed);
    const file = new Uint8Array(1000);
    prng.fill(file.subarray(0, size));
    const calls: Array<{ position: number; iov: number; bytes: number; moved: number }> = [];
    let length = size;
    const check = (iov: Uint8Array[], position: number): number => {
      const bytes = iov.reduce((n, b) => n + b.length, 0);
      calls.push({ position, iov: iov.length, bytes, moved: 0 });
      expect(iov.length).toBeGreaterThan(0);
      expect(iov.length).toBeLessThanOrEqual(LIMITS.maxIov);
      expect(bytes).toBeLessThanOrEqual(LIMITS.maxTransfer);
      for (const b of iov) expect(b.length, 'no zero-length iovec').toBeGreaterThan(0);
      return 1 + prng.int(bytes); // short transfers of random length
    };
    const read: VectoredCall = async (iov, position) => {
      await Promise.resolve();
      let moved = Math.min(check(iov, position), Math.max(0, length - position));
      const result = moved;
      calls[calls.length - 1]!.moved = moved;
      let at = position;
      for (const b of iov) {
        const n = Math.min(b.length, moved);
        b.set(file.subarray(at, at + n));
        at += n;
        moved -= n;
      }
      return result;
    };
    const write: VectoredCall = async (iov, position) => {
      await Promise.resolve();
      let moved = check(iov, position);
      const result = moved;
      calls[calls.length - 1]!.moved = moved;
      let at = position;
      for (const b of iov) {
        const n = Math.min(b.length, moved);
        file.set(b.subarray(0, n), at);
        at += n;
        moved -= n;
      }
      length = Math.max(length, at);
      return result;
    };
    return { file, calls, read, write };
  }

  it('splits by maxIov and maxTransfer, skips empty buffers and resumes after short writes', async () => {
    for (let seed = 1; seed <= 40; seed++) {
      const fake = fakeFile(seed, 0);
      const prng = makePrng(seed * 77);
      const sizes = Array.from({ length: 1 + prng.int(20) }, () => (prng.int(4) === 0 ? 0 : prng.int(25)));
      const buffers = sizes.map((n) => prng.fill(new Uint8Array(n)));
      const total = sizes.reduce((a, b) => a + b, 0);
      const position = prng.int(100);
      await transferAll(fake.write, 'write', position, buffers, LIMITS);
      const expected = new Uint8Array(total);
      let at = 0;
      for (const b of buffers) {
        expected.set(b, at);
        at += b.length;
      }
      expectBytes(fake.file.subarray(position, position + total), expected, `seed ${seed}`);
      if (total === 0) expect(fake.calls.length).toBe(0);
      // Calls are contiguous: each starts where the previous one's moved bytes ended.
      let next = position;
      for (const call of fake.calls) {
        expect(call.position).toBe(next);
        next += call.moved;
      }
      expect(next).toBe(position + total);
    }
  });

  it('reads through short transfers and zero-fills everything after EOF', async () => {
    for (let seed = 1; seed <= 40; seed++) {
      const size = 50 + makePrng(seed).int(100);
      const fake = fakeFile(seed, size);
      const prng = makePrng(seed * 31);
      const sizes = Array.from({ length: 1 + prng.int(30) }, () => (prng.int(4) === 0 ? 0 : prng.int(25)));
      const buffers = sizes.map((n) => new Uint8Array(n).fill(0xa5));
      const position = prng.int(160);
      await transferAll(fake.read, 'read', position, buffers, LIMITS);
      const got = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
      let at = 0;
      for (const b of buffers) {
        got.set(b, at);
        at += b.length;
      }
      const expected = new Uint8Array(got.length);
      expected.set(fake.file.subarray(position, Math.min(size, position + got.length)));
      expectBytes(got, expected, `seed ${seed}`);
    }
  });

  it('rejects a write that makes no progress instead of looping', async () => {
    const stuck: VectoredCall = async () => 0;
    const err = await rejection(transferAll(stuck, 'write', 0, [new Uint8Array(5)], LIMITS), 'BACKEND_IO_ERROR');
    expect((err.cause as NodeJS.ErrnoException).code).toBe('EIO');
  });
});
