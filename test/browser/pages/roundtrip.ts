// SPDX-License-Identifier: MIT
// The two halves of the reload test, run in the page (async OPFS, IndexedDB) or in a worker (OPFS
// mode 'auto'): create a qcow2 image in OPFS and write the workload with multiwrite; later, in a
// new page, reopen it and compare every byte with the model.

import { openIndexedDbBackend, openOpfsBackend, Qcow2Image, type Backend } from '../../../bindings/browser.js';
import { RELOAD_VIRTUAL_BYTES, reloadModel, reloadWorkload } from './workload.js';

/** What the write phase reports. */
export interface WriteReport {
  kind: string;
  guestWriteRequests: number;
  hostWriteCalls: number;
}

/** What the read phase reports: the backend kind and the first differing byte (-1: none). */
export interface ReadReport {
  kind: string;
  firstMismatch: number;
}

/** Where an image of the test lives: OPFS in one of its modes, or IndexedDB. */
export type Store = 'auto' | 'async' | 'indexeddb';

function openStore(path: string, store: Store, writable: boolean): Promise<Backend> {
  if (store === 'indexeddb') return openIndexedDbBackend(path, { create: writable, writable });
  return openOpfsBackend(path, writable ? { create: true, writable: true, mode: store } : { mode: store });
}

/** Creates `path` as a fresh qcow2 image and writes the workload of `seed` with multiwrite. */
export async function writePhase(path: string, mode: Store, seed: number): Promise<WriteReport> {
  const backend = await openStore(path, mode, true);
  await backend.truncate!(0);
  const image = await Qcow2Image.create(backend, { virtualSize: RELOAD_VIRTUAL_BYTES });
  for (const batch of reloadWorkload(seed)) await Promise.all(image.multiwrite(batch));
  await image.flush();
  const stats = image.stats();
  await image.close();
  return { kind: backend.kind, guestWriteRequests: stats.guestWriteRequests, hostWriteCalls: stats.hostWriteCalls };
}

/** Reopens `path` read-only and compares the whole virtual disk with the model of `seed`. */
export async function readPhase(path: string, mode: Store, seed: number): Promise<ReadReport> {
  const backend = await openStore(path, mode, false);
  const image = await Qcow2Image.open(backend, { readOnly: true });
  const got = await image.read(0, image.virtualSize);
  await image.close();
  const model = reloadModel(seed);
  let firstMismatch = got.length === model.length ? -1 : Math.min(got.length, model.length);
  for (let i = 0; i < Math.min(got.length, model.length); i++) {
    if (got[i] !== model[i]) {
      firstMismatch = i;
      break;
    }
  }
  return { kind: backend.kind, firstMismatch };
}
