// SPDX-License-Identifier: MIT
// The worker of the reload test pages: runs one phase with OPFS mode 'auto' (sync access where
// the engine has working sync access handles; WebKitGTK's worker gets the async backend).
import { readPhase, writePhase } from './roundtrip.js';

/** A phase request from page-tools.ts. */
export interface PhaseRequest {
  phase: 'write' | 'read';
  path: string;
  seed: number;
}

const scope = self as unknown as { onmessage: ((event: MessageEvent<PhaseRequest>) => void) | null; postMessage(message: unknown): void };
scope.onmessage = (event) => {
  const { phase, path, seed } = event.data;
  (phase === 'write' ? writePhase(path, 'auto', seed) : readPhase(path, 'auto', seed)).then(
    (report) => scope.postMessage({ ok: true, report }),
    (err: unknown) => scope.postMessage({ ok: false, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) }),
  );
};
