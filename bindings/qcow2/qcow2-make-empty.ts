// SPDX-License-Identifier: MIT
// Emptying a qcow2 image's active layer (what qemu-img commit does to the overlay afterwards):
// every L2 table goes from the active L1 table in one crash-safe ShadowUpdate, so every guest
// range reads from the backing file again (or as zeros without one). Snapshots keep theirs.

import type { Backend } from '../backends/backend.js';
import { ShadowUpdate, type TableCapacity } from './qcow2-shadow-update.js';

/**
 * Empties the active layer of the qcow2 image in `backend` (writable, not open elsewhere for
 * writing; `capacity` as ShadowUpdate.begin takes it).
 */
export async function emptyActiveLayer(backend: Backend, capacity?: TableCapacity): Promise<void> {
  const update = await ShadowUpdate.begin(backend, capacity);
  for (let i = 0; i < update.activeL1.length; i++) update.dropActiveTable(i);
  await update.commit();
}
