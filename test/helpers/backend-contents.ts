// SPDX-License-Identifier: MIT
// Reading a test's file after the image on it closed: a backend whose close() leaves it open, and
// the whole contents of a backend.

import type { Backend } from '../../bindings/backends/backend.js';

/**
 * `backend` with close() turned into a no-op, so the test can read the file after the image
 * closed. Everything else passes through, truncate and discard only where `backend` has them.
 */
export function keepOpen(backend: Backend): Backend {
  return {
    kind: backend.kind, capabilities: backend.capabilities, limits: backend.limits,
    getSize: () => backend.getSize(), preadv: (p, b) => backend.preadv(p, b), pwritev: (p, b) => backend.pwritev(p, b),
    flush: () => backend.flush(),
    ...(backend.truncate && { truncate: (size: number) => backend.truncate!(size) }),
    ...(backend.discard && { discard: (position: number, length: number) => backend.discard!(position, length) }),
    close: async () => {},
  };
}

/** All bytes of a backend. */
export async function backendBytes(backend: Backend): Promise<Uint8Array> {
  const out = new Uint8Array(await backend.getSize());
  await backend.preadv(0, [out]);
  return out;
}
