// SPDX-License-Identifier: MIT
// The messages between the 'worker' OPFS mode's page side (opfs-worker-host.ts) and its worker
// (opfs-worker-entry.ts). Buffers travel gathered: one per call, transferred.

import type { BackendCapabilities, BackendLimits } from './backend.js';
import type { LockedPolicy } from './image-lock.js';

/** One call from the page. */
export type WorkerBackendRequest =
  | { id: number; op: 'open'; path: string; options: { create: boolean; writable: boolean; whenLocked: LockedPolicy } }
  | { id: number; op: 'getSize' | 'flush' | 'close' }
  | { id: number; op: 'preadv'; position: number; length: number }
  | { id: number; op: 'pwritev'; position: number; data: Uint8Array }
  | { id: number; op: 'truncate'; size: number };

/** What 'open' answers. */
export interface WorkerBackendDescription {
  capabilities: BackendCapabilities;
  limits: BackendLimits;
}

/** The answer to one call; a failure carries the BackendError's code and the platform error's name. */
export type WorkerBackendResponse =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { code?: string; message: string; causeName?: string } };
