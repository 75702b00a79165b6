// SPDX-License-Identifier: MIT
// The reload test page: exposes `window.qcow2Reload`, which the Node side (Playwright, or the
// Firefox and WebKit drivers) calls to run a phase in the page itself (async OPFS, IndexedDB) or
// in a worker (sync access), to export an OPFS file's bytes for qemu-img, and to hold and try
// images for the two-tab tests (tabs.ts).

import { readPhase, writePhase } from './roundtrip.js';
import type { PhaseRequest } from './reload-worker.js';
import { tabs } from './tabs.js';

function inWorker(request: PhaseRequest): Promise<unknown> {
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
    worker.postMessage(request);
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

(window as unknown as { qcow2Reload: unknown }).qcow2Reload = {
  run(phase: 'write' | 'read', where: 'page' | 'worker' | 'indexeddb', path: string, seed: number): Promise<unknown> {
    if (where === 'worker') return inWorker({ phase, path, seed });
    const store = where === 'page' ? 'async' : 'indexeddb';
    return phase === 'write' ? writePhase(path, store, seed) : readPhase(path, store, seed);
  },
  exportFile,
  ...tabs,
};
