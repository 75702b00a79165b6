// SPDX-License-Identifier: MIT
// Split images (numbered parts plus manifest.json): the `split` CLI verb and writeSplitImage,
// read back through openSplitBackend (plain GETs served from the output directory by a fetch
// stand-in), with and without zstd; a qcow2 made by qemu-img read whole through its parts; the
// adaptive read-ahead; and typed errors for missing parts, lying manifests and bad parts.

import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../bindings/cli/main.js';
import { openSplitBackend } from '../bindings/backends/split-parts.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { writeSplitImage } from '../bindings/tools/split-writer.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { BackendError } from '../bindings/base/errors.js';
import { convertToRaw, makeImage, requireQemu } from './helpers/qemu.js';
import { makePrng } from './helpers/prng.js';
import { expectBytes } from './helpers/bytes.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const scratch = mkdtempSync(join(tmpdir(), 'qcow2-wasm-split-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/**
 * A fetch that serves files below `dir` for http://static.test/PATH with 200 (404 when missing),
 * and counts requests; each answer comes `headersDelayMs` late and its body `bodyDelayMs` after
 * that (a link's latency and throughput, as the read-ahead measures them).
 */
function staticFetch(dir: string, delays: { headersDelayMs?: number; bodyDelayMs?: number } = {}) {
  const requests: string[] = [];
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const fetchFn = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = new URL(String(input));
    requests.push(url.pathname);
    if (new Headers(init?.headers).has('Range')) throw new Error('the split backend sent a Range request');
    const path = join(dir, decodeURIComponent(url.pathname));
    if (delays.headersDelayMs) await pause(delays.headersDelayMs);
    if (!existsSync(path)) return new Response('not found', { status: 404 });
    const bytes = readFileSync(path);
    if (!delays.bodyDelayMs) return new Response(bytes, { status: 200 });
    const body = new ReadableStream<Uint8Array>({ start: async (controller) => { await pause(delays.bodyDelayMs!); controller.enqueue(bytes); controller.close(); } });
    return new Response(body, { status: 200 });
  };
  return { fetch: fetchFn as typeof fetch, requests };
}

/** The split parts of `data` in parts of `partBytes`, written below scratch/`name`. */
async function writeParts(name: string, data: Uint8Array, partBytes: number): Promise<void> {
  const dir = join(scratch, name);
  mkdirSync(dir);
  await writeSplitImage(createMemoryBackend(data), async (part, bytes) => { writeFileSync(join(dir, part), bytes); }, { partBytes });
}

const randomBytes = (length: number, seed: number): Uint8Array => {
  const prng = makePrng(seed);
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i += 4096) bytes.fill(prng.int(256), i, Math.min(length, i + 4096 - prng.int(100)));
  return bytes;
};

async function rejection(promise: Promise<unknown>): Promise<BackendError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err, 'expected a rejection').toBeInstanceOf(BackendError);
  return err as BackendError;
}

describe('split images', () => {
  for (const zstd of [false, true]) {
    it(`the split verb writes parts${zstd ? ' (zstd)' : ''} that read back byte for byte`, async () => {
      const data = randomBytes(3 * MiB + 1234, zstd ? 2 : 1);
      const file = join(scratch, `image-${zstd}.bin`);
      writeFileSync(file, data);
      const out = join(scratch, `out-${zstd}`);
      const lines: string[] = [];
      const code = await main(['split', '--part-size=1M', ...(zstd ? ['--zstd'] : []), file, out], { stdout: (t) => lines.push(t), stderr: (t) => lines.push(t) });
      expect(code, lines.join('')).toBe(0);
      expect(readdirSync(out).sort()).toEqual(['manifest.json', ...[0, 1, 2, 3].map((i) => `part-00000${i}.${zstd ? 'zst' : 'bin'}`)]);
      const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
      expect(manifest).toEqual({ format: 'qcow2-wasm-split', version: 1, totalBytes: data.byteLength, partBytes: MiB, partCount: 4, compression: zstd ? 'zstd' : 'none' });
      const server = staticFetch(scratch);
      const backend = await openSplitBackend(`http://static.test/out-${zstd}/manifest.json`, { fetch: server.fetch });
      expect(backend.kind).toBe('split-parts');
      expect(await backend.getSize()).toBe(data.byteLength);
      const head = new Uint8Array(100);
      const across = [new Uint8Array(MiB - 7), new Uint8Array(20)];
      await Promise.all([backend.preadv(MiB - 50, [head]), backend.preadv(10, across)]);
      expectBytes(head, data.subarray(MiB - 50, MiB + 50));
      expectBytes(across[0]!, data.subarray(10, MiB + 3));
      expectBytes(across[1]!, data.subarray(MiB + 3, MiB + 23));
      const tail = new Uint8Array(5000);
      await backend.preadv(data.byteLength - 1000, [tail]);
      expectBytes(tail.subarray(0, 1000), data.subarray(data.byteLength - 1000));
      expect(tail.subarray(1000).every((b) => b === 0)).toBe(true);
      expect((await rejection(backend.pwritev(0, [Uint8Array.of(1)]))).code).toBe('BACKEND_READ_ONLY');
      if (zstd) expect(backend.fetchStats().bytes).toBeLessThan(data.byteLength);
      await backend.close();
      expect((await rejection(backend.preadv(0, [head]))).code).toBe('BACKEND_CLOSED');
    });
  }

  it('serves a qcow2 made by qemu-img through its parts, identical to qemu-img convert', async () => {
    if (!requireQemu('split images: a qcow2 read through its parts')) return;
    const image = makeImage(scratch, 'disk.qcow2', {
      size: 8 * MiB,
      ops: [{ op: 'write', offset: 0, length: MiB, pattern: 0x11 }, { op: 'compressed', offset: 4 * MiB, length: 256 * KiB, pattern: 0x22 }],
    });
    expect(await main(['split', '-q', '--part-size', '256k', '--zstd', image, join(scratch, 'disk')], { stdout: () => undefined, stderr: () => undefined })).toBe(0);
    const server = staticFetch(scratch);
    const backend = await openSplitBackend('http://static.test/disk/', { fetch: server.fetch });
    const qcow2 = await Qcow2Image.open(backend);
    const got = new Uint8Array(8 * MiB);
    await qcow2.read(0, got.byteLength).then((bytes) => got.set(bytes));
    expectBytes(got, convertToRaw(image));
    await qcow2.close();
    expect(server.requests.every((path) => path.startsWith('/disk/'))).toBe(true);
  });

  it('reads ahead while reads go forward, and on a slow link stops on a jump', async () => {
    const data = randomBytes(64 * 64 * KiB, 3);
    await writeParts('ahead', data, 64 * KiB);
    // Quick answers, slow bodies: a round trip is worth less than a part.
    const server = staticFetch(scratch, { bodyDelayMs: 50 });
    const backend = await openSplitBackend('http://static.test/ahead/manifest.json', { fetch: server.fetch, maxReadAheadBytes: 8 * 64 * KiB });
    const chunk = new Uint8Array(16 * KiB);
    for (let at = 0; at < 16 * 64 * KiB; at += chunk.byteLength) {
      await backend.preadv(at, [chunk]);
      expectBytes(chunk, data.subarray(at, at + chunk.byteLength));
    }
    // 16 parts read in order: the window grew to 8, so parts up to 16 + 8 were asked for.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const sequentialFetches = backend.fetchStats().parts;
    expect(sequentialFetches).toBeGreaterThan(16);
    expect(sequentialFetches).toBeLessThanOrEqual(16 + 8);
    // Random reads far apart fetch only what they touch.
    for (const part of [50, 40, 60]) await backend.preadv(part * 64 * KiB + 5, [chunk]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(backend.fetchStats().parts).toBe(sequentialFetches + 3);
    await backend.close();
  });

  it('on a link whose requests wait long for a fast body, a miss fetches the aligned run of parts a round trip is worth', async () => {
    const data = randomBytes(64 * 64 * KiB, 6);
    await writeParts('runs', data, 64 * KiB);
    const server = staticFetch(scratch, { headersDelayMs: 100 });
    const backend = await openSplitBackend('http://static.test/runs/manifest.json', { fetch: server.fetch, maxReadAheadBytes: 8 * 64 * KiB });
    const chunk = new Uint8Array(16 * KiB);
    await backend.preadv(5, [chunk]); // part 0: nothing measured before it
    expect(backend.fetchStats().parts).toBe(1);
    await backend.preadv(43 * 64 * KiB + 5, [chunk]);
    expectBytes(chunk, data.subarray(43 * 64 * KiB + 5, 43 * 64 * KiB + 5 + chunk.byteLength));
    // 100 ms of waiting brings far more than 8 parts of body: the aligned 8 parts around part 43.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(server.requests.slice(2)).toEqual([43, 40, 41, 42, 44, 45, 46, 47].map((part) => `/runs/part-${String(part).padStart(6, '0')}.bin`));
    await backend.close();
  });

  it('rejects a missing part, a manifest that lies about sizes, a corrupt part and a bad manifest with typed errors', async () => {
    const data = randomBytes(3 * 64 * KiB, 4);
    const write = async (name: string, partBytes: number, edit?: (files: Map<string, Uint8Array>) => void) => {
      const files = new Map<string, Uint8Array>();
      await writeSplitImage(createMemoryBackend(data), async (n, bytes) => { files.set(n, bytes); }, { partBytes });
      edit?.(files);
      const { mkdirSync } = await import('node:fs');
      mkdirSync(join(scratch, name));
      for (const [n, bytes] of files) writeFileSync(join(scratch, name, n), bytes);
    };
    const server = staticFetch(scratch);
    const open = (name: string) => openSplitBackend(`http://static.test/${name}/manifest.json`, { fetch: server.fetch });
    const buffer = new Uint8Array(64 * KiB);

    await write('missing', 64 * KiB, (files) => files.delete('part-000001.bin'));
    const missing = await open('missing');
    await missing.preadv(0, [buffer]);
    const err = await rejection(missing.preadv(64 * KiB, [buffer]));
    expect(err.code).toBe('BACKEND_IO_ERROR');
    expect(err.message).toMatch(/part 1 .*404/);
    expect((await rejection(missing.preadv(64 * KiB, [buffer]))).message, 'a failure is not cached').toMatch(/404/);

    await write('lying', 64 * KiB, (files) => {
      const manifest = JSON.parse(new TextDecoder().decode(files.get('manifest.json')));
      files.set('manifest.json', new TextEncoder().encode(JSON.stringify({ ...manifest, partBytes: 32 * KiB, partCount: 6 })));
    });
    expect((await rejection((await open('lying')).preadv(0, [buffer]))).message).toMatch(/part 0 .*holds 65536 bytes, the manifest says 32768/);

    await write('short', 64 * KiB, (files) => files.set('part-000002.bin', files.get('part-000002.bin')!.subarray(1)));
    expect((await rejection((await open('short')).preadv(2 * 64 * KiB, [buffer]))).message).toMatch(/part 2 .*holds 65535 bytes/);

    await write('count', 64 * KiB, (files) => {
      const manifest = JSON.parse(new TextDecoder().decode(files.get('manifest.json')));
      files.set('manifest.json', new TextEncoder().encode(JSON.stringify({ ...manifest, partCount: 2 })));
    });
    const badCount = await rejection(open('count'));
    expect(badCount.code).toBe('BACKEND_IO_ERROR');
    expect(badCount.message).toMatch(/partCount 2 does not fit/);
    expect((await rejection(open('nowhere'))).message).toMatch(/manifest .*404/);
  });

  it('refuses part sizes that are not positive multiples of 512', async () => {
    for (const partBytes of [0, 1000, -512]) {
      expect((await rejection(writeSplitImage(createMemoryBackend(1024), async () => undefined, { partBytes }))).code).toBe('INVALID_ARGUMENT');
    }
    const lines: string[] = [];
    expect(await main(['split', '--part-size=1000', 'x', 'y'], { stdout: (t) => lines.push(t), stderr: (t) => lines.push(t) })).toBe(1);
    expect(lines.join('')).toMatch(/multiple of 512/);
  });
});
