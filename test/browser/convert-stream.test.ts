// SPDX-License-Identifier: MIT
// convertToQcow2Stream in the browser: a qcow2 base served over HTTP under an overlay in memory,
// exported as qcow2 into a WritableStream that only appends; the streamed file checks clean with
// the library's checker and reads back, byte for byte, what the overlay reads. (qemu-img checks
// the same writer's output in the Node test and in bench:export-memory's page run.)

import { expect, it } from 'vitest';
import { Qcow2Image, checkQcow2, convertToQcow2Stream, createMemoryBackend, openHttpBackend } from '../../bindings/browser.js';
import { makePrng } from '../helpers/prng.js';
import { putResource, uniqueName } from './helpers.js';

const MiB = 1 << 20;

it('streams an HTTP base under an overlay as a qcow2 image that checks clean and reads the same', async () => {
  const baseBackend = createMemoryBackend();
  const base = await Qcow2Image.create(baseBackend, { virtualSize: 24 * MiB });
  const prng = makePrng(77);
  await base.write(0, prng.fill(new Uint8Array(3 * MiB)));
  await base.write(17 * MiB, prng.fill(new Uint8Array(MiB + 4096)));
  await base.flush();
  const baseFile = new Uint8Array(await baseBackend.getSize());
  await baseBackend.preadv(0, [baseFile]);
  await base.close();
  const url = await putResource(uniqueName('stream-base'), baseFile);
  const overlay = await Qcow2Image.create(createMemoryBackend(), {
    virtualSize: 24 * MiB, backingFile: 'base.qcow2', backingFormat: 'qcow2', openBacking: () => openHttpBackend(url),
  });
  await overlay.write(MiB + 512, prng.fill(new Uint8Array(70_000)));
  await overlay.writeZeroes(2 * MiB, 64 * 1024);
  await overlay.write(20 * MiB, prng.fill(new Uint8Array(MiB)));

  const chunks: Uint8Array[] = [];
  let announced = 0;
  const stream = new WritableStream<Uint8Array>({ write(chunk: unknown) {
    if (!(chunk instanceof Uint8Array)) throw new TypeError('this stream only appends bytes');
    chunks.push(chunk);
  } });
  await convertToQcow2Stream(overlay, stream, { onFileBytes: (bytes) => { announced = bytes; } });
  const file = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  chunks.reduce((at, c) => { file.set(c, at); return at + c.byteLength; }, 0);
  expect(file.byteLength).toBe(announced);

  const report = await checkQcow2(createMemoryBackend(file));
  expect({ corruptions: report.corruptions, leaks: report.leaks, checkErrors: report.checkErrors }).toEqual({ corruptions: 0, leaks: 0, checkErrors: 0 });
  const exported = await Qcow2Image.open(createMemoryBackend(file), { readOnly: true });
  for (let offset = 0; offset < 24 * MiB; offset += MiB) {
    const [ours, theirs] = [await exported.read(offset, MiB), await overlay.read(offset, MiB)];
    expect(ours.every((byte, i) => byte === theirs[i]), `guest MiB ${offset / MiB}`).toBe(true);
  }
  await exported.close();
  await overlay.close();
});
