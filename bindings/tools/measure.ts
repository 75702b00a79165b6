// SPDX-License-Identifier: MIT
// How large a new image would be (qemu-img measure): the bytes a qcow2 or raw file needs to hold
// a given virtual size, or the guest data of an existing image, computed as QEMU 7.2 computes them
// (header, L1 and L2 tables, refcount table and blocks up to their fixed point, data clusters).

import type { BlockImage } from '../dispatch/image.js';
import { ImageError } from '../base/errors.js';
import { mapImage } from './qcow2-map.js';
import { RawImage } from '../raw/raw-image.js';
import { zeroSectorFlags } from './convert-plan.js';

/** The image to measure for. */
export interface MeasureTarget {
  format: 'qcow2' | 'raw';
  /** Guest size in bytes, when no source image is given. */
  virtualSize?: number;
  /** qcow2 options, as for create (defaults: 65536, false, 16, '1.1', 'off'). */
  clusterSize?: number;
  extendedL2?: boolean;
  refcountBits?: number;
  compat?: '0.10' | '1.1';
  preallocation?: 'off' | 'metadata' | 'falloc' | 'full';
  /** The new image gets a backing file: every cluster of the source counts as data. */
  hasBackingFile?: boolean;
}

/** qemu-img measure's numbers, in bytes. */
export interface MeasureResult {
  required: number;
  fullyAllocated: number;
  /** Persistent bitmaps to copy (qcow2 source and version 3 target only; this package writes none). */
  bitmaps?: number;
}

const MAX_L1_BYTES = 32 << 20;
const TWO_MIB = 2 << 20;

const roundUp = (n: number, to: number): number => Math.ceil(n / to) * to;

/** Refcount table and block bytes that count `clusters` clusters and themselves (QEMU's fixed point). */
export function refcountMetadataBytes(clusters: number, clusterSize: number, refcountBits: number): number {
  const blocksPerTableCluster = clusterSize / 8;
  const refcountsPerBlock = (clusterSize * 8) / refcountBits;
  let table = 0;
  let blocks = 0;
  let total = 0;
  let last: number;
  do {
    last = total;
    blocks = Math.ceil((clusters + table + blocks) / refcountsPerBlock);
    table = Math.ceil(blocks / blocksPerTableCluster);
    total = clusters + blocks + table;
  } while (total !== last);
  return (blocks + table) * clusterSize;
}

/** File bytes of a qcow2 image of `virtualSize` with every cluster allocated (metadata included). */
function fullyAllocatedQcow2(virtualSize: number, clusterSize: number, refcountBits: number, l2EntryBytes: number): number {
  const aligned = roundUp(virtualSize, clusterSize);
  let meta = clusterSize;
  const l2Entries = roundUp(aligned / clusterSize, clusterSize / l2EntryBytes);
  meta += l2Entries * l2EntryBytes;
  const l1Entries = roundUp((l2Entries * l2EntryBytes) / clusterSize, clusterSize / 8);
  meta += l1Entries * 8;
  meta += refcountMetadataBytes((meta + aligned) / clusterSize, clusterSize, refcountBits);
  return meta + aligned;
}

/**
 * Guest bytes of `source` in whole clusters of `clusterSize` that hold data (zero clusters and
 * unallocated ranges do not count). A raw source has no allocation map: its all-zero 512-byte
 * sectors count as holes, as QEMU counts the holes of a sparse file (zeros QEMU finds written
 * in a raw file count there and not here). Raw backing files count wholly as data.
 */
async function dataClusterBytes(source: BlockImage, clusterSize: number): Promise<number> {
  let clusters = 0;
  let lastCluster = -1;
  const count = (start: number, end: number): void => {
    const first = Math.max(Math.floor(start / clusterSize), lastCluster + 1);
    const last = Math.floor((end - 1) / clusterSize);
    if (last >= first) clusters += last - first + 1;
    lastCluster = Math.max(lastCluster, last);
  };
  const buffer = new Uint8Array(TWO_MIB);
  for (let at = 0; at < source.virtualSize; at += TWO_MIB) {
    const length = Math.min(TWO_MIB, source.virtualSize - at);
    for (const entry of await mapImage(source, at, length)) {
      if (!entry.data) continue;
      if (!(source instanceof RawImage)) {
        count(entry.start, entry.start + entry.length);
        continue;
      }
      const bytes = buffer.subarray(0, entry.length);
      await source.readInto(entry.start, bytes);
      const flags = zeroSectorFlags(bytes);
      for (let sector = 0; sector < flags.length; sector++) {
        if (flags[sector] === 0) count(entry.start + sector * 512, Math.min(entry.start + (sector + 1) * 512, entry.start + entry.length));
      }
    }
  }
  return clusters * clusterSize;
}

/**
 * Measures an image of `target`'s format and options holding `source` (or, without one,
 * `target.virtualSize` bytes): `required` is what a converted copy needs, `fullyAllocated` what it
 * needs with every cluster allocated; qemu-img measure's numbers. Throws INVALID_ARGUMENT with
 * qemu-img's wording for invalid options or sizes.
 */
export async function measureImage(target: MeasureTarget, source?: BlockImage): Promise<MeasureResult> {
  const sizeGiven = source ? source.virtualSize : target.virtualSize ?? 0;
  if (!Number.isSafeInteger(sizeGiven) || sizeGiven < 0) throw new ImageError('INVALID_ARGUMENT', `invalid size ${sizeGiven}`);
  if (target.format === 'raw') {
    const bytes = source ? source.virtualSize : roundUp(sizeGiven, 512);
    return { required: bytes, fullyAllocated: bytes };
  }
  const extendedL2 = target.extendedL2 === true;
  const clusterSize = target.clusterSize ?? 65536;
  if (!Number.isInteger(Math.log2(clusterSize)) || clusterSize < 512 || clusterSize > TWO_MIB) {
    throw new ImageError('INVALID_ARGUMENT', 'Cluster size must be a power of two between 512 and 2048k');
  }
  if (extendedL2 && clusterSize < 16384) {
    throw new ImageError('INVALID_ARGUMENT', 'Extended L2 entries are only supported with cluster sizes of at least 16384 bytes');
  }
  const refcountBits = target.refcountBits ?? 16;
  if (!Number.isInteger(Math.log2(refcountBits)) || refcountBits > 64) {
    throw new ImageError('INVALID_ARGUMENT', 'Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (target.compat === '0.10' && refcountBits !== 16) {
    throw new ImageError('INVALID_ARGUMENT',
      'Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
  }
  const l2EntryBytes = extendedL2 ? 16 : 8;
  const optionSize = roundUp(target.virtualSize ?? 0, clusterSize);
  if (Math.ceil(optionSize / clusterSize / (clusterSize / l2EntryBytes)) * 8 > MAX_L1_BYTES) {
    throw new ImageError('INVALID_ARGUMENT', 'The image size is too large (try using a larger cluster size)');
  }
  const virtualSize = roundUp(sizeGiven, clusterSize);
  let required = 0;
  if (source) required = target.hasBackingFile ? virtualSize : await dataClusterBytes(source, clusterSize);
  if (target.preallocation === 'full' || target.preallocation === 'falloc') required = virtualSize;
  const fullyAllocated = fullyAllocatedQcow2(virtualSize, clusterSize, refcountBits, l2EntryBytes);
  const result: MeasureResult = { required: fullyAllocated - virtualSize + required, fullyAllocated };
  if (source && !(source instanceof RawImage) && target.compat !== '0.10') result.bitmaps = 0;
  return result;
}
