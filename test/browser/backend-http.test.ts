// SPDX-License-Identifier: MIT
// The HTTP Range backend against the test server's Range store (range-server.ts): the
// conformance suite, the strict response checks against servers that get Range wrong, and the
// coalescing of reads issued together (counted at fetch).

import { describe, expect, it } from 'vitest';
import { BackendError, openHttpBackend, type Backend } from '../../bindings/browser.js';
import { backendConformanceSuite } from '../backend-suite.js';
import { expectBytes, expectFilled } from '../helpers/bytes.js';
import { makePrng } from '../helpers/prng.js';
import { putResource, uniqueName } from './helpers.js';

backendConformanceSuite(
  'http-range',
  async (initial) => openHttpBackend(await putResource(uniqueName('conformance'), initial ?? new Uint8Array(0))),
  { kind: 'http-range', writable: false },
);

/** A fetch that records every request (method and Range header) before passing it on. */
function countingFetch(): { fetch: typeof fetch; requests: Array<{ method: string; range: string | null; headers: Headers }> } {
  const requests: Array<{ method: string; range: string | null; headers: Headers }> = [];
  const counted: typeof fetch = (input, init) => {
    const headers = new Headers(init?.headers);
    requests.push({ method: init?.method ?? 'GET', range: headers.get('Range'), headers });
    return fetch(input, init);
  };
  return { fetch: counted, requests };
}

async function rejection(promise: Promise<unknown>): Promise<BackendError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err, 'expected a rejection').toBeInstanceOf(BackendError);
  return err as BackendError;
}

const DATA = makePrng(31).fill(new Uint8Array(1_000_000));

describe('http-range backend: strict responses', () => {
  it('opens with HEAD and reads exact ranges without read-ahead; describes itself as documented', async () => {
    const url = await putResource(uniqueName('strict'), DATA);
    const counter = countingFetch();
    const b = await openHttpBackend(url, { fetch: counter.fetch, headers: { 'X-Test': 'yes' }, readAhead: false });
    expect(b.kind).toBe('http-range');
    expect(b.capabilities).toEqual({ writable: false, truncate: false, discard: false, durableFlush: false });
    expect(await b.getSize()).toBe(1_000_000);
    expect(counter.requests.map((r) => r.method)).toEqual(['HEAD']);
    const got = new Uint8Array(5000);
    await b.preadv(999_000, [got]);
    expectBytes(got.subarray(0, 1000), DATA.subarray(999_000), 'the last bytes');
    expectFilled(got.subarray(1000), 0, 'past the end');
    expect(counter.requests[1]).toMatchObject({ method: 'GET', range: 'bytes=999000-999999' });
    expect(counter.requests.every((r) => r.headers.get('X-Test') === 'yes'), 'the extra header on every request').toBe(true);
    await b.preadv(1_000_000, [new Uint8Array(10)]);
    await b.preadv(5, []);
    expect(counter.requests.length, 'reads past the end or empty send nothing').toBe(2);
    await b.close();
  });

  it('reads ahead by default: a small read fetches its 256 KiB block, sequential reads widen the window', async () => {
    const url = await putResource(uniqueName('default-ahead'), DATA);
    const counter = countingFetch();
    const b = await openHttpBackend(url, { fetch: counter.fetch });
    const got = new Uint8Array(4096);
    await b.preadv(1000, [got]);
    expectBytes(got, DATA.subarray(1000, 5096));
    expect(counter.requests.slice(1).map((r) => r.range)).toEqual(['bytes=0-262143']);
    await b.preadv(5096, [got]); // in the cached block; going forward, the next block is read ahead
    expectBytes(got, DATA.subarray(5096, 9192));
    expect(counter.requests.slice(2).every((r) => Number(/^bytes=(\d+)-/.exec(r.range ?? '')?.[1]) >= 262144), 'block 0 is not fetched again').toBe(true);
    for (let at = 9192; at < 600_000; at += 4096) {
      const piece = new Uint8Array(4096);
      await b.preadv(at, [piece]);
      expectBytes(piece, DATA.subarray(at, at + 4096), `at ${at}`);
    }
    expect(counter.requests.length, 'sequential 4 KiB reads over 600 KB: a few block requests').toBeLessThan(6);
    await b.close();
  });

  it('learns the size from a bytes=0-0 probe when HEAD fails', async () => {
    const url = await putResource(uniqueName('nohead'), DATA);
    url.searchParams.set('quirk', 'no-head');
    const counter = countingFetch();
    const b = await openHttpBackend(url, { fetch: counter.fetch });
    expect(await b.getSize()).toBe(1_000_000);
    expect(counter.requests.map((r) => `${r.method} ${r.range}`)).toEqual(['HEAD null', 'GET bytes=0-0']);
    const got = new Uint8Array(100);
    await b.preadv(12_345, [got]);
    expectBytes(got, DATA.subarray(12_345, 12_445));
    await b.close();
  });

  it('opens an empty resource (416 on the probe) and a missing one fails', async () => {
    const url = await putResource(uniqueName('empty'), new Uint8Array(0));
    url.searchParams.set('quirk', 'no-head');
    const b = await openHttpBackend(url);
    expect(await b.getSize()).toBe(0);
    await b.close();
    const missing = await rejection(openHttpBackend(new URL('/__range/never-stored', location.origin)));
    expect(missing.code).toBe('BACKEND_IO_ERROR');
    expect(missing.message).toMatch(/404/);
  });

  it('refuses a server that ignores Range (200 with the whole body)', async () => {
    const url = await putResource(uniqueName('ignore'), DATA);
    url.searchParams.set('quirk', 'ignore-range');
    const b = await openHttpBackend(url); // HEAD is fine
    const err = await rejection(b.preadv(10, [new Uint8Array(10)]));
    expect(err.code).toBe('BACKEND_IO_ERROR');
    expect(err.message).toMatch(/expected 206 .* got 200 .*ignored the Range header/);
    url.searchParams.set('quirk', 'ignore-range,no-head');
    const probe = await rejection(openHttpBackend(url));
    expect(probe.code).toBe('BACKEND_IO_ERROR');
    expect(probe.message).toMatch(/Range requests/);
  });

  it('refuses a wrong Content-Range, a wrong total and a short body', async () => {
    for (const [quirk, pattern] of [
      ['wrong-range', /expected Content-Range "bytes 10-19\/1000000", got "bytes 11-20\/1000000"/],
      ['wrong-total', /expected Content-Range "bytes 10-19\/1000000", got "bytes 10-19\/1000001"/],
      ['short-body', /has 9 bytes, expected 10/],
    ] as const) {
      const url = await putResource(uniqueName(quirk), DATA);
      url.searchParams.set('quirk', quirk);
      const b = await openHttpBackend(url, { readAhead: false });
      const target = new Uint8Array(10);
      const err = await rejection(b.preadv(10, [target]));
      expect(err.code, quirk).toBe('BACKEND_IO_ERROR');
      expect(err.message, quirk).toMatch(pattern);
      await b.close();
    }
  });

  it('rejects writes with BACKEND_READ_ONLY and bad options with INVALID_ARGUMENT', async () => {
    const url = await putResource(uniqueName('ro'), DATA);
    const b = await openHttpBackend(url);
    expect((await rejection(b.pwritev(0, [Uint8Array.of(1)]))).code).toBe('BACKEND_READ_ONLY');
    expect((await rejection(openHttpBackend(url, { maxCoalesceBytes: 0 }))).code).toBe('INVALID_ARGUMENT');
    await b.close();
  });
});

describe('http-range backend: coalescing', () => {
  /** Opens DATA with a counting fetch; returns the backend and the GETs it made after opening. */
  async function open(maxCoalesceBytes?: number): Promise<{ b: Backend; gets: () => Array<string | null> }> {
    const url = await putResource(uniqueName('coalesce'), DATA);
    const counter = countingFetch();
    const b = await openHttpBackend(url, { fetch: counter.fetch, maxCoalesceBytes, readAhead: false });
    const gets = () => counter.requests.filter((r) => r.method === 'GET').map((r) => r.range);
    return { b, gets };
  }

  it('joins adjacent and overlapping reads issued in the same tick into one request', async () => {
    const { b, gets } = await open();
    const reads: Array<Promise<void>> = [];
    const targets: Array<{ position: number; target: Uint8Array }> = [];
    // 16 adjacent 4 KiB reads, issued out of order, plus two overlapping ones and a contained one.
    for (const i of [3, 0, 15, 7, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14]) targets.push({ position: 4096 + i * 4096, target: new Uint8Array(4096) });
    targets.push({ position: 4096 + 2000, target: new Uint8Array(10_000) });
    targets.push({ position: 4096 + 16 * 4096 - 100, target: new Uint8Array(100) });
    targets.push({ position: 4096 + 100, target: new Uint8Array(50) });
    for (const { position, target } of targets) reads.push(b.preadv(position, [target.subarray(0, 7), target.subarray(7)]));
    await Promise.all(reads);
    expect(gets()).toEqual([`bytes=4096-${4096 + 16 * 4096 - 1}`]);
    for (const { position, target } of targets) expectBytes(target, DATA.subarray(position, position + target.byteLength), `read at ${position}`);
    await b.close();
  });

  it('keeps reads with a gap between them, reads in different ticks, and reads past maxCoalesceBytes apart', async () => {
    const { b, gets } = await open(16_384);
    const one = new Uint8Array(4096);
    const two = new Uint8Array(4096);
    await Promise.all([b.preadv(0, [one]), b.preadv(4097, [two])]);
    expectBytes(one, DATA.subarray(0, 4096));
    expectBytes(two, DATA.subarray(4097, 8193));
    expect(gets()).toEqual(['bytes=0-4095', 'bytes=4097-8192']);

    await b.preadv(100_000, [one]);
    await b.preadv(104_096, [two]);
    expect(gets().slice(2)).toEqual(['bytes=100000-104095', 'bytes=104096-108191']);

    // Eight adjacent 4 KiB reads with a 16 KiB cap: two requests of four reads each.
    const eight = Array.from({ length: 8 }, () => new Uint8Array(4096));
    await Promise.all(eight.map((t, i) => b.preadv(200_000 + i * 4096, [t])));
    expect(gets().slice(4)).toEqual([`bytes=200000-${200_000 + 16_384 - 1}`, `bytes=${200_000 + 16_384}-${200_000 + 32_768 - 1}`]);
    eight.forEach((t, i) => expectBytes(t, DATA.subarray(200_000 + i * 4096, 200_000 + (i + 1) * 4096), `read ${i}`));
    // A single read larger than the cap is still one request.
    const big = new Uint8Array(50_000);
    await b.preadv(300_000, [big]);
    expect(gets().slice(6)).toEqual(['bytes=300000-349999']);
    expectBytes(big, DATA.subarray(300_000, 350_000));
    await b.close();
  });

  it('resolves a read at the front of a long request once its bytes arrived; when the rest fails only the reads still waiting reject', async () => {
    const url = await putResource(uniqueName('early'), DATA);
    // Bodies longer than 64 KiB hand out their first 64 KiB, then hold the rest until `release` (or fail at `fail`).
    let release!: () => void;
    let fail!: (error: Error) => void;
    const held: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      const whole = new Uint8Array(await response.arrayBuffer());
      const rest = new Promise<void>((resolve, reject) => { release = resolve; fail = reject; });
      if (whole.byteLength <= 65_536) return new Response(whole, { status: response.status, headers: response.headers });
      const body = new ReadableStream<Uint8Array>({
        start(controller) { controller.enqueue(whole.slice(0, 65_536)); },
        async pull(controller) {
          await rest;
          controller.enqueue(whole.slice(65_536));
          controller.close();
        },
      });
      return new Response(body, { status: response.status, headers: response.headers });
    };
    for (const rest of ['arrives', 'fails'] as const) {
      const b = await openHttpBackend(url, { fetch: held, readAhead: false });
      const front = new Uint8Array(4096);
      const back = new Uint8Array(4096);
      let frontDone = false;
      const frontRead = b.preadv(1000, [front]).then(() => { frontDone = true; });
      const backRead = b.preadv(1000 + 4096, [new Uint8Array(200_000 - 4096)]).then(() => b.preadv(100_000, [back]));
      await Promise.race([frontRead, new Promise((resolve) => setTimeout(resolve, 5000))]);
      expect(frontDone).toBe(true); // while the rest of the body is held
      expectBytes(front, DATA.subarray(1000, 1000 + 4096));
      if (rest === 'arrives') {
        release();
        await backRead;
        expectBytes(back, DATA.subarray(100_000, 100_000 + 4096));
      } else {
        fail(new Error('connection reset'));
        expect((await rejection(backRead)).code).toBe('BACKEND_IO_ERROR');
      }
      await b.close();
    }
  });

  it('fails every read of a coalesced request when it fails, and only those', async () => {
    const url = await putResource(uniqueName('fail'), DATA);
    let calls = 0;
    const failingSecond: typeof fetch = (input, init) => {
      calls++;
      return calls === 2 ? Promise.reject(new TypeError('network down')) : fetch(input, init);
    };
    const b = await openHttpBackend(url, { fetch: failingSecond, readAhead: false });
    const outcomes = await Promise.allSettled([
      b.preadv(0, [new Uint8Array(10)]),
      b.preadv(10, [new Uint8Array(10)]),
      b.preadv(500_000, [new Uint8Array(10)]),
    ]);
    expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected', 'fulfilled']);
    const reason = (outcomes[0] as PromiseRejectedResult).reason as BackendError;
    expect(reason).toBeInstanceOf(BackendError);
    expect(reason.code).toBe('BACKEND_IO_ERROR');
    expect(reason.cause).toBeInstanceOf(TypeError);
    await b.close();
  });
});
