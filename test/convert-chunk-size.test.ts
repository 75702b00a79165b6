// SPDX-License-Identifier: MIT
// The platform's convert chunk size and chunk buffers: convert reads in chunks of the size set
// (progress moves by one chunk at a time), the result is the same whatever the size, bad sizes are
// refused; its chunk buffers come from the allocator set, and page-aligned ones (the Node entry's)
// serve a file-to-file convert alike.

import { afterEach, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { convertToRaw, convertToRawStream } from '../bindings/tools/convert.js';
import {
  allocateChunkBuffer, convertChunkBytes, pageAlignedBuffer, setChunkAllocator, setConvertChunkBytes,
} from '../bindings/tools/convert-chunk-size.js';

const MiB = 1 << 20;
const initial = convertChunkBytes();
afterEach(() => {
  setConvertChunkBytes(initial);
  setChunkAllocator((byteLength) => new Uint8Array(byteLength));
});

/** The raw stream of `image` and the progress steps convert reported. */
async function rawStream(image: Qcow2Image): Promise<{ bytes: Uint8Array; steps: number[] }> {
  const chunks: Uint8Array[] = [];
  const done: number[] = [];
  await convertToRawStream(image, new WritableStream<Uint8Array>({ write(chunk) { chunks.push(chunk.slice()); } }), { onProgress: (bytes) => done.push(bytes) });
  return { bytes: new Uint8Array(Buffer.concat(chunks)), steps: done.slice(1).map((bytes, i) => bytes - done[i]) };
}

it('reads in chunks of the size set, with the same result', async () => {
  const image = await Qcow2Image.create(createMemoryBackend(), { virtualSize: 4 * MiB });
  await image.write(MiB - 512, new Uint8Array(8192).fill(7));
  await image.write(3 * MiB, new Uint8Array(4096).fill(9));
  expect(initial).toBe(8 * MiB);
  const large = await rawStream(image);
  expect(large.steps).toEqual([4 * MiB]);
  setConvertChunkBytes(MiB);
  const small = await rawStream(image);
  expect(small.steps).toEqual([MiB, MiB, MiB, MiB]);
  expect(Buffer.compare(small.bytes, large.bytes)).toBe(0);
  expect(small.bytes[MiB]).toBe(7);
  await image.close();
});

it('refuses sizes that are not a power of two from 64 KiB to 64 MiB', () => {
  for (const bad of [0, 65535, 3 * MiB, 128 * MiB, Number.NaN]) {
    expect(() => setConvertChunkBytes(bad), String(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  }
  expect(convertChunkBytes()).toBe(initial);
});

it('takes chunk buffers from the allocator set; page-aligned ones carry a file-to-file convert alike', async () => {
  const plain = allocateChunkBuffer(3 * 65536 + 5);
  expect(plain.byteLength).toBe(3 * 65536 + 5);
  expect(plain.every((byte) => byte === 0)).toBe(true);
  const aligned = pageAlignedBuffer(3 * 65536 + 5);
  expect({ length: aligned.byteLength, offset: aligned.byteOffset, zeros: aligned.every((byte) => byte === 0) })
    .toEqual({ length: 3 * 65536 + 5, offset: 0, zeros: true });
  expect(aligned.buffer.byteLength).toBe(4 * 65536);
  expect(aligned.buffer).not.toBe(pageAlignedBuffer(65536).buffer);

  const image = await Qcow2Image.create(createMemoryBackend(), { virtualSize: 5 * MiB });
  await image.write(MiB - 4096, new Uint8Array(3 * MiB).map((_, i) => (i * 13) >> 5));
  const dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-chunk-buffers-'));
  try {
    const outputs: Uint8Array[] = [];
    for (const allocator of ['plain', 'aligned'] as const) {
      const sizes: number[] = [];
      setChunkAllocator((byteLength) => {
        sizes.push(byteLength);
        return allocator === 'plain' ? new Uint8Array(byteLength) : pageAlignedBuffer(byteLength);
      });
      setConvertChunkBytes(MiB);
      const path = join(dir, `${allocator}.raw`);
      const target = await openNodeBackend(path, { writable: true, create: true });
      await convertToRaw(image, target, { requestsInFlight: 2 });
      await target.close();
      expect(sizes.length, allocator).toBeGreaterThan(0);
      expect(sizes.length, `${allocator}: at most in flight + 2 buffers`).toBeLessThanOrEqual(4);
      expect(new Set(sizes), allocator).toEqual(new Set([MiB]));
      outputs.push(new Uint8Array(readFileSync(path)));
    }
    const expected = await image.read(0, 5 * MiB);
    for (const output of outputs) expect(Buffer.compare(output, expected)).toBe(0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await image.close();
  }
});
