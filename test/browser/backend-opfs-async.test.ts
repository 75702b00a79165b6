// SPDX-License-Identifier: MIT
// The main-thread OPFS backend (mode 'async'): the conformance suite on real OPFS files, and
// what openOpfsBackend refuses on the main thread.

import { afterAll, describe, expect, it } from 'vitest';
import { BackendError, openOpfsBackend, type Backend } from '../../bindings/browser.js';
import { backendConformanceSuite } from '../backend-suite.js';
import { expectBytes } from '../helpers/bytes.js';
import { removeOpfsEntry, uniqueName } from './helpers.js';

const DIRECTORY = uniqueName('qcow2-wasm-test-opfs-async');

/** A fresh OPFS file holding `initial`, opened in `mode` ('auto' picks async on the main thread). */
async function makeOpfsFile(initial: Uint8Array | undefined, writable: boolean, mode: 'async' | 'auto'): Promise<Backend> {
  const path = `${DIRECTORY}/${uniqueName('file')}.bin`;
  const creator = await openOpfsBackend(path, { create: true, writable: true, mode });
  if (initial !== undefined && initial.byteLength > 0) await creator.pwritev(0, [initial]);
  if (writable) return creator;
  await creator.close();
  return openOpfsBackend(path, { writable: false, mode });
}

afterAll(() => removeOpfsEntry(DIRECTORY));

backendConformanceSuite('opfs-async', (initial, options) => makeOpfsFile(initial, options?.writable ?? true, 'async'), {
  kind: 'opfs-async',
  farPosition: 16 * 1024 * 1024, // OPFS files are not sparse: the far write costs real bytes
});

async function rejection(promise: Promise<unknown>): Promise<BackendError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err, 'expected a rejection').toBeInstanceOf(BackendError);
  return err as BackendError;
}

describe('opfs backend on the main thread', () => {
  it("picks the async backend in mode 'auto' and keeps data across close and reopen", async () => {
    const b = await makeOpfsFile(undefined, true, 'auto');
    expect(b.kind).toBe('opfs-async');
    expect(b.capabilities).toEqual({ writable: true, truncate: true, discard: false, durableFlush: false });
    const path = `${DIRECTORY}/reopen.bin`;
    const first = await openOpfsBackend(path, { create: true, writable: true });
    await first.pwritev(5, [Uint8Array.of(1, 2), Uint8Array.of(3)]);
    await first.close();
    const again = await openOpfsBackend(path);
    expect(again.capabilities.writable).toBe(false);
    const got = new Uint8Array(10);
    await again.preadv(0, [got]);
    expectBytes(got, Uint8Array.of(0, 0, 0, 0, 0, 1, 2, 3, 0, 0));
    await again.close();
    await b.close();
  });

  it('refuses what it cannot do with typed errors', async () => {
    expect((await rejection(openOpfsBackend(`${DIRECTORY}/x.bin`, { create: true, writable: true, mode: 'sync-access' }))).code)
      .toBe('BACKEND_NOT_SUPPORTED');
    expect((await rejection(openOpfsBackend(`${DIRECTORY}/x.bin`, { create: true }))).code).toBe('INVALID_ARGUMENT');
    for (const bad of ['', '/', 'a/../b', './b']) {
      expect((await rejection(openOpfsBackend(bad, { create: true, writable: true }))).code, `path ${JSON.stringify(bad)}`).toBe('INVALID_ARGUMENT');
    }
    const missing = await rejection(openOpfsBackend(`${DIRECTORY}/missing.bin`));
    expect(missing.code).toBe('BACKEND_IO_ERROR');
    expect(missing.message).toMatch(/NotFoundError/);
    expect(missing.cause).toBeInstanceOf(DOMException);
  });

  it('commits writes for other readers on flush, and by itself shortly after the last write', async () => {
    const path = `${DIRECTORY}/commit.bin`;
    const writer = await openOpfsBackend(path, { create: true, writable: true, mode: 'async' });
    const readFresh = async (length: number): Promise<Uint8Array> => {
      const reader = await openOpfsBackend(path, { mode: 'async' });
      const got = new Uint8Array(length);
      await reader.preadv(0, [got]);
      await reader.close();
      return got;
    };
    await writer.pwritev(0, [Uint8Array.of(1, 2, 3)]);
    await writer.pwritev(3, [Uint8Array.of(4)]);
    await writer.flush();
    expectBytes(await readFresh(4), Uint8Array.of(1, 2, 3, 4), 'after flush');
    // No flush, no read: the idle commit (100 ms after the last write) makes the write visible.
    await writer.pwritev(4, [Uint8Array.of(5)]);
    let got = await readFresh(5);
    for (let waited = 0; got[4] !== 5 && waited < 20_000; waited += 200) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      got = await readFresh(5);
    }
    expectBytes(got, Uint8Array.of(1, 2, 3, 4, 5), 'after the idle commit');
    await writer.close();
  });

  it('creates the directories of a nested path', async () => {
    const b = await openOpfsBackend(`${DIRECTORY}/a/b/c/disk.bin`, { create: true, writable: true });
    await b.pwritev(0, [Uint8Array.of(7)]);
    await b.close();
    const root = await navigator.storage.getDirectory();
    const dir = await (await (await (await root.getDirectoryHandle(DIRECTORY)).getDirectoryHandle('a')).getDirectoryHandle('b')).getDirectoryHandle('c');
    expect((await (await dir.getFileHandle('disk.bin')).getFile()).size).toBe(1);
  });
});
