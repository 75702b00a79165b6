// SPDX-License-Identifier: MIT
// Remote images in each engine: split parts (the conformance suite, missing parts, manifests
// that lie), HTTP Range servers that answer wrongly (200 to a Range request, gzip), and the
// adaptive read-ahead over Range requests.

import { describe, expect, it } from 'vitest';
import { BackendError, openHttpBackend, openSplitBackend } from '../../bindings/browser.js';
import { backendConformanceSuite } from '../backend-suite.js';
import { expectBytes } from '../helpers/bytes.js';
import { makePrng } from '../helpers/prng.js';
import { putResource, putSplitImage, uniqueName } from './helpers.js';

const KiB = 1024;

async function rejection(promise: Promise<unknown>): Promise<BackendError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err, 'expected a rejection').toBeInstanceOf(BackendError);
  return err as BackendError;
}

backendConformanceSuite('split-parts', async (initial) => openSplitBackend(await putSplitImage(initial ?? new Uint8Array(0), 64 * KiB)), {
  kind: 'split-parts',
  writable: false,
});

const sample = (length: number, seed: number): Uint8Array => makePrng(seed).fill(new Uint8Array(length));

describe('split parts: bad input', () => {
  it('rejects a missing part with BACKEND_IO_ERROR and still serves the others', async () => {
    const data = sample(3 * 16 * KiB, 1);
    const backend = await openSplitBackend(await putSplitImage(data, 16 * KiB, (files) => files.delete('part-000001.bin')));
    const got = new Uint8Array(16 * KiB);
    const err = await rejection(backend.preadv(16 * KiB + 1, [got]));
    expect(err.code).toBe('BACKEND_IO_ERROR');
    expect(err.message).toMatch(/part 1 .*404/);
    await backend.preadv(2 * 16 * KiB, [got]);
    expectBytes(got, data.subarray(2 * 16 * KiB));
    await backend.close();
  });

  it('rejects parts whose length differs from what the manifest says, and manifests that do not add up', async () => {
    const data = sample(3 * 16 * KiB - 2000, 2);
    const lying = await openSplitBackend(await putSplitImage(data, 16 * KiB, (files) => {
      const manifest = JSON.parse(new TextDecoder().decode(files.get('manifest.json')!));
      files.set('manifest.json', new TextEncoder().encode(JSON.stringify({ ...manifest, totalBytes: manifest.totalBytes + 1000 })));
    }));
    const err = await rejection(lying.preadv(2 * 16 * KiB, [new Uint8Array(100)]));
    expect(err.message).toMatch(/part 2 .*holds 14384 bytes, the manifest says 15384/);
    await lying.close();
    const inconsistent = await rejection(openSplitBackend(await putSplitImage(data, 16 * KiB, (files) => {
      const manifest = JSON.parse(new TextDecoder().decode(files.get('manifest.json')!));
      files.set('manifest.json', new TextEncoder().encode(JSON.stringify({ ...manifest, partCount: 7 })));
    })));
    expect(inconsistent.code).toBe('BACKEND_IO_ERROR');
    expect(inconsistent.message).toMatch(/partCount 7/);
  });
});

describe('http range: servers that answer wrongly', () => {
  it('rejects a 200 answer to a Range request and a gzip-encoded range with BACKEND_IO_ERROR', async () => {
    const url = await putResource(uniqueName('wrong.bin'), sample(64 * KiB, 3));
    const ignoring = await openHttpBackend(`${url.href}?quirk=ignore-range`);
    expect((await rejection(ignoring.preadv(100, [new Uint8Array(10)]))).message).toMatch(/got 200 .*ignored the Range header/);
    await ignoring.close();
    const gzip = await openHttpBackend(`${url.href}?quirk=gzip`);
    const err = await rejection(gzip.preadv(100, [new Uint8Array(10)]));
    expect(err.code).toBe('BACKEND_IO_ERROR');
    // Engines either refuse the response themselves (Chromium: a network error) or hand it over
    // decoded, when the backend must notice the encoding.
    expect(err.message).toMatch(/Content-Encoding: gzip|the request failed/);
    await gzip.close();
  });
});

/**
 * A fetch that records each request's Range header and waits `headersDelayMs` before the request
 * goes out and `bodyMsPer16KiB` for every 16 KiB of the body before its first byte: a link's
 * latency and throughput, as the read-ahead measures them.
 */
function delayingFetch(headersDelayMs: number, bodyMsPer16KiB: number): { fetch: typeof fetch; ranges: string[] } {
  const ranges: string[] = [];
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const delaying: typeof fetch = async (input, init) => {
    const range = new Headers(init?.headers).get('Range');
    if (range !== null) ranges.push(range);
    await pause(headersDelayMs);
    const response = await fetch(input, init);
    if (response.body === null || bodyMsPer16KiB === 0) return response;
    const bodyDelayMs = bodyMsPer16KiB * Number(response.headers.get('Content-Length')) / (16 * KiB);
    const body = response.body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({ start: () => pause(bodyDelayMs) }));
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
  return { fetch: delaying, ranges };
}

describe('http range: adaptive read-ahead', () => {
  it('reads ahead while reads go forward (fewer, larger requests), and on a slow link only what is asked on jumps', async () => {
    const data = sample(2048 * KiB, 4);
    const url = await putResource(uniqueName('ahead.bin'), data);
    // Quick headers, slow bodies (0.4 KiB a millisecond): a round trip is worth less than a block.
    const { fetch: slowBodies, ranges } = delayingFetch(0, 40);
    const backend = await openHttpBackend(url, { fetch: slowBodies, readAhead: { blockBytes: 16 * KiB, maxBytes: 256 * KiB } });
    const chunk = new Uint8Array(4 * KiB);
    for (let at = 0; at < 1024 * KiB; at += chunk.byteLength) {
      await backend.preadv(at, [chunk]);
      expectBytes(chunk, data.subarray(at, at + chunk.byteLength), `at ${at}`);
    }
    // 256 sequential 4 KiB reads: without read-ahead 256 requests, with 16 KiB blocks 64.
    expect(ranges.length).toBeLessThan(16);
    const sequential = ranges.length;
    await backend.preadv(1900 * KiB, [chunk]);
    await backend.preadv(1200 * KiB, [chunk]);
    expectBytes(chunk, data.subarray(1200 * KiB, 1204 * KiB));
    expect(ranges.slice(sequential)).toEqual([`bytes=${1888 * KiB}-${1904 * KiB - 1}`, `bytes=${1200 * KiB}-${1216 * KiB - 1}`]);
    await backend.close();
  });

  it('on a link whose requests wait long for a fast body, a jump fetches the aligned run a round trip is worth, up to maxBytes', async () => {
    const data = sample(2048 * KiB, 5);
    const url = await putResource(uniqueName('runs.bin'), data);
    const { fetch: slowHeaders, ranges } = delayingFetch(150, 0);
    const backend = await openHttpBackend(url, { fetch: slowHeaders, readAhead: { blockBytes: 16 * KiB, maxBytes: 256 * KiB } });
    await backend.preadv(0, [new Uint8Array(256 * KiB)]); // the first response: nothing measured before it
    expect(ranges).toEqual([`bytes=0-${256 * KiB - 1}`]);
    await new Promise((resolve) => setTimeout(resolve, 50)); // the read resolves with its last byte, the response is measured just after
    const chunk = new Uint8Array(4 * KiB);
    await backend.preadv(1900 * KiB, [chunk]);
    expectBytes(chunk, data.subarray(1900 * KiB, 1904 * KiB));
    // 150 ms of waiting brings far more than 256 KiB of body: the whole aligned 256 KiB around the read.
    expect(ranges[1]).toBe(`bytes=${1792 * KiB}-${2048 * KiB - 1}`);
    const near = new Uint8Array(64 * KiB);
    await backend.preadv(1800 * KiB, [near]);
    expectBytes(near, data.subarray(1800 * KiB, 1864 * KiB));
    expect(ranges).toHaveLength(2);
    await backend.close();
  });
});
