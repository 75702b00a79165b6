// SPDX-License-Identifier: MIT
// The page half of the two-tab tests: one tab holds an image open for writing, the other tries
// to open it; each answer is plain data for the Node side.

import { openIndexedDbBackend, openOpfsBackend, type Backend, type LockedPolicy } from '../../../bindings/browser.js';

/** Where the image lives. */
export type TabStore = 'opfs' | 'indexeddb';

/** What tryOpen answers: the open backend's description, or the error's code. */
export type TryOpenReport = { kind: string; writable: boolean } | { code: string };

const held: Backend[] = [];

const open = (store: TabStore, name: string, create: boolean, whenLocked: LockedPolicy): Promise<Backend> =>
  store === 'indexeddb'
    ? openIndexedDbBackend(name, { create, writable: true, whenLocked })
    : openOpfsBackend(name, { create, writable: true, whenLocked });

export const tabs = {
  /** Opens (creating) `name` for writing, writes a byte, flushes, and keeps it open. */
  async hold(store: TabStore, name: string): Promise<TryOpenReport> {
    const backend = await open(store, name, true, 'fail');
    await backend.pwritev(0, [Uint8Array.of(0x42)]);
    await backend.flush();
    held.push(backend);
    return { kind: backend.kind, writable: backend.capabilities.writable };
  },
  /** Opens `name` for writing with `whenLocked`, reads byte 0, closes; or answers the error's code. */
  async tryOpen(store: TabStore, name: string, whenLocked: LockedPolicy): Promise<TryOpenReport & { firstByte?: number }> {
    try {
      const backend = await open(store, name, false, whenLocked);
      const first = new Uint8Array(1);
      await backend.preadv(0, [first]);
      await backend.close();
      return { kind: backend.kind, writable: backend.capabilities.writable, firstByte: first[0] };
    } catch (err) {
      return { code: (err as { code?: string }).code ?? String(err) };
    }
  },
  /** Closes every image this tab holds. */
  async release(): Promise<void> {
    await Promise.all(held.splice(0).map((backend) => backend.close()));
  },
};
