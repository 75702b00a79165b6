// SPDX-License-Identifier: MIT
// Helpers of the browser tests: resources on the test server's Range store (range-server.ts),
// split images there, unique names, OPFS clean-up, and the engine the run is in.

import { server } from 'vitest/browser';
import { createMemoryBackend, writeSplitImage } from '../../bindings/browser.js';

let counter = 0;
const RUN_ID = Math.floor(Math.random() * 2 ** 32).toString(36);

/** A name no other call in this page returns: `prefix`, a per-page random part and a counter. */
export function uniqueName(prefix: string): string {
  counter++;
  return `${prefix}-${RUN_ID}-${counter}`;
}

/** Stores `bytes` as the Range-store resource `name` and returns its URL (same origin). */
export async function putResource(name: string, bytes: Uint8Array): Promise<URL> {
  const url = new URL(`/__range/${encodeURIComponent(name)}`, location.origin);
  const response = await fetch(url, { method: 'PUT', body: bytes as Uint8Array<ArrayBuffer> });
  if (response.status !== 204) throw new Error(`PUT ${url}: ${response.status}`);
  return url;
}

/** Removes `name` (a file or a whole directory) from the OPFS root; a missing entry is fine. */
export async function removeOpfsEntry(name: string): Promise<void> {
  const root = await navigator.storage.getDirectory();
  try {
    await root.removeEntry(name, { recursive: true });
  } catch (err) {
    if (!(err instanceof DOMException && err.name === 'NotFoundError')) throw err;
  }
}

/** The engine this run is in: 'chromium', 'firefox' or 'webkit' (the test project's browser). */
export const ENGINE = server.browser;

/**
 * WebKitGTK's OPFS storage has no sync access handles (createSyncAccessHandle rejects with
 * NotSupportedError); the tests expect the typed refusal there instead of the worker backends.
 */
export const SYNC_ACCESS_UNSUPPORTED = ENGINE === 'webkit';

/** Stores `bytes` as a split image of `partBytes` parts; `edit` may change the files first. Returns the manifest URL. */
export async function putSplitImage(bytes: Uint8Array, partBytes: number, edit?: (files: Map<string, Uint8Array>) => void): Promise<URL> {
  const files = new Map<string, Uint8Array>();
  await writeSplitImage(createMemoryBackend(bytes), async (name, data) => { files.set(name, data); }, { partBytes });
  edit?.(files);
  const directory = uniqueName('split');
  for (const [name, data] of files) await putResource(`${directory}/${name}`, data);
  // The store names resources by their decoded path, so the parts resolve next to the manifest.
  return new URL(`/__range/${directory}/manifest.json`, location.origin);
}
