// SPDX-License-Identifier: MIT
// Changing a qcow2 image's virtual size (qemu-img resize), crash-safely as one ShadowUpdate:
// growing makes the L1 table as large as the new size needs (written anew when it grows);
// shrinking (only when asked to) drops the L2 tables and entries past the new end, freeing what
// only they referenced, and moves a cut last cluster to a copy zeroed past the new end, so a
// later grow reads zeros there (qemu-img leaves the old bytes).

import type { Backend } from '../backends/backend.js';
import { ImageError } from '../base/errors.js';
import { ShadowUpdate } from '../qcow2/qcow2-shadow-update.js';
import { inflateCluster } from '../qcow2/decompress.js';

/** Options of resizeQcow2. */
export interface ResizeOptions {
  /** Allow a smaller size (data past the new end is lost). Without it a shrink is refused. */
  shrink?: boolean;
}

/** Largest virtual size QEMU's qcow2 driver accepts (2^55 bytes). */
const MAX_VIRTUAL_BYTES = 2 ** 55;

/**
 * Sets the virtual size of the qcow2 image in `backend` (writable, not open elsewhere) to
 * `virtualSize` bytes, rounded up to 512 as qemu-img does. Throws INVALID_ARGUMENT for a size
 * that is not a byte count or too large, or a smaller size without `options.shrink` (with
 * qemu-img's words), and ShadowUpdate.begin's errors. Returns the new size.
 */
export async function resizeQcow2(backend: Backend, virtualSize: number, options: ResizeOptions = {}): Promise<number> {
  if (!Number.isSafeInteger(virtualSize) || virtualSize < 0 || virtualSize > MAX_VIRTUAL_BYTES) {
    throw new ImageError('INVALID_ARGUMENT', `${virtualSize} is not a virtual size qcow2 supports (0 to 2^55 bytes)`);
  }
  const newSize = Math.ceil(virtualSize / 512) * 512;
  const update = await ShadowUpdate.begin(backend);
  const oldSize = update.virtualSize;
  if (newSize < oldSize && !options.shrink) throw new ImageError('INVALID_ARGUMENT', 'Use the --shrink option to perform a shrink operation.');
  if (newSize === oldSize) return newSize;
  const clusterSize = update.clusterSize;
  const oldTables = update.vmStateL1Index(oldSize);
  const newTables = update.vmStateL1Index(newSize);
  // Tables past the old disk can only hold VM state left by an applied snapshot: not disk data.
  for (let i = oldTables; i < update.activeL1.length; i++) update.dropActiveTable(i);
  if (newSize < oldSize) {
    update.activeL1.length = Math.min(update.activeL1.length, newTables);
    // Entries past the new end in the new last table go.
    const lastIndex = newTables - 1;
    const table = lastIndex >= 0 ? await update.activeTable(lastIndex) : undefined;
    if (table) {
      const firstGone = Math.ceil(newSize / clusterSize) - lastIndex * update.l2Entries;
      if (firstGone < update.l2Entries) {
        table.fill(0, firstGone * update.l2EntryBytes);
        update.setActiveTable(lastIndex, table);
      }
      const partial = newSize % clusterSize;
      const lastEntry = Math.ceil(newSize / clusterSize) - 1 - lastIndex * update.l2Entries;
      if (partial !== 0 && lastEntry >= 0 && (await cutLastCluster(update, table, lastEntry, partial))) {
        update.setActiveTable(lastIndex, table);
      }
    }
  } else if (update.activeL1.length < newTables) {
    while (update.activeL1.length < newTables) update.activeL1.push(0);
  }
  update.virtualSize = newSize;
  await update.commit();
  return newSize;
}

// The new last cluster (entry `index` of `table`), cut at byte `keepBytes`, moves to a new
// cluster holding its first `keepBytes` bytes and zeros after them (written before the switch), so
// the cut-off bytes read as zeros if the image grows again. Returns false when the entry has no
// data cluster.
async function cutLastCluster(update: ShadowUpdate, table: Uint8Array, index: number, keepBytes: number): Promise<boolean> {
  const { codec, geometry } = update;
  const cluster = new Uint8Array(update.clusterSize);
  const compressed = codec.compressedRun(table, geometry, index);
  if (compressed) {
    const data = (await update.readHost(compressed.runStart, compressed.runBytes)).subarray(compressed.hostOffset - compressed.runStart);
    inflateCluster(update.header.compressionType, data, cluster, compressed.hostOffset);
  } else {
    const { hostOffset } = codec.l2Entry(table, geometry, index);
    if (hostOffset === 0) return false;
    cluster.set((await update.readHost(hostOffset, keepBytes)).subarray(0, keepBytes));
  }
  cluster.fill(0, keepBytes);
  // A zero cluster with a host cluster stays a zero cluster; a compressed one becomes a plain one.
  codec.relocateL2Entry(table, geometry, index, update.allocate(1, cluster));
  return true;
}
