// SPDX-License-Identifier: MIT
// Allocation maps at a fixed resolution, for drawing: the guest range is cut into equal buckets
// and each bucket gets the fractions of its bytes stored in the image itself, stored in a backing
// layer, covered by zero flags, or allocated nowhere. Built on mapImage (bindings/tools/qcow2-map.ts);
// reads no guest data.

import type { BlockImage } from '../dispatch/image.js';
import { ImageError } from '../base/errors.js';
import { mapImage } from './qcow2-map.js';

/** Bucket sizes are whole sectors so bucket edges fall where guest I/O can. */
const SECTOR_BYTES = 512;

/** What allocationMap returns: per bucket, fractions (0 to 1) of the bucket's own bytes. */
export interface AllocationMap {
  /** Guest bytes per bucket, a multiple of 512; the last bucket may be shorter. */
  bucketBytes: number;
  /** ceil(virtualSize / bucketBytes): at most the count asked for, fewer for small images. */
  bucketCount: number;
  /** Served by data stored in the image itself (layer 0 of the chain). */
  topData: Float64Array;
  /** Served by data stored in a backing layer (raw backing files count wholly as data). */
  backingData: Float64Array;
  /** Read as zeros through a zero flag in any layer. The rest is allocated in no layer. */
  zero: Float64Array;
}

/**
 * Cuts `image`'s guest range into at most `maxBuckets` buckets of equal size (whole sectors, the
 * last one shorter) and says what serves each bucket, layer by layer as mapImage resolves the
 * backing chain. Unallocated = 1 - topData - backingData - zero (allow for rounding).
 *
 * One mapImage call per bucket, so memory stays bounded however fragmented the image is.
 * Throws INVALID_ARGUMENT unless maxBuckets is a positive safe integer; otherwise as mapImage.
 */
export async function allocationMap(image: BlockImage, maxBuckets: number): Promise<AllocationMap> {
  if (!Number.isSafeInteger(maxBuckets) || maxBuckets < 1) {
    throw new ImageError('INVALID_ARGUMENT', `maxBuckets must be a positive integer, got ${maxBuckets}`);
  }
  const virtualSize = image.virtualSize;
  const bucketBytes = Math.max(SECTOR_BYTES, Math.ceil(virtualSize / maxBuckets / SECTOR_BYTES) * SECTOR_BYTES);
  const bucketCount = Math.ceil(virtualSize / bucketBytes);
  const map: AllocationMap = {
    bucketBytes, bucketCount,
    topData: new Float64Array(bucketCount), backingData: new Float64Array(bucketCount), zero: new Float64Array(bucketCount),
  };
  for (let bucket = 0; bucket < bucketCount; bucket++) {
    const start = bucket * bucketBytes;
    const length = Math.min(bucketBytes, virtualSize - start);
    for (const entry of await mapImage(image, start, length)) {
      const share = entry.length / length;
      if (entry.data) (entry.depth === 0 ? map.topData : map.backingData)[bucket] += share;
      else if (entry.present && entry.zero) map.zero[bucket] += share;
    }
  }
  return map;
}
