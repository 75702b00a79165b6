// SPDX-License-Identifier: MIT
// The platform's convert chunk size: convert reads in chunks of the size set (progress moves by
// one chunk at a time), the result is the same whatever the size, and bad sizes are refused.

import { afterEach, expect, it } from 'vitest';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { convertToRawStream } from '../bindings/tools/convert.js';
import { convertChunkBytes, setConvertChunkBytes } from '../bindings/tools/convert-chunk-size.js';

const MiB = 1 << 20;
const initial = convertChunkBytes();
afterEach(() => setConvertChunkBytes(initial));

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
