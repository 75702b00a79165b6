// SPDX-License-Identifier: MIT
// The IndexedDB backend: the conformance suite with small and default record sizes, persistence
// across close and reopen, batches as transactions, the image lock, and its typed refusals.

import { afterAll, describe, expect, it } from 'vitest';
import { BackendError, ImageError, deleteIndexedDbImage, openIndexedDbBackend, type Backend } from '../../bindings/browser.js';
import { backendConformanceSuite } from '../backend-suite.js';
import { expectBytes } from '../helpers/bytes.js';
import { uniqueName } from './helpers.js';

const made: string[] = [];

/** A fresh image holding `initial`, writable or reopened read-only. */
async function makeImage(initial: Uint8Array | undefined, writable: boolean, recordBytes?: number): Promise<Backend> {
  const name = uniqueName('idb');
  made.push(name);
  const creator = await openIndexedDbBackend(name, { create: true, writable: true, recordBytes });
  if (initial !== undefined && initial.byteLength > 0) await creator.pwritev(0, [initial]);
  if (writable) return creator;
  await creator.close();
  return openIndexedDbBackend(name);
}

afterAll(async () => {
  for (const name of made) await deleteIndexedDbImage(name);
});

backendConformanceSuite('indexeddb (4 KiB records)', (initial, options) => makeImage(initial, options?.writable ?? true, 4096), {
  kind: 'indexeddb',
  farPosition: 16 * 1024 * 1024,
});
backendConformanceSuite('indexeddb (default records)', (initial, options) => makeImage(initial, options?.writable ?? true), {
  kind: 'indexeddb',
  farPosition: 16 * 1024 * 1024,
  seed: 7,
});

async function rejection(promise: Promise<unknown>): Promise<BackendError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err, 'expected a rejection').toBeInstanceOf(BackendError);
  return err as BackendError;
}

describe('indexeddb backend', () => {
  it('keeps data, size and record size across close and reopen; describes itself', async () => {
    const name = uniqueName('idb-reopen');
    made.push(name);
    const first = await openIndexedDbBackend(name, { create: true, writable: true, recordBytes: 8192 });
    expect(first.capabilities).toEqual({ writable: true, truncate: true, discard: false, durableFlush: true });
    await Promise.all([first.pwritev(8190, [Uint8Array.of(1, 2, 3, 4)]), first.pwritev(20_000, [Uint8Array.of(9)])]);
    await first.flush();
    await first.close();
    const again = await openIndexedDbBackend(name, { writable: true, recordBytes: 65536 });
    expect(await again.getSize()).toBe(20_001);
    const got = new Uint8Array(8);
    await again.preadv(8188, [got]);
    expectBytes(got, Uint8Array.of(0, 0, 1, 2, 3, 4, 0, 0));
    await again.truncate!(8191);
    await again.pwritev(8200, [Uint8Array.of(7)]);
    const tail = new Uint8Array(12);
    await again.preadv(8189, [tail]);
    expectBytes(tail, Uint8Array.of(0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7), 'bytes cut by truncate read as zeros after growing again');
    await again.close();
  });

  it('keeps the size and the bytes when a batch is sent while an earlier, growing one is still pending', async () => {
    const b = await makeImage(undefined, true, 4096);
    const first = b.pwritev(100_000, [Uint8Array.of(1, 2, 3)]);
    // Microtasks only: the first batch's transaction is sent but cannot have committed yet.
    for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => queueMicrotask(resolve));
    const second = b.pwritev(100_001, [Uint8Array.of(9)]);
    const third = b.pwritev(10, [Uint8Array.of(7)]);
    await Promise.all([first, second, third]);
    expect(await b.getSize()).toBe(100_003);
    const got = new Uint8Array(3);
    await b.preadv(100_000, [got]);
    expectBytes(got, Uint8Array.of(1, 9, 3));
    await b.preadv(9, [got]);
    expectBytes(got, Uint8Array.of(0, 7, 0));
    await b.close();
  });

  it('refuses what it cannot do with typed errors', async () => {
    expect((await rejection(openIndexedDbBackend(uniqueName('idb-missing')))).code).toBe('BACKEND_IO_ERROR');
    expect((await rejection(openIndexedDbBackend('x', { create: true }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(openIndexedDbBackend('x', { create: true, writable: true, recordBytes: 1000 }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(openIndexedDbBackend('', { create: true, writable: true }))).code).toBe('INVALID_ARGUMENT');
  });

  it('lets one writer hold an image: a second writable open gets IMAGE_LOCKED, or read-only when asked', async () => {
    const name = uniqueName('idb-lock');
    made.push(name);
    const writer = await openIndexedDbBackend(name, { create: true, writable: true });
    await writer.pwritev(0, [Uint8Array.of(5, 6)]);
    await writer.flush();
    const locked = await openIndexedDbBackend(name, { writable: true }).then(() => undefined, (e: unknown) => e);
    expect(locked).toBeInstanceOf(ImageError);
    expect((locked as ImageError).code).toBe('IMAGE_LOCKED');
    const reader = await openIndexedDbBackend(name, { writable: true, whenLocked: 'read-only' });
    expect(reader.capabilities.writable).toBe(false);
    expect((await rejection(reader.pwritev(0, [Uint8Array.of(1)]))).code).toBe('BACKEND_READ_ONLY');
    const got = new Uint8Array(2);
    await reader.preadv(0, [got]);
    expectBytes(got, Uint8Array.of(5, 6));
    await reader.close();
    await writer.close();
    const next = await openIndexedDbBackend(name, { writable: true });
    expect(next.capabilities.writable).toBe(true);
    await next.close();
  });
});
