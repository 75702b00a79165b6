// SPDX-License-Identifier: MIT
// A qcow2 base image served over HTTP (read through the Range backend) under a writable qcow2
// overlay kept in OPFS: every byte of the virtual disk is compared with a flat model, before and
// after the overlay is closed and reopened.

import { afterAll, expect, it } from 'vitest';
import { createMemoryBackend, openHttpBackend, openOpfsBackend, Qcow2Image, type Backend, type OpenOptions } from '../../bindings/browser.js';
import { expectBytes } from '../helpers/bytes.js';
import { makePrng } from '../helpers/prng.js';
import { putResource, removeOpfsEntry, uniqueName } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const VIRTUAL_BYTES = 8 * MiB;
const SEED = 0x0b5e;
const DIRECTORY = uniqueName('qcow2-wasm-test-overlay');

afterAll(() => removeOpfsEntry(DIRECTORY));

/** The bytes of a qcow2 base image written through the library, and the flat disk it holds. */
async function makeBase(): Promise<{ image: Uint8Array; model: Uint8Array }> {
  const prng = makePrng(SEED);
  const model = new Uint8Array(VIRTUAL_BYTES);
  const backend = createMemoryBackend();
  const base = await Qcow2Image.create(backend, { virtualSize: VIRTUAL_BYTES, clusterSize: 64 * KiB });
  for (let i = 0; i < 40; i++) {
    const offset = prng.int(VIRTUAL_BYTES - 200 * KiB);
    const data = prng.fill(new Uint8Array(1 + prng.int(150 * KiB)));
    await base.write(offset, data);
    model.set(data, offset);
  }
  await base.flush();
  const image = new Uint8Array(await backend.getSize());
  await backend.preadv(0, [image]);
  await base.close();
  return { image, model };
}

it(`reads a qcow2 over HTTP under an OPFS overlay, byte for byte (seed ${SEED})`, async () => {
  const { image, model } = await makeBase();
  const baseUrl = await putResource(uniqueName('base.qcow2'), image);
  const requests: string[] = [];
  const countingFetch: typeof fetch = (input, init) => {
    const method = init?.method ?? 'GET';
    if (method !== 'HEAD') requests.push(new Headers(init?.headers).get('Range') ?? `${method} without Range`);
    return fetch(input, init);
  };
  const backings: Backend[] = [];
  const options: OpenOptions = {
    openBacking: async (name, format) => {
      expect(name).toBe(baseUrl.href);
      expect(format).toBe('qcow2');
      const backend = await openHttpBackend(name, { fetch: countingFetch });
      backings.push(backend);
      return backend;
    },
  };
  const overlayPath = `${DIRECTORY}/overlay.qcow2`;
  const overlay = await Qcow2Image.create(await openOpfsBackend(overlayPath, { create: true, writable: true }), {
    ...options, virtualSize: VIRTUAL_BYTES, backingFile: baseUrl.href, backingFormat: 'qcow2',
  });

  const whole = async (disk: Qcow2Image, what: string): Promise<void> => {
    expectBytes(await disk.read(0, VIRTUAL_BYTES), model, what);
  };
  await whole(overlay, 'the base through the fresh overlay');
  expect(requests.length, 'the base was read over HTTP').toBeGreaterThan(0);
  expect(requests.every((r) => r.startsWith('bytes=')), `every GET was a Range request: ${requests.join(', ')}`).toBe(true);

  // Sequential and scattered writes into the overlay, partly over the base's data.
  const prng = makePrng(SEED + 1);
  const batch = [];
  for (let i = 0; i < 32; i++) batch.push({ offset: 3 * MiB + 512 + i * 4 * KiB, data: prng.fill(new Uint8Array(4 * KiB)) });
  for (let i = 0; i < 16; i++) {
    batch.push({ offset: prng.int(VIRTUAL_BYTES - 70 * KiB), data: prng.fill(new Uint8Array(1 + prng.int(70 * KiB))) });
  }
  await Promise.all(overlay.multiwrite(batch));
  for (const { offset, data } of batch) model.set(data, offset);
  await whole(overlay, 'after writing the overlay');
  await overlay.close();

  const reopened = await Qcow2Image.open(await openOpfsBackend(overlayPath, { writable: true }), options);
  await whole(reopened, 'the reopened overlay');
  await reopened.close();
  const baseAlone = await Qcow2Image.open(await openHttpBackend(baseUrl), { readOnly: true });
  const unchanged = await makeBase(); // the same seed: the base's own model, untouched by the overlay
  expectBytes(await baseAlone.read(0, VIRTUAL_BYTES), unchanged.model, 'the base itself is unchanged');
  await baseAlone.close();
  for (const backing of backings) await backing.close();
});
