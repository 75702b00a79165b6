// SPDX-License-Identifier: MIT
// What the reload and unclean-close test pages share: an OPFS file's bytes for the Node side, and
// one phase of the reload test run in a worker of its own.
import type { PhaseRequest } from './reload-worker.js';

/** Base64 of the OPFS file at `path` ('/'-separated, relative to the root). */
export async function exportOpfsFile(path: string): Promise<string> {
  const parts = path.split('/');
  let directory = await navigator.storage.getDirectory();
  for (const name of parts.slice(0, -1)) directory = await directory.getDirectoryHandle(name);
  const bytes = new Uint8Array(await (await (await directory.getFileHandle(parts[parts.length - 1]!)).getFile()).arrayBuffer());
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/**
 * What a worker's error event says: its message, or (where the engine gives a bare Event, as
 * Firefox does for a module worker whose script fails to load) that the script did not load.
 */
export function workerErrorText(event: Event): string {
  const message = (event as ErrorEvent).message;
  return message ? `worker failed: ${message}` : 'worker failed: its script could not be loaded or evaluated (the engine gave no message)';
}

/** Runs `request` in a new worker of the reload test (OPFS mode 'auto' there) and resolves with its report; the worker ends after it. */
export function phaseInWorker(request: PhaseRequest): Promise<unknown> {
  const worker = new Worker(new URL('./reload-worker.ts', import.meta.url), { type: 'module' });
  return new Promise((resolve, reject) => {
    worker.onmessage = (event: MessageEvent<{ ok: boolean; report?: unknown; error?: string }>) => {
      worker.terminate();
      if (event.data.ok) resolve(event.data.report);
      else reject(new Error(event.data.error));
    };
    worker.onerror = (event) => {
      worker.terminate();
      reject(new Error(workerErrorText(event)));
    };
    worker.postMessage(request);
  });
}
