// SPDX-License-Identifier: MIT
// Tests of the in-memory backend: the conformance suite plus what only a sparse paged store has
// (huge logical sizes, no allocation on read, copy-in of the initial contents).

import { describe, expect, it } from 'vitest';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { BackendError } from '../bindings/base/errors.js';
import { backendConformanceSuite } from './backend-suite.js';
import { expectBytes, expectFilled } from './helpers/bytes.js';
import { makePrng } from './helpers/prng.js';

backendConformanceSuite(
  'memory',
  async (initial, options) => createMemoryBackend(initial, { writable: options?.writable ?? true }),
  { kind: 'memory', farPosition: 2 ** 52 },
);

describe('memory backend specifics', () => {
  it('describes itself as documented', async () => {
    const b = createMemoryBackend();
    expect(b.kind).toBe('memory');
    expect(b.capabilities).toEqual({ writable: true, truncate: true, discard: true, durableFlush: true });
    expect(b.limits).toEqual({ maxIov: 1024, maxTransfer: 2 ** 31 - 4096 });
    const ro = createMemoryBackend(10, { writable: false });
    expect(ro.capabilities.writable).toBe(false);
    await b.close();
    await ro.close();
  });

  it('takes a number as the initial size: zeros, no data', async () => {
    const b = createMemoryBackend(123_457);
    expect(await b.getSize()).toBe(123_457);
    const got = new Uint8Array(130_000).fill(0xa5);
    await b.preadv(0, [got]);
    expectFilled(got, 0, 'initial zeros');
  });

  it('rejects an invalid initial size with INVALID_ARGUMENT', () => {
    for (const bad of [-1, 0.5, Number.NaN, 2 ** 53]) {
      let thrown: unknown;
      try {
        createMemoryBackend(bad);
      } catch (err) {
        thrown = err;
      }
      expect(thrown, `initial size ${bad}`).toBeInstanceOf(BackendError);
      expect((thrown as BackendError).code).toBe('INVALID_ARGUMENT');
    }
  });

  it('copies the initial contents', async () => {
    const initial = makePrng(5).fill(new Uint8Array(70_000));
    const copy = initial.slice();
    const b = createMemoryBackend(initial);
    initial.fill(0);
    const got = new Uint8Array(70_000);
    await b.preadv(0, [got]);
    expectBytes(got, copy, 'contents after the caller reused its array');
  });

  it('holds a logical size of 2^52 and uses its last bytes', async () => {
    const b = createMemoryBackend(2 ** 52);
    expect(await b.getSize()).toBe(2 ** 52);
    const data = makePrng(6).fill(new Uint8Array(100));
    await b.pwritev(2 ** 52 - 10, [data.subarray(0, 3), data.subarray(3)]);
    expect(await b.getSize()).toBe(2 ** 52 + 90);
    const got = new Uint8Array(300).fill(0xa5);
    await b.preadv(2 ** 52 - 110, [got]);
    expectFilled(got.subarray(0, 100), 0, 'before');
    expectBytes(got.subarray(100, 200), data, 'written');
    expectFilled(got.subarray(200), 0, 'past EOF');
    await b.truncate!(2 ** 52 - 5);
    const tail = new Uint8Array(10).fill(0xa5);
    await b.preadv(2 ** 52 - 10, [tail]);
    expectBytes(tail.subarray(0, 5), data.subarray(0, 5), 'kept by the shrink');
    expectFilled(tail.subarray(5), 0, 'cut by the shrink');
    // Discarding (almost) everything walks the few pages, not 2^36 page slots.
    await b.discard!(0, 2 ** 52);
    expect(await b.getSize()).toBe(2 ** 52 - 5);
  });

  it('does not allocate pages when reading unwritten ranges', async () => {
    const b = createMemoryBackend(2 ** 40);
    const target = new Uint8Array(4 * 1024 * 1024);
    const before = process.memoryUsage().arrayBuffers;
    // 256 MiB of reads over holes: page allocation on read would hold on to 256 MiB.
    for (let i = 0; i < 64; i++) await b.preadv(i * target.length + 12_345, [target]);
    const grown = process.memoryUsage().arrayBuffers - before;
    expect(grown).toBeLessThan(32 * 1024 * 1024);
    await b.close();
  });

  it('zero-fills a discarded range and drops whole pages', async () => {
    const initial = makePrng(7).fill(new Uint8Array(300_000));
    const b = createMemoryBackend(initial);
    await b.discard!(1000, 200_000);
    const got = new Uint8Array(300_000);
    await b.preadv(0, [got]);
    expectBytes(got.subarray(0, 1000), initial.subarray(0, 1000), 'before');
    expectFilled(got.subarray(1000, 201_000), 0, 'discarded (this backend zero-fills)');
    expectBytes(got.subarray(201_000), initial.subarray(201_000), 'after');
  });
});
