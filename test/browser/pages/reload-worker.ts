// SPDX-License-Identifier: MIT
// The worker of the reload test page: runs one phase with the sync-access OPFS backend.

import { readPhase, writePhase } from './roundtrip.js';

/** A phase request from reload-page.ts. */
export interface PhaseRequest {
  phase: 'write' | 'read';
  path: string;
  seed: number;
}

const scope = self as unknown as { onmessage: ((event: MessageEvent<PhaseRequest>) => void) | null; postMessage(message: unknown): void };
scope.onmessage = (event) => {
  const { phase, path, seed } = event.data;
  (phase === 'write' ? writePhase(path, 'sync-access', seed) : readPhase(path, 'sync-access', seed)).then(
    (report) => scope.postMessage({ ok: true, report }),
    (err: unknown) => scope.postMessage({ ok: false, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) }),
  );
};
