// SPDX-License-Identifier: MIT
// Writing compressed clusters into an existing qcow2 image (qemu-img convert -c -n, rebase -c).
// Each call is one crash-safe ShadowUpdate: the compressed bytes go to clusters the image does
// not use, packed back to back at byte granularity as QEMU packs them (a host cluster holds the
// data of at most as many guest clusters as its refcount can count); the L2 entries change in
// private copies of their tables, the refcounts are recounted, and one header write switches to
// the new metadata. A power cut before that write leaves the image as it was. As in QEMU, only a
// guest cluster without a host cluster (unallocated, or a zero cluster without one) takes
// compressed data.

import type { Backend } from '../backends/backend.js';
import { ImageError } from '../base/errors.js';
import { ShadowUpdate, type TableCapacity } from './qcow2-shadow-update.js';

/** One guest cluster to store compressed: its cluster-aligned guest offset and its compressed bytes. */
export interface CompressedClusterWrite {
  /** The guest cluster's first byte: a multiple of the cluster size. */
  guestOffset: number;
  /** The cluster compressed with the image's compression type: 1 to cluster size - 1 bytes. */
  compressed: Uint8Array;
}

/** A compressed write to a guest cluster that already has a host cluster (QEMU refuses it with EIO). */
export class CompressedOverwriteError extends ImageError {
  /** @param guestOffset The guest offset of the cluster that already has a host cluster. */
  constructor(readonly guestOffset: number) {
    super('INVALID_ARGUMENT', `guest cluster at byte ${guestOffset} already has a host cluster: compressed data goes only to unallocated clusters`);
  }
}
CompressedOverwriteError.prototype.name = 'CompressedOverwriteError';

/**
 * Stores each of `writes` (distinct guest clusters, any order) compressed in the qcow2 image in
 * `backend` (writable, not open elsewhere for writing; `capacity` as ShadowUpdate.begin takes
 * it). Everything is checked before anything is written: INVALID_ARGUMENT for an offset that is
 * not a cluster start within the virtual size, a cluster given twice, or compressed data of the
 * wrong length; CompressedOverwriteError for a cluster that has a host cluster. Also
 * ShadowUpdate's and the backend's errors.
 */
export async function writeCompressedClusters(backend: Backend, writes: readonly CompressedClusterWrite[], capacity?: TableCapacity): Promise<void> {
  if (writes.length === 0) return;
  const update = await ShadowUpdate.begin(backend, capacity);
  const { clusterSize, l2Entries, geometry, codec } = update;
  const sorted = [...writes].sort((a, b) => a.guestOffset - b.guestOffset);
  const guestClusters = Math.ceil(update.virtualSize / clusterSize);
  for (let i = 0; i < sorted.length; i++) {
    const { guestOffset, compressed } = sorted[i];
    const guestCluster = guestOffset / clusterSize;
    if (!Number.isInteger(guestCluster) || guestCluster < 0 || guestCluster >= guestClusters) {
      throw new ImageError('INVALID_ARGUMENT', `guest offset ${guestOffset} is not the start of a cluster within the virtual size ${update.virtualSize}`);
    }
    if (i > 0 && sorted[i - 1].guestOffset === guestOffset) throw new ImageError('INVALID_ARGUMENT', `guest cluster at byte ${guestOffset} is given twice`);
    if (compressed.byteLength === 0 || compressed.byteLength >= clusterSize) {
      throw new ImageError('INVALID_ARGUMENT', `compressed cluster data must be 1 to ${clusterSize - 1} bytes, got ${compressed.byteLength} for guest offset ${guestOffset}`);
    }
    const table = await update.activeTable(Math.floor(guestCluster / l2Entries));
    const entry = table && codec.l2Entry(table, geometry, guestCluster % l2Entries);
    if (entry && (entry.compressed || entry.hostOffset !== 0)) throw new CompressedOverwriteError(guestOffset);
  }

  // Host positions, packed back to back in clusters taken one at a time (so the clusters the last
  // update freed are filled first); a blob continues into the next cluster only when that one
  // is contiguous, and starts a new cluster when its first one is shared by maxRefcount blobs.
  const refcountBits = 2 ** update.refcountOrder;
  const maxRefcount = refcountBits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** refcountBits - 1;
  const sharing = new Map<number, number>();
  const hostOffsets: number[] = [];
  let cursor = 0;
  let clustersEnd = 0;
  for (const { compressed } of sorted) {
    const firstCluster = Math.floor(cursor / clusterSize);
    if (cursor % clusterSize !== 0 && (sharing.get(firstCluster) ?? 0) >= maxRefcount) cursor = (firstCluster + 1) * clusterSize;
    while (cursor + compressed.byteLength > clustersEnd) {
      const next = update.allocate(1);
      if (next !== clustersEnd) cursor = next;
      clustersEnd = next + clusterSize;
    }
    const end = cursor + compressed.byteLength;
    for (let c = Math.floor(cursor / clusterSize); c * clusterSize < end; c++) sharing.set(c, (sharing.get(c) ?? 0) + 1);
    hostOffsets.push(cursor);
    cursor = end;
  }

  // The data first (into clusters nothing references yet), in host-contiguous writes.
  let pending: Uint8Array[] = [];
  let pendingStart = 0;
  let pendingEnd = 0;
  for (let i = 0; i <= sorted.length; i++) {
    if (pending.length > 0 && (i === sorted.length || hostOffsets[i] !== pendingEnd)) {
      await backend.pwritev(pendingStart, pending);
      pending = [];
    }
    if (i === sorted.length) break;
    if (pending.length === 0) pendingStart = hostOffsets[i];
    pending.push(sorted[i].compressed);
    pendingEnd = hostOffsets[i] + sorted[i].compressed.byteLength;
  }

  for (let i = 0; i < sorted.length; i++) {
    const guestCluster = sorted[i].guestOffset / clusterSize;
    const l1Index = Math.floor(guestCluster / l2Entries);
    const table = (await update.activeTable(l1Index)) ?? new Uint8Array(clusterSize);
    codec.setCompressedL2Entry(table, geometry, guestCluster % l2Entries, hostOffsets[i], sorted[i].compressed.byteLength);
    update.setActiveTable(l1Index, table);
  }
  await update.commit();
}
