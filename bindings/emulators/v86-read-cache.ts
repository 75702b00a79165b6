// SPDX-License-Identifier: MIT
// The v86 adapter's read cache: the guest's disk bytes in blocks read through the image and read
// ahead, so the adapter can answer v86 at once when the bytes are at hand.

import type { BlockImage } from '../dispatch/image.js';
import { ImageError } from '../base/errors.js';
import { ReadAheadCache } from '../backends/read-ahead.js';

/**
 * The v86 adapter's read cache (V86DiskOptions.readCache): blocks of `blockBytes` read through
 * the image; on a miss the rest of its aligned `neighbourhoodBytes` is read too (a file system
 * keeps related data together), and while the guest reads forward the blocks ahead are read in a
 * window growing to `maxAheadBytes`; `cacheBytes` kept (least recently used go first).
 */
export interface V86ReadCacheOptions {
  /** Bytes per cached block, the unit read through the image (default 128 KiB). */
  blockBytes?: number;
  /** Bytes around a miss read with it: the aligned run holding it (default 1 MiB; at most one block: none). */
  neighbourhoodBytes?: number;
  /** Widest read-ahead window in bytes (default 2 MiB; 0: none). */
  maxAheadBytes?: number;
  /** Bytes of blocks kept (default 32 MiB). */
  cacheBytes?: number;
}

const DEFAULT_BLOCK_BYTES = 128 << 10;
const DEFAULT_NEIGHBOURHOOD_BYTES = 1 << 20;
const DEFAULT_MAX_AHEAD_BYTES = 2 << 20;
const DEFAULT_CACHE_BYTES = 32 << 20;

/**
 * A ReadAheadCache of `image`'s guest bytes sized by `options`, and the longest read worth
 * serving through it (a quarter of it, at least one block; longer reads go to the image
 * directly). The block a guest waits for is one image read; each run of blocks read ahead or
 * around a miss is one more, so a compressed image decodes the waited-for block by itself and the
 * rest in one batch. Throws INVALID_ARGUMENT for sizes that are not non-negative integers, or a
 * zero block size.
 */
export function guestReadCache(image: BlockImage, options: V86ReadCacheOptions = {}): { cache: ReadAheadCache; longestReadBytes: number } {
  const blockBytes = options.blockBytes ?? DEFAULT_BLOCK_BYTES;
  const maxAheadBytes = options.maxAheadBytes ?? DEFAULT_MAX_AHEAD_BYTES;
  const cacheBytes = options.cacheBytes ?? DEFAULT_CACHE_BYTES;
  const neighbourhoodBytes = options.neighbourhoodBytes ?? DEFAULT_NEIGHBOURHOOD_BYTES;
  if (![blockBytes, neighbourhoodBytes, maxAheadBytes, cacheBytes].every((n) => Number.isSafeInteger(n) && n >= 0) || blockBytes === 0) {
    throw new ImageError('INVALID_ARGUMENT', `readCache sizes must be non-negative integers and blockBytes positive, not ${JSON.stringify(options)}`);
  }
  const diskBytes = image.virtualSize;
  const cache = new ReadAheadCache(blockBytes, diskBytes, (index) => {
    const start = index * blockBytes;
    return image.read(start, Math.min(blockBytes, diskBytes - start));
  }, {
    cacheBlocks: Math.max(4, Math.floor(cacheBytes / blockBytes)),
    maxAheadBlocks: Math.ceil(maxAheadBytes / blockBytes),
    neighbourhoodBlocks: Math.max(1, Math.floor(neighbourhoodBytes / blockBytes)),
    fetchRun: async (first, count) => {
      const start = first * blockBytes;
      const run = await image.read(start, Math.min(count * blockBytes, diskBytes - start));
      // Copies, so the cache's accounting stays per block (a view would keep the whole run alive).
      return Array.from({ length: count }, (_, i) => run.slice(i * blockBytes, (i + 1) * blockBytes));
    },
  });
  return { cache, longestReadBytes: Math.max(blockBytes, Math.floor(cacheBytes / 4)) };
}
