// SPDX-License-Identifier: MIT
// Sizes and places one image's size-dependent regions (the L1 table and the L2 slice cache)
// after the fixed regions, and sets the image geometry. TypeScript asks requiredMemoryBytes on a
// probe instance, creates the image's instance with that much memory, then calls configureImage.

import { Region, place, fixedRegionsEnd } from './layout';
import { Status } from './status';
import { MAX_CLUSTER_BITS, MAX_L1_BYTES, MIN_CLUSTER_BITS, MIN_EXTL2_CLUSTER_BITS } from './format';
import { setGeometry, sliceBits } from './geometry';
import { cacheBookkeepingBytes, placeCache } from './cache';

// 2^53: the largest byte position a double holds exactly.
const MAX_EXACT_POSITION: f64 = 9007199254740992.0;
/** Fewest L2 slices the cache holds, whatever cacheBytes says. */
const MIN_CACHE_SLICES: u32 = 4;
/** Most L2 slices the cache holds. */
const MAX_CACHE_SLICES: u32 = 1 << 20;

function sliceBytesFor(clusterBits: u32): u32 {
  return <u32>1 << (clusterBits < 12 ? clusterBits : 12);
}

function sliceCountFor(clusterBits: u32, cacheBytes: f64): u32 {
  const wanted = cacheBytes / <f64>sliceBytesFor(clusterBits);
  if (!(wanted >= <f64>MIN_CACHE_SLICES)) return MIN_CACHE_SLICES;
  return wanted > <f64>MAX_CACHE_SLICES ? MAX_CACHE_SLICES : <u32>wanted;
}

/**
 * Bytes of linear memory an image instance needs: the fixed regions, an L1 table of `l1Entries`
 * entries and an L2 cache of about `cacheBytes` (at least MIN_CACHE_SLICES slices). Returns -1
 * for out-of-range arguments.
 */
export function requiredMemoryBytes(clusterBits: i32, l1Entries: f64, cacheBytes: f64): f64 {
  if (clusterBits < <i32>MIN_CLUSTER_BITS || clusterBits > <i32>MAX_CLUSTER_BITS) return -1;
  if (!(l1Entries >= 0) || l1Entries * 8 > <f64>MAX_L1_BYTES) return -1;
  const slices = sliceCountFor(<u32>clusterBits, cacheBytes);
  const l1Bytes = <f64>(<u64>l1Entries << 3);
  return <f64>fixedRegionsEnd() + l1Bytes + 16 +
    <f64>slices * <f64>sliceBytesFor(<u32>clusterBits) + <f64>cacheBookkeepingBytes(slices) + 32;
}

/**
 * Sets the image geometry and places the L1 table and the L2 cache. Inputs come from the parsed
 * header (validated there); `cacheBytes` is the requested L2 cache size. TypeScript then copies
 * the L1 table (raw big-endian bytes) into regionOffset(L1_TABLE).
 * Returns OK, INVALID for inconsistent arguments, NO_MEMORY when memory is smaller than
 * requiredMemoryBytes says.
 */
export function configureImage(clusterBits: i32, extendedL2: i32, externalData: i32, virtualSize: f64,
                               l1Entries: f64, cacheBytes: f64): Status {
  if (clusterBits < <i32>MIN_CLUSTER_BITS || clusterBits > <i32>MAX_CLUSTER_BITS) return Status.INVALID;
  if (extendedL2 != 0 && clusterBits < <i32>MIN_EXTL2_CLUSTER_BITS) return Status.INVALID;
  if (!(virtualSize >= 0) || virtualSize > MAX_EXACT_POSITION || virtualSize != Math.floor(virtualSize)) return Status.INVALID;
  if (!(l1Entries >= 0) || l1Entries * 8 > <f64>MAX_L1_BYTES) return Status.INVALID;
  const needed = requiredMemoryBytes(clusterBits, l1Entries, cacheBytes);
  if (needed > <f64>(<u64>memory.size() << 16)) return Status.NO_MEMORY;
  setGeometry(<u32>clusterBits, extendedL2 != 0, externalData != 0, <u64>virtualSize, <u32>l1Entries);
  const l1Bytes = <usize>(<u64>l1Entries << 3);
  const cacheStart = place(Region.L1_TABLE, fixedRegionsEnd(), l1Bytes);
  memory.fill(fixedRegionsEnd(), 0, l1Bytes);
  placeCache(cacheStart, sliceCountFor(<u32>clusterBits, cacheBytes));
  return sliceBits > 0 ? Status.OK : Status.INVALID;
}
