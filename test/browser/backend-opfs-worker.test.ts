// SPDX-License-Identifier: MIT
// OPFS from the page through the library's own worker (mode 'worker', kind "opfs-worker"): the
// conformance suite, 'auto' choosing it where createWritable is missing, and locking.

import { afterAll, describe, expect, it } from 'vitest';
import { openOpfsBackend, type Backend } from '../../bindings/browser.js';
import { backendConformanceSuite } from '../backend-suite.js';
import { expectBytes } from '../helpers/bytes.js';
import { removeOpfsEntry, SYNC_ACCESS_UNSUPPORTED, uniqueName } from './helpers.js';

const DIRECTORY = uniqueName('qcow2-wasm-test-opfs-worker');

afterAll(() => removeOpfsEntry(DIRECTORY));

/** A fresh OPFS file holding `initial`, opened through the worker. */
async function makeFile(initial: Uint8Array | undefined, writable: boolean): Promise<Backend> {
  const path = `${DIRECTORY}/${uniqueName('file')}.bin`;
  const creator = await openOpfsBackend(path, { create: true, writable: true, mode: 'worker' });
  if (initial !== undefined && initial.byteLength > 0) await creator.pwritev(0, [initial]);
  if (writable) return creator;
  await creator.close();
  return openOpfsBackend(path, { mode: 'worker' });
}

if (SYNC_ACCESS_UNSUPPORTED) {
  it('rejects the worker mode with BACKEND_NOT_SUPPORTED where the engine has no sync access handles, leaving the file writable', async () => {
    const path = `${DIRECTORY}/x.bin`;
    const err = await openOpfsBackend(path, { create: true, writable: true, mode: 'worker' }).then(() => undefined, (e: unknown) => e);
    expect((err as { code?: string }).code).toBe('BACKEND_NOT_SUPPORTED');
    const page = await openOpfsBackend(path, { create: true, writable: true });
    expect(page.kind).toBe('opfs-async');
    await page.pwritev(0, [Uint8Array.of(4, 5)]);
    await page.close();
    const reader = await openOpfsBackend(path);
    const got = new Uint8Array(2);
    await reader.preadv(0, [got]);
    expectBytes(got, Uint8Array.of(4, 5));
    await reader.close();
  });
} else {
  backendConformanceSuite('opfs-worker', (initial, options) => makeFile(initial, options?.writable ?? true), {
    kind: 'opfs-worker',
    farPosition: 16 * 1024 * 1024,
  });

  describe('opfs worker mode', () => {
    it("is what 'auto' picks on a page without createWritable, and holds the image lock", async () => {
      const prototype = FileSystemFileHandle.prototype as unknown as Record<string, unknown>;
      const createWritable = prototype.createWritable;
      delete prototype.createWritable;
      let backend: Backend;
      try {
        backend = await openOpfsBackend(`${DIRECTORY}/auto.bin`, { create: true, writable: true });
      } finally {
        prototype.createWritable = createWritable;
      }
      expect(backend.kind).toBe('opfs-worker');
      expect(backend.capabilities).toEqual({ writable: true, truncate: true, discard: false, durableFlush: true });
      await backend.pwritev(3, [Uint8Array.of(1, 2)]);
      const locked = await openOpfsBackend(`${DIRECTORY}/auto.bin`, { writable: true, mode: 'async' }).then(() => undefined, (e: unknown) => e);
      expect((locked as { code?: string }).code).toBe('IMAGE_LOCKED');
      await backend.close();
      const reader = await openOpfsBackend(`${DIRECTORY}/auto.bin`, { mode: 'async' });
      const got = new Uint8Array(5);
      await reader.preadv(0, [got]);
      expectBytes(got, Uint8Array.of(0, 0, 0, 1, 2));
      await reader.close();
    });
  });
}
