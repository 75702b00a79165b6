// SPDX-License-Identifier: MIT
// Fetching on a worker (bindings/backends/worker-fetch.ts): a request made through it answers as
// the page's fetch does (status, headers, body; a HEAD or 404 too), streams its body and stops on
// a cancel, fails as fetch fails, refuses what it cannot carry, and where the worker cannot start
// the requests go to the page's fetch. The browser entry makes it the remote backends' default.

import { afterEach, describe, expect, it } from 'vitest';
import '../../bindings/browser.js';
import { createWorkerFetch } from '../../bindings/backends/worker-fetch.js';
import { defaultRemoteFetch } from '../../bindings/backends/remote-fetch.js';
import { expectBytes } from '../helpers/bytes.js';
import { makePrng } from '../helpers/prng.js';
import { putResource, uniqueName } from './helpers.js';

const KiB = 1024;
const RealWorker = globalThis.Worker;
const realFetch = globalThis.fetch;

afterEach(() => {
  globalThis.Worker = RealWorker;
  globalThis.fetch = realFetch;
});

describe('fetching on a worker', () => {
  it('answers a Range request, a HEAD and a missing file as the page\'s fetch does', async () => {
    const data = makePrng(7).fill(new Uint8Array(300 * KiB));
    const url = await putResource(uniqueName('worker-fetch.bin'), data);
    const workerFetch = createWorkerFetch()!;
    const ranged = await workerFetch(url, { headers: { Range: `bytes=${100 * KiB}-${200 * KiB - 1}` } });
    expect(ranged.status).toBe(206);
    expect(ranged.headers.get('Content-Range')).toBe(`bytes ${100 * KiB}-${200 * KiB - 1}/${300 * KiB}`);
    expectBytes(new Uint8Array(await ranged.arrayBuffer()), data.subarray(100 * KiB, 200 * KiB));
    const head = await workerFetch(url, { method: 'HEAD' });
    expect([head.status, head.headers.get('Content-Length'), head.body]).toEqual([200, String(300 * KiB), null]);
    const missingUrl = new URL(uniqueName('no-such-file'), url);
    const missing = await workerFetch(missingUrl, {});
    const pageMissing = await fetch(missingUrl);
    expect(missing.status).toBe(pageMissing.status);
    expect(await missing.text()).toBe(await pageMissing.text());
  });

  it('answers requests made together, each with its own bytes', async () => {
    const data = makePrng(8).fill(new Uint8Array(512 * KiB));
    const url = await putResource(uniqueName('worker-fetch-many.bin'), data);
    const workerFetch = createWorkerFetch()!;
    const starts = [0, 64, 128, 192, 256, 320, 384, 448].map((k) => k * KiB);
    const bodies = await Promise.all(starts.map(async (start) => {
      const response = await workerFetch(url, { headers: { Range: `bytes=${start}-${start + 64 * KiB - 1}` } });
      return new Uint8Array(await response.arrayBuffer());
    }));
    bodies.forEach((body, i) => expectBytes(body, data.subarray(starts[i]!, starts[i]! + 64 * KiB)));
  });

  it('streams a body, and goes on after one is cancelled part way', async () => {
    const data = makePrng(9).fill(new Uint8Array(4096 * KiB));
    const url = await putResource(uniqueName('worker-fetch-large.bin'), data);
    const workerFetch = createWorkerFetch()!;
    const response = await workerFetch(url, {});
    const reader = response.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    expectBytes(first.value!, data.subarray(0, first.value!.byteLength));
    await reader.cancel();
    const again = await workerFetch(url, { headers: { Range: 'bytes=0-99' } });
    expectBytes(new Uint8Array(await again.arrayBuffer()), data.subarray(0, 100));
  });

  it('fails as fetch fails (a TypeError), and refuses an init it cannot carry', async () => {
    const workerFetch = createWorkerFetch()!;
    await expect(workerFetch('http://127.0.0.1:9/unreachable', {})).rejects.toBeInstanceOf(TypeError);
    await expect(workerFetch(location.href, { signal: new AbortController().signal })).rejects.toThrow(/URL, method and headers only/);
  });

  it('sends its requests to the page\'s fetch where the worker cannot start', async () => {
    globalThis.Worker = class {
      onerror: ((event: unknown) => void) | null = null;
      onmessage: unknown = null;
      constructor() {
        setTimeout(() => this.onerror?.({ preventDefault: () => undefined, message: 'blocked by the content security policy' }), 0);
      }
      postMessage(): void {}
      terminate(): void {}
    } as unknown as typeof Worker;
    const data = makePrng(10).fill(new Uint8Array(8 * KiB));
    const url = await putResource(uniqueName('worker-fetch-fallback.bin'), data);
    const fallbackCalls: string[] = [];
    const workerFetch = createWorkerFetch((input, init) => {
      fallbackCalls.push(String(input));
      return realFetch(input, init);
    })!;
    const first = await workerFetch(url, { headers: { Range: 'bytes=0-1023' } });
    expectBytes(new Uint8Array(await first.arrayBuffer()), data.subarray(0, 1024));
    const second = await workerFetch(url, {});
    expectBytes(new Uint8Array(await second.arrayBuffer()), data);
    expect(fallbackCalls).toEqual([url.href, url.href]);
  });

  it('is what the remote backends fetch with by default in a browser: the page\'s fetch is not called', async () => {
    const url = await putResource(uniqueName('worker-fetch-default.bin'), new Uint8Array(1024).fill(3));
    let pageFetches = 0;
    globalThis.fetch = (input, init) => {
      pageFetches++;
      return realFetch(input, init);
    };
    const response = await defaultRemoteFetch()(url, { headers: { Range: 'bytes=0-9' } });
    expect(new Uint8Array(await response.arrayBuffer())).toEqual(new Uint8Array(10).fill(3));
    expect(pageFetches).toBe(0);
  });
});
