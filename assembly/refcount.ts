// SPDX-License-Identifier: MIT
// Refcounts: the refcount table (held whole in linear memory) and refcount blocks (through the
// REFCOUNT slice cache). Reads and changes host-cluster refcounts of any width from 1 to 64 bits
// (qcow2 spec, "Host cluster management"; sub-byte widths pack from the least significant bit).

import { REFT_OFFSET_MASK, loadBE16, loadBE32, loadBE64, storeBE16, storeBE32, storeBE64 } from './format';
import { clusterBits, sliceBits } from './geometry';
import { CacheId, evictableSlotCount, findSlice, installZeroSlice, markSlotDirty, slotAddress } from './cache';
import { needTable, needWriteback } from './need';
import { Region, regionOffset } from './layout';
import { Status } from './status';

/** log2 of the refcount width in bits (0..6). */
export let refcountOrder: u32 = 4;
let reftableEntries: u64 = 0;
let isReftableDirty: bool = false;
let reftableGeneration: u32 = 0;

/** Sets the refcount geometry after configureImage placed the REFTABLE region. */
export function setRefcountGeometry(order: u32, entries: u64): void {
  refcountOrder = order;
  reftableEntries = entries;
  isReftableDirty = false;
}

/** log2 of the refcount entries in one refcount block. */
@inline export function refblockEntryBits(): u32 { return clusterBits + 3 - refcountOrder; }

/** The largest refcount the width holds. */
@inline function maxRefcount(): u64 {
  return refcountOrder == 6 ? <u64>-1 : (<u64>1 << (<u64>1 << refcountOrder)) - 1;
}

@inline function reftableEntryAddress(index: u64): usize { return regionOffset(Region.REFTABLE) + (<usize>index << 3); }

/** Host offset of refcount block `index`, 0 when absent (or past the table). */
export function refblockOffset(index: u64): u64 {
  if (index >= reftableEntries) return 0;
  return loadBE64(reftableEntryAddress(index)) & REFT_OFFSET_MASK;
}

// Where a cluster's refcount lives: the cache slot and the bit position inside the slice.
let foundSlot: i32 = -1;
let foundBit: u32 = 0;

// Finds the refcount slot of host cluster `cluster`. OK, NEED_TABLE, or NO_SPACE when no
// refcount block holds it (absent block: its refcount is 0; the caller decides).
function locate(cluster: u64): Status {
  const index = cluster >> refblockEntryBits();
  const block = refblockOffset(index);
  if (block == 0) return Status.NO_SPACE;
  const entry = cluster & ((<u64>1 << refblockEntryBits()) - 1);
  const bit = entry << refcountOrder;
  const sliceHost = block + ((bit >> 3) >> sliceBits << sliceBits);
  const slot = findSlice(CacheId.REFCOUNT, sliceHost);
  if (slot < 0) return needTable(CacheId.REFCOUNT, sliceHost);
  foundSlot = slot;
  foundBit = <u32>(bit & ((<u64>8 << sliceBits) - 1));
  return Status.OK;
}

function readAt(slot: i32, bit: u32): u64 {
  const at = slotAddress(CacheId.REFCOUNT, slot) + (bit >> 3);
  switch (refcountOrder) {
    case 3: return load<u8>(at);
    case 4: return loadBE16(at);
    case 5: return loadBE32(at);
    case 6: return loadBE64(at);
    default: return (load<u8>(at) >> (bit & 7)) & <u32>((1 << (1 << refcountOrder)) - 1);
  }
}

function writeAt(slot: i32, bit: u32, value: u64): void {
  const at = slotAddress(CacheId.REFCOUNT, slot) + (bit >> 3);
  switch (refcountOrder) {
    case 3: store<u8>(at, <u8>value); break;
    case 4: storeBE16(at, <u16>value); break;
    case 5: storeBE32(at, <u32>value); break;
    case 6: storeBE64(at, value); break;
    default: {
      const mask = <u32>((1 << (1 << refcountOrder)) - 1) << (bit & 7);
      store<u8>(at, <u8>((load<u8>(at) & ~mask) | ((<u32>value << (bit & 7)) & mask)));
    }
  }
  markSlotDirty(CacheId.REFCOUNT, slot);
}

let lastRefcount: u64 = 0;

/** The refcount read by the last successful refcountOf. */
export function lastReadRefcount(): u64 { return lastRefcount; }

/** Reads the refcount of host cluster `cluster` into lastReadRefcount(). OK or NEED_TABLE. */
export function refcountOf(cluster: u64): Status {
  const status = locate(cluster);
  if (status == Status.NO_SPACE) { lastRefcount = 0; return Status.OK; }
  if (status != Status.OK) return status;
  lastRefcount = readAt(foundSlot, foundBit);
  return Status.OK;
}

/**
 * Adds `delta` (+1 or -1) to the refcount of host cluster `cluster`. OK, NEED_TABLE, CORRUPT
 * (the block is absent, or the count would leave [0, max]).
 */
export function addRefcount(cluster: u64, delta: i32): Status {
  const status = locate(cluster);
  if (status == Status.NO_SPACE) return Status.CORRUPT;
  if (status != Status.OK) return status;
  const current = readAt(foundSlot, foundBit);
  if (delta < 0 && current == 0) return Status.CORRUPT;
  if (delta > 0 && current == maxRefcount()) return Status.CORRUPT;
  writeAt(foundSlot, foundBit, delta > 0 ? current + 1 : current - 1);
  return Status.OK;
}

/**
 * Creates refcount block `index` at host cluster `cluster` (which it covers, so it counts itself):
 * a zeroed slice with the block's own refcount 1, and the table entry. OK, NEED_WRITEBACK (the
 * cache has no clean slot), or NEED_GROWTH (the table has no entry `index`: growReftable).
 */
export function createRefblock(index: u64, cluster: u64): Status {
  if (index >= reftableEntries) return Status.NEED_GROWTH;
  const block = cluster << clusterBits;
  const bit = (cluster & ((<u64>1 << refblockEntryBits()) - 1)) << refcountOrder;
  const slot = installZeroSlice(CacheId.REFCOUNT, block + ((bit >> 3) >> sliceBits << sliceBits));
  if (slot < 0) return needWriteback(CacheId.REFCOUNT);
  writeAt(slot, <u32>(bit & ((<u64>8 << sliceBits) - 1)), 1);
  storeBE64(reftableEntryAddress(index), block);
  isReftableDirty = true;
  reftableGeneration++;
  return Status.OK;
}

/** Entries in the refcount table. */
export function reftableEntryCount(): f64 { return <f64>reftableEntries; }
/** True when the refcount table has entries not yet written. */
export function reftableDirty(): bool { return isReftableDirty; }
/** Change counter of the refcount table (for write-back). */
export function reftableChangeCount(): u32 { return reftableGeneration; }
/** Marks the refcount table written, if it did not change since `generation`. */
export function markReftableClean(generation: u32): bool {
  if (generation != reftableGeneration) return false;
  isReftableDirty = false;
  return true;
}

/** Subtracts one from host cluster `cluster`'s refcount (a deferred free). OK, NEED_TABLE, CORRUPT. */
export function releaseCluster(clusterOffset: f64): i32 {
  return addRefcount(<u64>clusterOffset >> clusterBits, -1);
}

let grownTableHost: u64 = 0;
let grownTableClusters: u32 = 0;

/**
 * Grows the refcount table (qcow2 spec, "Host cluster management"; what QEMU calls a refcount
 * area). The new table goes at `areaStartCluster` (a fresh cluster past every allocated one,
 * whose refcount-table index is past the old table), followed by the new refcount blocks that
 * count the area itself; every cluster of the area gets refcount 1 in zeroed slices of those
 * blocks. The in-memory table becomes the new one, with the old entries kept.
 *
 * The caller has written metadata back (so the refcount cache has clean slots) and holds off
 * every other metadata change until it has written the new blocks and table, switched the header
 * to grownTableHostOffset()/grownTableClusterCount(), and queued the old table's clusters for
 * release. Returns the first cluster past the area, or -1 (NO_SPACE: past 8 MiB or the region),
 * or -2 (the refcount cache has too few clean slots; nothing changed: write back and retry).
 */
export function growReftable(areaStartCluster: f64, capacityBytes: f64): f64 {
  const start = <u64>areaStartCluster;
  const entriesPerCluster = (<u64>1 << clusterBits) >> 3;
  const blockBits = refblockEntryBits();
  if ((start >> blockBits) < reftableEntries) return -1;
  // Fixed point: the table must have an entry for every block the area needs, and the area
  // holds the table and those blocks. Both only grow, so this settles in a few rounds.
  let tableClusters: u64 = 1;
  let blockCount: u64 = 1;
  let entries: u64 = 0;
  for (let round = 0; round < 64; round++) {
    const lastIndex = (start + tableClusters + blockCount - 1) >> blockBits;
    const wanted = max(reftableEntries * 2, lastIndex + 1);
    entries = (wanted + entriesPerCluster - 1) / entriesPerCluster * entriesPerCluster;
    const nextTableClusters = max(tableClusters, entries / entriesPerCluster);
    const nextBlockCount = max(blockCount, lastIndex - (start >> blockBits) + 1);
    if (nextTableClusters == tableClusters && nextBlockCount == blockCount) break;
    tableClusters = nextTableClusters;
    blockCount = nextBlockCount;
  }
  if (<f64>(entries << 3) > capacityBytes) return -1;
  const areaEnd = start + tableClusters + blockCount;
  // Nothing changes unless every slice the area's refcounts land in (all in new blocks, so none
  // cached yet) gets a slot: a growth cut short would leave table entries without their counts.
  let slicesNeeded = 0;
  let lastSlice: u64 = 0;
  for (let cluster = start; cluster < areaEnd; cluster++) {
    const block = (start + tableClusters + (cluster >> blockBits) - (start >> blockBits)) << clusterBits;
    const bit = (cluster & ((<u64>1 << blockBits) - 1)) << refcountOrder;
    const sliceHost = block + ((bit >> 3) >> sliceBits << sliceBits);
    if (slicesNeeded == 0 || sliceHost != lastSlice) slicesNeeded++;
    lastSlice = sliceHost;
  }
  if (slicesNeeded > evictableSlotCount(CacheId.REFCOUNT)) return -2;
  // Blocks first (they hold the refcounts), then the table entries pointing at them.
  for (let k: u64 = 0; k < blockCount; k++) {
    const index = (start >> blockBits) + k;
    storeBE64(reftableEntryAddress(index), (start + tableClusters + k) << clusterBits);
  }
  reftableEntries = entries;
  for (let cluster = start; cluster < areaEnd; cluster++) {
    const block = refblockOffset(cluster >> blockBits);
    const bit = (cluster & ((<u64>1 << blockBits) - 1)) << refcountOrder;
    const sliceHost = block + ((bit >> 3) >> sliceBits << sliceBits);
    let slot = findSlice(CacheId.REFCOUNT, sliceHost);
    if (slot < 0) slot = installZeroSlice(CacheId.REFCOUNT, sliceHost);
    if (slot < 0) return -2;
    writeAt(slot, <u32>(bit & ((<u64>8 << sliceBits) - 1)), 1);
  }
  grownTableHost = start << clusterBits;
  grownTableClusters = <u32>tableClusters;
  isReftableDirty = true;
  reftableGeneration++;
  return <f64>areaEnd;
}

/** Host offset of the table growReftable made. */
export function grownTableHostOffset(): f64 { return <f64>grownTableHost; }
/** Clusters of the table growReftable made. */
export function grownTableClusterCount(): i32 { return <i32>grownTableClusters; }
