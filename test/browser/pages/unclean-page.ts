// SPDX-License-Identifier: MIT
// The unclean-close test page: exposes `window.qcow2Unclean`, which the Node side (each engine's
// driver) calls to write the reload workload into a new OPFS qcow2 image and leave it open (no
// flush, no close; in the page with async OPFS, or in a worker, OPFS mode 'auto', that stays
// alive), and,
// in a later page, to read it back and to export the file for qemu-img.

import { openOpfsBackend, Qcow2Image } from '../../../bindings/browser.js';
import { readPhase } from './roundtrip.js';
import { exportOpfsFile, phaseInWorker, workerErrorText } from './page-tools.js';
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
    worker.onerror = (event) => reject(new Error(workerErrorText(event)));
    worker.postMessage({ path, seed });
  });
}

(window as unknown as { qcow2Unclean: unknown }).qcow2Unclean = {
  write: (where: 'page' | 'worker', path: string, seed: number) => (where === 'page' ? writeInPage(path, seed) : writeInWorker(path, seed)),
  read: (where: 'page' | 'worker', path: string, seed: number) => (where === 'page' ? readPhase(path, 'async', seed) : phaseInWorker({ phase: 'read', path, seed })),
  exportFile: exportOpfsFile,
};
