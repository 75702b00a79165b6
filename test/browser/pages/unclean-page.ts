// SPDX-License-Identifier: MIT
// The unclean-close test page: exposes `window.qcow2Unclean`, which the Node side (Playwright)
// calls to write the reload workload into a new OPFS qcow2 image and leave it open (no flush, no
// close; in the page with async OPFS, or in a worker with sync access that stays alive), and,
// in a later page, to read it back and to export the file for qemu-img.

import { openOpfsBackend, Qcow2Image } from '../../../bindings/browser.js';
import { readPhase } from './roundtrip.js';
import type { PhaseRequest } from './reload-worker.js';
import { RELOAD_VIRTUAL_BYTES, reloadWorkload } from './workload.js';

/** Images the page keeps open until it is closed. */
const openImages: Qcow2Image[] = [];

async function writeInPage(path: string, seed: number): Promise<string> {
  const backend = await openOpfsBackend(path, { create: true, writable: true, mode: 'async' });
  await backend.truncate!(0);
  const image = await Qcow2Image.create(backend, { virtualSize: RELOAD_VIRTUAL_BYTES });
  openImages.push(image);
  for (const batch of reloadWorkload(seed)) await Promise.all(image.multiwrite(batch));
  return backend.kind;
}

function writeInWorker(path: string, seed: number): Promise<string> {
  const worker = new Worker(new URL('./unclean-worker.ts', import.meta.url), { type: 'module' });
  return new Promise((resolve, reject) => {
    worker.onmessage = (event: MessageEvent<{ ok: boolean; kind?: string; error?: string }>) => {
      if (event.data.ok) resolve(event.data.kind!);
      else reject(new Error(event.data.error));
    };
    worker.onerror = (event) => reject(new Error(`worker failed: ${event.message}`));
    worker.postMessage({ path, seed });
  });
}

/** Reads the image back with sync access, in a worker of the reload test. */
function readInWorker(path: string, seed: number): Promise<unknown> {
  const worker = new Worker(new URL('./reload-worker.ts', import.meta.url), { type: 'module' });
  return new Promise((resolve, reject) => {
    worker.onmessage = (event: MessageEvent<{ ok: boolean; report?: unknown; error?: string }>) => {
      worker.terminate();
      if (event.data.ok) resolve(event.data.report);
      else reject(new Error(event.data.error));
    };
    worker.onerror = (event) => {
      worker.terminate();
      reject(new Error(`worker failed: ${event.message}`));
    };
    worker.postMessage({ phase: 'read', path, seed } satisfies PhaseRequest);
  });
}

/** Base64 of the OPFS file at `path` (relative to the root). */
async function exportFile(path: string): Promise<string> {
  const parts = path.split('/');
  let directory = await navigator.storage.getDirectory();
  for (const name of parts.slice(0, -1)) directory = await directory.getDirectoryHandle(name);
  const bytes = new Uint8Array(await (await (await directory.getFileHandle(parts[parts.length - 1]!)).getFile()).arrayBuffer());
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

(window as unknown as { qcow2Unclean: unknown }).qcow2Unclean = {
  write: (where: 'page' | 'worker', path: string, seed: number) => (where === 'page' ? writeInPage(path, seed) : writeInWorker(path, seed)),
  read: (where: 'page' | 'worker', path: string, seed: number) => (where === 'page' ? readPhase(path, 'async', seed) : readInWorker(path, seed)),
  exportFile,
};
