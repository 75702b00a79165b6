// SPDX-License-Identifier: MIT
// Sizes and places one image's size-dependent regions (the L1 table, the refcount table, the
// bookkeeping of new and referenced tables, and the L2 and refcount slice caches) after the fixed
// regions, and sets the image geometry. TypeScript asks requiredMemoryBytes on a probe instance,
// creates the image's instance with that much memory, then calls configureImage and reads the
// two tables into their regions.

import { Region, place, fixedRegionsEnd } from './layout';
import { Status } from './status';
import { MAX_CLUSTER_BITS, MAX_L1_BYTES, MAX_REFCOUNT_ORDER, MAX_REFTABLE_BYTES, MIN_CLUSTER_BITS, MIN_EXTL2_CLUSTER_BITS } from './format';
import { setGeometry } from './geometry';
import { CacheId, cacheBookkeepingBytes, placeCache } from './cache';
import { setRefcountGeometry } from './refcount';
import { setAllocationStart } from './allocate';
import { newTablesBytes } from './new-tables';
import { resetTableIndex, tableIndexBytes } from './table-index';

// 2^53: the largest byte position a double holds exactly.
const MAX_EXACT_POSITION: f64 = 9007199254740992.0;
/** Fewest slices a cache holds, whatever cacheBytes says. */
const MIN_CACHE_SLICES: u32 = 4;
/** Most slices a cache holds. */
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
 * Bytes reserved for the refcount table: room to grow to 16 times its size (at least 64 KiB),
 * within QEMU's 8 MiB limit. Growth past that fails with NO_SPACE.
 */
function reftableCapacityFor(reftableBytes: f64): f64 {
  const wanted = Math.max(reftableBytes * 16, 65536);
  return Math.max(reftableBytes, Math.min(wanted, <f64>MAX_REFTABLE_BYTES));
}

function cacheBytesFor(clusterBits: u32, slices: u32): f64 {
  return <f64>slices * <f64>sliceBytesFor(clusterBits) + <f64>cacheBookkeepingBytes(slices) + 32;
}

/**
 * Bytes of linear memory an image instance needs: the fixed regions, an L1 table of `l1Entries`
 * entries, a refcount table of `reftableBytes`, an L2 cache of about `cacheBytes` (at least
 * MIN_CACHE_SLICES slices) and a refcount cache of a quarter of that. -1 for bad arguments.
 */
export function requiredMemoryBytes(clusterBits: i32, l1Entries: f64, reftableBytes: f64, cacheBytes: f64): f64 {
  if (clusterBits < <i32>MIN_CLUSTER_BITS || clusterBits > <i32>MAX_CLUSTER_BITS) return -1;
  if (!(l1Entries >= 0) || l1Entries * 8 > <f64>MAX_L1_BYTES) return -1;
  if (!(reftableBytes >= 0) || reftableBytes > <f64>MAX_REFTABLE_BYTES) return -1;
  const bits = <u32>clusterBits;
  const reftableCapacity = reftableCapacityFor(reftableBytes);
  return <f64>fixedRegionsEnd() + l1Entries * 8 + 16 + reftableCapacity + 16 +
    <f64>newTablesBytes(<u64>l1Entries) + 16 + <f64>tableIndexBytes(<u64>l1Entries, <u64>reftableCapacity) + 16 +
    cacheBytesFor(bits, sliceCountFor(bits, cacheBytes)) + cacheBytesFor(bits, sliceCountFor(bits, cacheBytes / 4));
}

/**
 * Sets the image geometry and places the tables and caches. Inputs come from the parsed header
 * (validated there); `fileSize` is where allocation starts. TypeScript then copies the L1 table
 * and the refcount table (raw big-endian bytes) into regionOffset(L1_TABLE) and
 * regionOffset(REFTABLE). Returns OK, INVALID for inconsistent arguments, NO_MEMORY when memory
 * is smaller than requiredMemoryBytes says.
 */
export function configureImage(clusterBits: i32, extendedL2: i32, externalData: i32, virtualSize: f64,
                               l1Entries: f64, refcountOrder: i32, reftableBytes: f64, cacheBytes: f64, fileSize: f64): Status {
  if (clusterBits < <i32>MIN_CLUSTER_BITS || clusterBits > <i32>MAX_CLUSTER_BITS) return Status.INVALID;
  if (extendedL2 != 0 && clusterBits < <i32>MIN_EXTL2_CLUSTER_BITS) return Status.INVALID;
  if (!(virtualSize >= 0) || virtualSize > MAX_EXACT_POSITION || virtualSize != Math.floor(virtualSize)) return Status.INVALID;
  if (refcountOrder < 0 || refcountOrder > <i32>MAX_REFCOUNT_ORDER) return Status.INVALID;
  if (!(fileSize >= 0) || fileSize > MAX_EXACT_POSITION) return Status.INVALID;
  const needed = requiredMemoryBytes(clusterBits, l1Entries, reftableBytes, cacheBytes);
  if (needed < 0) return Status.INVALID;
  if (needed > <f64>(<u64>memory.size() << 16)) return Status.NO_MEMORY;
  const bits = <u32>clusterBits;
  setGeometry(bits, extendedL2 != 0, externalData != 0, <u64>virtualSize, <u32>l1Entries);
  const l1Bytes = <usize>(<u64>l1Entries << 3);
  let at = place(Region.L1_TABLE, fixedRegionsEnd(), l1Bytes);
  memory.fill(fixedRegionsEnd(), 0, l1Bytes);
  const reftableStart = at;
  const reftableCapacity = <usize>reftableCapacityFor(reftableBytes);
  at = place(Region.REFTABLE, at, reftableCapacity);
  memory.fill(reftableStart, 0, reftableCapacity);
  const newTablesStart = at;
  const newTablesRegionBytes = <usize>newTablesBytes(<u64>l1Entries);
  at = place(Region.NEW_TABLES, at, newTablesRegionBytes);
  memory.fill(newTablesStart, 0, newTablesRegionBytes);
  at = place(Region.TABLE_INDEX, at, <usize>tableIndexBytes(<u64>l1Entries, <u64>reftableCapacity));
  resetTableIndex();
  at = placeCache(CacheId.L2, (at + 15) & ~<usize>15, sliceCountFor(bits, cacheBytes));
  placeCache(CacheId.REFCOUNT, (at + 15) & ~<usize>15, sliceCountFor(bits, cacheBytes / 4));
  setRefcountGeometry(<u32>refcountOrder, <u64>reftableBytes >> 3);
  setAllocationStart(fileSize);
  return Status.OK;
}
