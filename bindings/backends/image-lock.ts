// SPDX-License-Identifier: MIT
// One writer per image across tabs and workers of an origin, through the Web Locks API.

import { BackendError, ImageError } from '../base/errors.js';

/** What a writable open does when another holder has the image open for writing. */
export type LockedPolicy = 'fail' | 'read-only';

/** The outcome of acquireImageLock. */
export interface ImageLock {
  /** True when the caller may write (it holds the lock, or wanted no write access: false). */
  readonly writable: boolean;
  /** Releases the lock (if one is held) and resolves once others can take it; idempotent. */
  release(): Promise<void>;
}

/** The part of the Web Locks API used here (navigator.locks). */
interface LockManagerLike {
  request(name: string, options: { mode: 'exclusive'; ifAvailable: true }, callback: (lock: unknown) => Promise<void>): Promise<void>;
}

const NO_LOCK: ImageLock = Object.freeze({ writable: false, release: () => Promise.resolve() });

/** The Web Lock name of the image `id` ("opfs:PATH", "indexeddb:NAME"). */
export const imageLockName = (id: string): string => `qcow2-wasm:image:${id}`;

/**
 * Takes the exclusive Web Lock of the image `id` for a writable open, without waiting.
 *
 * - `wantWrite` false: nothing is locked; resolves { writable: false }.
 * - The lock is free: it is held until release(); resolves { writable: true }.
 * - Another tab or worker of this origin holds it: rejects with IMAGE_LOCKED (an ImageError, as
 *   every one-writer refusal of this library),
 *   or with `whenLocked` 'read-only' resolves { writable: false }.
 *
 * Where the platform has no Web Locks (navigator.locks missing), writers are not excluded here
 * and it resolves { writable: true }; the storage's own exclusivity (OPFS sync access handles)
 * still applies.
 */
export async function acquireImageLock(id: string, wantWrite: boolean, whenLocked: LockedPolicy): Promise<ImageLock> {
  if (whenLocked !== 'fail' && whenLocked !== 'read-only') {
    throw new BackendError('INVALID_ARGUMENT', `open ${id}: whenLocked must be 'fail' or 'read-only', got ${JSON.stringify(whenLocked)}`);
  }
  if (!wantWrite) return NO_LOCK;
  const locks = (globalThis.navigator as { locks?: LockManagerLike } | undefined)?.locks;
  if (locks === undefined) return { writable: true, release: () => Promise.resolve() };
  let letGo!: () => void;
  const held = new Promise<void>((resolve) => { letGo = resolve; });
  let request!: Promise<void>;
  const granted = await new Promise<boolean>((resolve, reject) => {
    request = locks.request(imageLockName(id), { mode: 'exclusive', ifAvailable: true }, async (lock) => {
      resolve(lock !== null);
      if (lock !== null) await held;
    });
    request.catch(reject);
  });
  if (granted) return { writable: true, release: () => { letGo(); return request; } };
  if (whenLocked === 'read-only') return NO_LOCK;
  throw new ImageError('IMAGE_LOCKED', `open ${id}: the image is open for writing in another tab or worker; close it there, or open it read-only`);
}
