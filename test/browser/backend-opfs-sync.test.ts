// SPDX-License-Identifier: MIT
// The worker OPFS backend (mode 'sync-access', FileSystemSyncAccessHandle). Sync access handles
// exist only in dedicated workers and the test runner runs on the page, so the real backend runs
// in opfs-worker.ts and the suite drives it through worker-backend.ts, which forwards each call
// unchanged (by copy) and copies results back.

import { afterAll, describe, expect, it } from 'vitest';
import type { Backend } from '../../bindings/browser.js';
import { backendConformanceSuite } from '../backend-suite.js';
import { expectBytes } from '../helpers/bytes.js';
import { removeOpfsEntry, SYNC_ACCESS_UNSUPPORTED, uniqueName } from './helpers.js';
import { OpfsWorker } from './worker-backend.js';

const DIRECTORY = uniqueName('qcow2-wasm-test-opfs-sync');
const worker = new OpfsWorker();

afterAll(async () => {
  worker.terminate();
  await removeOpfsEntry(DIRECTORY);
});

/** A fresh OPFS file holding `initial`, opened in the worker in sync-access mode. */
async function makeSyncFile(initial: Uint8Array | undefined, writable: boolean): Promise<Backend> {
  const path = `${DIRECTORY}/${uniqueName('file')}.bin`;
  const options = { create: true, writable: true, mode: 'sync-access' } as const;
  if (writable) return worker.open(path, options, initial ?? new Uint8Array(0));
  await (await worker.open(path, options, initial ?? new Uint8Array(0))).close();
  return worker.open(path, { writable: false, mode: 'sync-access' });
}

if (SYNC_ACCESS_UNSUPPORTED) {
  it('refuses sync access with BACKEND_NOT_SUPPORTED where the engine has none, leaving the file writable: auto falls back to async', async () => {
    const path = `${DIRECTORY}/unsupported.bin`;
    const err = await worker.open(path, { create: true, writable: true, mode: 'sync-access' }).then(() => undefined, (e: unknown) => e);
    expect((err as { code?: string }).code).toBe('BACKEND_NOT_SUPPORTED');
    expect(String((err as Error).message)).toMatch(/NotSupportedError/);
    // The refusal must not leave the engine's lock on the file: the same file opens and takes writes.
    const auto = await worker.open(path, { writable: true }, Uint8Array.of(7, 8, 9));
    expect(auto.kind).toBe('opfs-async');
    await auto.pwritev(1, [Uint8Array.of(0x55)]);
    await auto.close();
    const reader = await worker.open(path, { writable: false });
    const got = new Uint8Array(3);
    await reader.preadv(0, [got]);
    expectBytes(got, Uint8Array.of(7, 0x55, 9));
    await reader.close();
  });
} else {
  declareSyncTests();
}

function declareSyncTests(): void {
backendConformanceSuite('opfs-sync (in a worker)', (initial, options) => makeSyncFile(initial, options?.writable ?? true), {
  kind: 'opfs-sync',
  farPosition: 64 * 1024 * 1024, // OPFS files are not sparse: the far write costs real bytes
});

describe('opfs backend in a worker', () => {
  it("describes itself as documented, and 'auto' picks sync access", async () => {
    const b = await worker.open(`${DIRECTORY}/auto.bin`, { create: true, writable: true });
    expect(b.kind).toBe('opfs-sync');
    expect(b.capabilities).toEqual({ writable: true, truncate: true, discard: false, durableFlush: true });
    expect(b.limits).toEqual({ maxIov: 1024, maxTransfer: 4 * 1024 * 1024 });
    await b.close();
  });

  it('holds the image lock while open: a second writable open gets IMAGE_LOCKED, and works after close', async () => {
    const path = `${DIRECTORY}/locked.bin`;
    const first = await worker.open(path, { create: true, writable: true, mode: 'sync-access' });
    await first.pwritev(0, [Uint8Array.of(1, 2, 3)]);
    const err = await worker.open(path, { writable: true, mode: 'sync-access' }).then(() => undefined, (e: unknown) => e);
    expect((err as { code?: string }).code).toBe('IMAGE_LOCKED');
    await first.close();
    const second = await worker.open(path, { writable: true, mode: 'sync-access' });
    const got = new Uint8Array(3);
    await second.preadv(0, [got]);
    expectBytes(got, Uint8Array.of(1, 2, 3));
    await second.close();
  });
});
}
