// SPDX-License-Identifier: MIT
// A storage quota error in each engine: a qcow2 overlay (over a base served as split parts) kept
// in IndexedDB or OPFS hits QuotaExceededError mid-write. The write must fail with a typed error,
// and the overlay must open again afterwards (as after a reload), hold what was flushed before,
// and check without corruption. The quota error is injected at the platform call
// (pages/quota-tools.ts); everything above it is the real stack. test/browser-engines.test.ts
// reopens such an overlay after a real reload.

import { afterAll, expect, it } from 'vitest';
import {
  checkQcow2, createMemoryBackend, deleteIndexedDbImage, openIndexedDbBackend, openOpfsBackend, openSplitBackend,
  Qcow2Image, Qcow2WasmError, type Backend, type OpenOptions,
} from '../../bindings/browser.js';
import { expectBytes } from '../helpers/bytes.js';
import { makePrng } from '../helpers/prng.js';
import { putSplitImage, removeOpfsEntry, uniqueName } from './helpers.js';
import { causedBy, injectQuotaErrorInto } from './pages/quota-tools.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const VIRTUAL_BYTES = 4 * MiB;
const DIRECTORY = uniqueName('qcow2-wasm-test-quota');
const idbImages: string[] = [];

afterAll(async () => {
  await removeOpfsEntry(DIRECTORY);
  for (const name of idbImages) await deleteIndexedDbImage(name);
});

const stores = {
  indexeddb: {
    open: (name: string, create: boolean) => openIndexedDbBackend(name, { create, writable: true }),
    inject: () => injectQuotaErrorInto('indexeddb'),
  },
  opfs: {
    open: (name: string, create: boolean) => openOpfsBackend(`${DIRECTORY}/${name}`, { create, writable: true, mode: 'async' }),
    inject: () => injectQuotaErrorInto('opfs'),
  },
} as const;

for (const [storeName, store] of Object.entries(stores)) {
  it(`${storeName}: a quota error fails the write with a typed error; the overlay reopens intact`, async () => {
    const prng = makePrng(0x9707a);
    const baseBytes = createMemoryBackend();
    const base = await Qcow2Image.create(baseBytes, { virtualSize: VIRTUAL_BYTES });
    const baseData = prng.fill(new Uint8Array(256 * KiB));
    await base.write(2 * MiB, baseData);
    await base.flush();
    const file = new Uint8Array(await baseBytes.getSize());
    await baseBytes.preadv(0, [file]);
    await base.close();
    const manifestUrl = await putSplitImage(file, 64 * KiB);
    const options: OpenOptions = { openBacking: (name) => openSplitBackend(name) };

    const name = uniqueName('overlay');
    if (storeName === 'indexeddb') idbImages.push(name);
    const overlay = await Qcow2Image.create(await store.open(name, true), {
      ...options, virtualSize: VIRTUAL_BYTES, backingFile: manifestUrl.href, backingFormat: 'qcow2',
    });
    const flushed = prng.fill(new Uint8Array(128 * KiB));
    await overlay.write(0, flushed);
    await overlay.flush();

    const restore = store.inject();
    let failure: unknown;
    try {
      failure = await overlay.write(MiB, prng.fill(new Uint8Array(192 * KiB))).then(() => undefined, (e: unknown) => e);
      if (failure === undefined) failure = await overlay.flush().then(() => undefined, (e: unknown) => e);
    } finally {
      restore();
    }
    expect(failure, 'the write or the flush after it failed').toBeInstanceOf(Qcow2WasmError);
    expect(causedBy(failure, 'QuotaExceededError'), `caused by QuotaExceededError: ${String(failure)}`).toBe(true);
    const closing = await overlay.close().then(() => undefined, (e: unknown) => e);
    if (closing !== undefined) expect(closing).toBeInstanceOf(Qcow2WasmError);

    // As after a reload: open the overlay again from storage.
    const backend: Backend = await store.open(name, false);
    const report = await checkQcow2(backend);
    expect(report.corruptions, 'corruptions after the quota error').toBe(0);
    const reopened = await Qcow2Image.open(backend, options);
    expectBytes(await reopened.read(0, flushed.byteLength), flushed, 'flushed before the quota error');
    expectBytes(await reopened.read(2 * MiB, baseData.byteLength), baseData, 'the base through the overlay');
    await reopened.close();
  });
}
