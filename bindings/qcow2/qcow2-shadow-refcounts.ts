// SPDX-License-Identifier: MIT
// Refcounts for a crash-safe metadata update (qcow2-shadow-update.ts): the counts of an image's
// host clusters as stored (to find clusters no one uses), and a whole new refcount structure,
// blocks and table, for counts recounted from every reference, placed in clusters the update
// allocates. The refcount and table entry bytes are the wasm core's (qcow2-metadata-codec.ts).

import type { Backend } from '../backends/backend.js';
import type { Qcow2Header } from './qcow2-header.js';
import { ImageError } from '../base/errors.js';
import { TableCodec } from './qcow2-metadata-codec.js';

/** Reference counts per host cluster, growing as higher clusters are counted. */
export class ClusterCounts {
  private counts = new Uint32Array(1024);
  /** One past the highest cluster ever counted. */
  end = 0;

  /** The count of host cluster `cluster` (0 when never counted). */
  get(cluster: number): number {
    return cluster < this.counts.length ? this.counts[cluster] : 0;
  }

  /** Adds `delta` to the count of host cluster `cluster`. */
  add(cluster: number, delta: number): void {
    if (cluster >= this.counts.length) {
      const grown = new Uint32Array(Math.max(cluster + 1, this.counts.length * 2));
      grown.set(this.counts);
      this.counts = grown;
    }
    this.counts[cluster] += delta;
    if (cluster >= this.end) this.end = cluster + 1;
  }

  /** One past the highest cluster with a nonzero count. */
  usedEnd(): number {
    let end = Math.min(this.end, this.counts.length);
    while (end > 0 && this.counts[end - 1] === 0) end--;
    return end;
  }
}

/** The stored refcounts of every cluster the refcount table of the image in `backend` covers (each at most 2^32 - 1). */
export async function readRefcounts(backend: Backend, header: Qcow2Header, codec: TableCodec): Promise<ClusterCounts> {
  const counts = new ClusterCounts();
  const table = new Uint8Array(header.refcountTableClusters * header.clusterSize);
  await backend.preadv(header.refcountTableOffset, [table]);
  const refcountsPerBlock = (header.clusterSize * 8) / 2 ** header.refcountOrder;
  const block = new Uint8Array(header.clusterSize);
  for (const [index, blockOffset] of codec.reftableOffsets(table).entries()) {
    if (blockOffset === 0) continue;
    await backend.preadv(blockOffset, [block]);
    codec.refcounts(block, header.refcountOrder, (i, refcount) => counts.add(index * refcountsPerBlock + i, Math.min(refcount, 0xffffffff)));
  }
  return counts;
}

/** A refcount structure placed for an update: where its table is, and the clusters to write. */
export interface PlacedRefcounts {
  tableOffset: number;
  tableClusters: number;
  /** One past the highest host cluster in use, the structure included. */
  usedClusters: number;
  /** Refcount blocks and the table: host offset and bytes. */
  writes: [number, Uint8Array][];
}

/** What placeRefcounts needs to know of the update. */
export interface RefcountPlacement {
  clusterSize: number;
  /** Refcount order of the new structure. */
  refcountOrder: number;
  /** Refcount order of the image before the update (for the message when a count no longer fits). */
  previousRefcountOrder: number;
  /** Takes `clusterCount` contiguous clusters no one uses; returns the first's host offset. */
  allocate(clusterCount: number): number;
}

/**
 * Places refcount blocks for every cluster `counts` has in use and a refcount table for them
 * (both counted too), iterating until placing them needs nothing more, and renders them. Throws
 * QCOW2_UNSUPPORTED_FEATURE when a count does not fit the refcount width (in qemu-img's words
 * when the width shrinks).
 */
export function placeRefcounts(counts: ClusterCounts, p: RefcountPlacement, codec: TableCodec): PlacedRefcounts {
  const { clusterSize } = p;
  const refcountBits = 2 ** p.refcountOrder;
  const refcountsPerBlock = (clusterSize * 8) / refcountBits;
  const maxCount = refcountBits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** refcountBits - 1;
  const blocks = new Map<number, number>();
  let table = { offset: 0, clusters: 0 };
  for (;;) {
    let changed = false;
    const usedEnd = counts.usedEnd();
    for (let block = 0; block * refcountsPerBlock < usedEnd; block++) {
      if (blocks.has(block)) continue;
      let used = false;
      for (let c = block * refcountsPerBlock; c < Math.min(usedEnd, (block + 1) * refcountsPerBlock) && !used; c++) used = counts.get(c) > 0;
      if (!used) continue;
      const offset = p.allocate(1);
      counts.add(offset / clusterSize, 1);
      blocks.set(block, offset);
      changed = true;
    }
    const tableClusters = Math.max(1, Math.ceil(TableCodec.pointerTableBytes(Math.ceil(counts.usedEnd() / refcountsPerBlock)) / clusterSize));
    if (tableClusters > table.clusters) {
      for (let c = 0; c < table.clusters; c++) counts.add(table.offset / clusterSize + c, -1);
      table = { offset: p.allocate(tableClusters), clusters: tableClusters };
      for (let c = 0; c < tableClusters; c++) counts.add(table.offset / clusterSize + c, 1);
      changed = true;
    }
    if (!changed) break;
  }
  const writes: [number, Uint8Array][] = [];
  for (const [block, offset] of blocks) {
    const first = block * refcountsPerBlock;
    writes.push([offset, codec.refcountBlock(clusterSize, p.refcountOrder, (i) => {
      const count = counts.get(first + i);
      if (count > maxCount) {
        const hostOffset = (first + i) * clusterSize;
        throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', p.refcountOrder < p.previousRefcountOrder
          ? `Cannot decrease refcount entry width to ${refcountBits} bits: Cluster at offset 0x${hostOffset.toString(16)} has a refcount of ${count}`
          : `host cluster ${hostOffset} would need refcount ${count}, above the ${maxCount} that refcount_bits=${refcountBits} holds`);
      }
      return count;
    })]);
  }
  writes.push([table.offset, codec.reftable(clusterSize, table.clusters, blocks)]);
  return { tableOffset: table.offset, tableClusters: table.clusters, usedClusters: counts.usedEnd(), writes };
}
