// SPDX-License-Identifier: MIT
// Which host clusters hold active L2 tables and refcount blocks, read from the in-memory L1 and
// refcount tables, for the metadata overlap guard (QEMU's qcow2_check_metadata_overlap): a host
// write that would overwrite one of them is refused (bindings/qcow2/qcow2-overlap.ts). Each table's
// referenced cluster indices are kept sorted in the TABLE_INDEX region and rebuilt when the
// table changed since the last query (new tables and blocks are rare), so a query is a binary
// search per table.

import { clusterBits, l1EntryCount } from './geometry';
import { l1TableAt } from './l2-entry';
import { l1ChangeCount } from './allocate';
import { refblockOffset, reftableChangeCount, reftableEntryCount } from './refcount';
import { Region, regionOffset } from './layout';

/** What a host cluster range overlaps (tableOverlap). */
export enum MetadataOverlap {
  NONE = 0,
  /** A cluster the active L1 table points at: an L2 table. */
  L2_TABLE = 1,
  /** A cluster the refcount table points at: a refcount block. */
  REFCOUNT_BLOCK = 2,
  /**
   * A refcount table entry is not cluster-aligned: refcounts are read and written through every
   * refcount block, so one out of line taints every write.
   */
  UNALIGNED_REFCOUNT_BLOCK = 3,
}

// Sorted cluster indices: L2 tables from the region's start, refcount blocks after l1EntryCount.
let l2Count: u32 = 0;
let l2Generation: u32 = 0;
let l2Built: bool = false;
let refblockCount: u32 = 0;
let refblockGeneration: u32 = 0;
let refblockEntriesAtBuild: u64 = 0;
let refblockBuilt: bool = false;
let unalignedRefblocks: u32 = 0;

/** Bytes of the TABLE_INDEX region: a u64 per L1 entry and per refcount table entry of capacity. */
export function tableIndexBytes(l1Entries: u64, reftableCapacityBytes: u64): u64 {
  return l1Entries * 8 + reftableCapacityBytes;
}

/** Forgets both indexes (configureImage placed new tables). */
export function resetTableIndex(): void {
  l2Built = false;
  refblockBuilt = false;
}

@inline function l2Index(): usize { return regionOffset(Region.TABLE_INDEX); }
@inline function refblockIndex(): usize { return regionOffset(Region.TABLE_INDEX) + (<usize>l1EntryCount << 3); }

function rebuildL2Index(): void {
  const base = l2Index();
  let count: u32 = 0;
  for (let i: u64 = 0; i < <u64>l1EntryCount; i++) {
    const table = l1TableAt(i);
    if (table == 0) continue;
    store<u64>(base + (<usize>count << 3), table >> clusterBits);
    count++;
  }
  sortU64(base, count);
  l2Count = count;
  l2Generation = l1ChangeCount();
  l2Built = true;
}

function rebuildRefblockIndex(): void {
  const base = refblockIndex();
  const entries = <u64>reftableEntryCount();
  const clusterMask = (<u64>1 << clusterBits) - 1;
  let count: u32 = 0;
  let unaligned: u32 = 0;
  for (let i: u64 = 0; i < entries; i++) {
    const block = refblockOffset(i);
    if (block == 0) continue;
    if ((block & clusterMask) != 0) unaligned++;
    store<u64>(base + (<usize>count << 3), block >> clusterBits);
    count++;
  }
  sortU64(base, count);
  refblockCount = count;
  unalignedRefblocks = unaligned;
  refblockGeneration = reftableChangeCount();
  refblockEntriesAtBuild = entries;
  refblockBuilt = true;
}

// True when a sorted index of `count` u64 at `base` holds a value in [first, last].
function holdsAny(base: usize, count: u32, first: u64, last: u64): bool {
  let low: u32 = 0;
  let high = count;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (load<u64>(base + (<usize>middle << 3)) < first) low = middle + 1;
    else high = middle;
  }
  return low < count && load<u64>(base + (<usize>low << 3)) <= last;
}

// Heapsort of `count` u64 at `base`, ascending.
function sortU64(base: usize, count: u32): void {
  for (let start = count >>> 1; start > 0; start--) siftDown(base, start - 1, count);
  for (let end = count; end > 1; end--) {
    const last = base + (<usize>(end - 1) << 3);
    const top = load<u64>(base);
    store<u64>(base, load<u64>(last));
    store<u64>(last, top);
    siftDown(base, 0, end - 1);
  }
}

function siftDown(base: usize, from: u32, count: u32): void {
  let parent = from;
  for (;;) {
    let child: u32 = 2 * parent + 1;
    if (child >= count) return;
    if (child + 1 < count && load<u64>(base + (<usize>(child + 1) << 3)) > load<u64>(base + (<usize>child << 3))) child++;
    const parentAt = base + (<usize>parent << 3);
    const childAt = base + (<usize>child << 3);
    const parentValue = load<u64>(parentAt);
    const childValue = load<u64>(childAt);
    if (parentValue >= childValue) return;
    store<u64>(parentAt, childValue);
    store<u64>(childAt, parentValue);
    parent = child;
  }
}

/**
 * What host clusters [firstClusterF, lastClusterF] overlap among the active L2 tables (unless
 * `skipL2Tables`: a write of an L2 table) and the refcount blocks (unless `skipRefblocks`), as
 * the in-memory tables reference them now. An unaligned refcount table entry is reported
 * whatever the range. NONE, L2_TABLE, UNALIGNED_REFCOUNT_BLOCK or REFCOUNT_BLOCK, in that order.
 */
export function tableOverlap(firstClusterF: f64, lastClusterF: f64, skipL2Tables: i32, skipRefblocks: i32): MetadataOverlap {
  const first = <u64>firstClusterF;
  const last = <u64>lastClusterF;
  if (skipL2Tables == 0) {
    if (!l2Built || l2Generation != l1ChangeCount()) rebuildL2Index();
    if (holdsAny(l2Index(), l2Count, first, last)) return MetadataOverlap.L2_TABLE;
  }
  if (!refblockBuilt || refblockGeneration != reftableChangeCount() || refblockEntriesAtBuild != <u64>reftableEntryCount()) {
    rebuildRefblockIndex();
  }
  if (unalignedRefblocks > 0) return MetadataOverlap.UNALIGNED_REFCOUNT_BLOCK;
  if (skipRefblocks == 0 && holdsAny(refblockIndex(), refblockCount, first, last)) return MetadataOverlap.REFCOUNT_BLOCK;
  return MetadataOverlap.NONE;
}
