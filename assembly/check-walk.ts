// SPDX-License-Identifier: MIT
// The consistency check's first step and its OFLAG_COPIED walks: counts in COMPUTED every
// reference the header, snapshot table, refcount table, L1 tables (active and snapshots'), L2
// tables and refcount blocks hold, checking each entry as QEMU classifies it; and compares (or,
// repairing, fixes) OFLAG_COPIED of the active tables' entries against the refcounts.

import {
  L1E_OFFSET_MASK, L1E_RESERVED_MASK, L2E_OFFSET_MASK, L2E_STD_RESERVED_MASK, L2_BITMAP_ALLOC_MASK, MAX_EXACT_POSITION,
  MAX_L1_BYTES, QCOW_OFLAG_COMPRESSED, QCOW_OFLAG_COPIED, QCOW_OFLAG_ZERO, REFT_OFFSET_MASK, REFT_RESERVED_MASK,
  loadBE64, storeBE64, compressedHostOffset, compressedSectorCount,
} from './format';
import { clusterBits, clusterBytes, hasExtendedL2, hasExternalData, l2EntryBits } from './geometry';
import { refblockEntryBits, refcountOrder } from './refcount';
import { maxRefcountOf } from './refcount-codec';
import {
  CheckCount, CheckEvent, activeL1Entries, activeL1Offset, bump, computedPtr, corruption, event, fileBytes,
  fileClusters, hi, isUnaligned, listPtr, lo, loadRefcount, noteReferenced, referencedEnd, reftableEntries,
  reftablePtr, storeRefcount, storedPtr, taint, tablePtr,
} from './check-state';
import { snapshotRecord, snapshotsParsed } from './check-snapshots';
import { BLOCK_ABSENT, BLOCK_UNREADABLE, blockLocation, comparedBlocks, isFixed } from './check-refcounts';

export enum WalkMode {
  /** Counts the references of the tables and data clusters, and checks the entries. */
  COUNT = 0,
  /** Compares OFLAG_COPIED of the active entries with "stored refcount is 1". */
  COPIED = 1,
  /** Repair: clears OFLAG_COPIED where the refcount after the repair will not be 1. */
  COPIED_CLEAR = 2,
  /** Repair: sets or clears OFLAG_COPIED to match the (repaired) stored refcount. */
  COPIED_SET = 3,
}

// ---------------------------------------------------------------------------------------------
// Step 1: references.
// ---------------------------------------------------------------------------------------------

// Counts one reference to every host cluster that bytes [hostOffset, hostOffset + bytes) touch.
// As in QEMU, the file's last cluster may be partly past its end, but a range reaching a whole
// cluster past the end is a corruption and is not counted. A count that would pass the width's
// maximum is a corruption and stays at the maximum.
function addReferences(hostOffset: u64, bytes: u64, isBad: bool): void {
  if (bytes == 0) return;
  // Overflow-safe form of hostOffset + bytes >= fileBytes + cluster size.
  if (hostOffset > <u64>-1 - bytes || hostOffset + bytes >= fileBytes + clusterBytes()) {
    corruption();
    event(CheckEvent.RANGE_PAST_END, hi(hostOffset), lo(hostOffset), <f64>bytes);
    return;
  }
  const last = (hostOffset + bytes - 1) >> clusterBits; // <= fileClusters: COMPUTED has room
  for (let cluster = hostOffset >> clusterBits; cluster <= last; cluster++) {
    noteReferenced(cluster);
    if (isBad) taint(cluster);
    const references = loadRefcount(computedPtr, cluster);
    if (references == maxRefcountOf(refcountOrder)) {
      corruption();
      event(CheckEvent.REFCOUNT_OVERFLOW, hi(cluster << clusterBits), lo(cluster << clusterBits));
      continue;
    }
    storeRefcount(computedPtr, cluster, references + 1);
  }
}

/**
 * Counts one reference to every host cluster that bytes [hostOffset, hostOffset + bytes) touch
 * (the header, the snapshot table, the refcount table); a range reaching a cluster or more past
 * the end of the file is a corruption instead. Updates COMPUTED.
 */
export function checkAddRange(hostOffset: f64, bytes: f64): void {
  if (!(hostOffset >= 0) || !(bytes > 0) || hostOffset > <f64>MAX_EXACT_POSITION || bytes > <f64>MAX_EXACT_POSITION) return;
  addReferences(<u64>hostOffset, <u64>bytes, false);
}

// ---------------------------------------------------------------------------------------------
// L1 and L2 walks.
// ---------------------------------------------------------------------------------------------

let walkMode: WalkMode = WalkMode.COUNT;
let walkL1Offset: u64 = 0;
let walkL1Entries: u64 = 0;
let isWalkActive: bool = false;
let l1Changed: i32 = 0;
let listCount: i32 = 0;

@inline function l1ChunkEntries(): u64 { return clusterBytes() >> 3; }

/**
 * Starts a walk over an L1 table: the active one (`snapshot` -1) or snapshot `snapshot`'s (only
 * in WalkMode.COUNT). In COUNT mode it counts the L1 table's clusters as referenced, after
 * refusing (as a corruption) a snapshot L1 that is not cluster-aligned or has more than 4 Mi
 * entries. Returns the number of chunks (one cluster of entries each) to process; 0 when there
 * is nothing to walk (also for an unknown snapshot or mode).
 */
export function l1WalkBegin(snapshot: i32, mode: i32): i32 {
  if (mode < WalkMode.COUNT || mode > WalkMode.COPIED_SET) return 0;
  walkMode = <WalkMode>mode;
  listCount = 0;
  if (snapshot < 0) {
    walkL1Offset = activeL1Offset;
    walkL1Entries = activeL1Entries;
    isWalkActive = true;
  } else {
    if (walkMode != WalkMode.COUNT || <u32>snapshot >= snapshotsParsed) return 0;
    const record = snapshotRecord(snapshot);
    walkL1Offset = load<u64>(record);
    walkL1Entries = <u64>load<u32>(record, 8);
    isWalkActive = false;
    if (isUnaligned(walkL1Offset)) {
      corruption();
      event(CheckEvent.SNAPSHOT_L1_UNALIGNED, <f64>snapshot, hi(walkL1Offset), lo(walkL1Offset));
      return 0;
    }
    if (walkL1Entries > MAX_L1_BYTES >> 3) {
      corruption();
      event(CheckEvent.SNAPSHOT_L1_TOO_LARGE, <f64>snapshot, <f64>walkL1Entries);
      return 0;
    }
  }
  if (walkMode == WalkMode.COUNT) addReferences(walkL1Offset, walkL1Entries << 3, false);
  return <i32>((walkL1Entries + l1ChunkEntries() - 1) / l1ChunkEntries());
}

// Host offset of chunk `chunk` of the walked table, or 0 when it wraps past 2^64.
function l1ChunkStart(chunk: i32): u64 {
  const start = walkL1Offset + ((<u64>chunk) << clusterBits);
  return start < walkL1Offset ? 0 : start;
}

/** Host offset to read chunk `chunk` of the walked L1 table from; -1 when it lies past the end of the file (it reads as zeros). */
export function l1ChunkHostOffset(chunk: i32): f64 {
  const start = l1ChunkStart(chunk);
  return start == 0 || start >= fileBytes ? -1 : <f64>start;
}

/** Bytes of chunk `chunk` of the walked L1 table (what TypeScript reads into CHECK_TABLE). */
export function l1ChunkBytes(chunk: i32): i32 {
  if (chunk < 0) return 0;
  const first = <u64>chunk * l1ChunkEntries();
  if (first >= walkL1Entries) return 0;
  return <i32>(min(l1ChunkEntries(), walkL1Entries - first) << 3);
}

/**
 * Processes chunk `chunk` of the walked L1 table, read into CHECK_TABLE (zeros past the end of
 * the file).
 * - COUNT: an entry with reserved bits is a corruption; each L2 table counts as referenced, and
 *   an unaligned one is a corruption.
 * - COPIED: an entry whose OFLAG_COPIED disagrees with "its L2 table's stored refcount is 1" is
 *   a corruption (entries whose refcount cannot be read are skipped, tables and all).
 * - COPIED_CLEAR / COPIED_SET: fixes those flags in CHECK_TABLE (only for a chunk inside the
 *   file); l1ChunkChanged() says how many, and TypeScript writes the chunk back.
 * Every mode lists the L2 tables that start inside the file in CHECK_LIST (f64 host offsets) for
 * l2TableProcess; tables past the end read as zeros and hold nothing. Returns their count.
 */
export function l1ChunkProcess(chunk: i32): i32 {
  const bytes = l1ChunkBytes(chunk);
  const firstIndex = <u64>(chunk < 0 ? 0 : chunk) * l1ChunkEntries();
  const start = l1ChunkStart(chunk);
  const isWritable = start != 0 && start <= fileBytes && <u64>bytes <= fileBytes - start;
  l1Changed = 0;
  listCount = 0;
  for (let i: i32 = 0; i < (bytes >> 3); i++) {
    const entryPtr = tablePtr + (<usize>i << 3);
    const entry = loadBE64(entryPtr);
    const l2Offset = entry & L1E_OFFSET_MASK;
    if (walkMode == WalkMode.COUNT && (entry & L1E_RESERVED_MASK) != 0) {
      corruption();
      event(CheckEvent.L1_RESERVED, hi(entry), lo(entry));
    }
    // Like QEMU's counting, any non-zero entry names an L2 table, even one whose offset bits are
    // 0 (it then reads the header cluster as a table); the OFLAG_COPIED check skips offset 0.
    if (walkMode == WalkMode.COUNT ? entry == 0 : l2Offset == 0) continue;
    if (walkMode == WalkMode.COUNT) {
      const isBad = isUnaligned(l2Offset);
      addReferences(l2Offset, clusterBytes(), isBad);
      if (isBad) {
        corruption();
        event(CheckEvent.L2_TABLE_UNALIGNED, hi(l2Offset), lo(l2Offset));
      }
    } else {
      if (!refcountForFlags(l2Offset >> clusterBits)) continue;
      const isOne = flagRefcount == 1;
      if (isOne != ((entry & QCOW_OFLAG_COPIED) != 0)) {
        if (walkMode == WalkMode.COPIED) {
          corruption();
          bump(CheckCount.COPIED_CORRUPTIONS);
          event(CheckEvent.COPIED_L2_TABLE, <f64>(firstIndex + <u64>i), hi(entry), lo(entry), hi(flagRefcount), lo(flagRefcount), 0);
        } else if (isWritable && (walkMode == WalkMode.COPIED_SET || !isOne)) {
          storeBE64(entryPtr, isOne ? entry | QCOW_OFLAG_COPIED : entry & ~QCOW_OFLAG_COPIED);
          l1Changed++;
          bump(CheckCount.CORRUPTIONS_FIXED);
          event(CheckEvent.COPIED_L2_TABLE, <f64>(firstIndex + <u64>i), hi(entry), lo(entry), hi(flagRefcount), lo(flagRefcount), 1);
        }
      }
    }
    if (l2Offset < fileBytes) {
      store<f64>(listPtr + (<usize>listCount << 3), <f64>l2Offset);
      listCount++;
    }
  }
  return listCount;
}

/** OFLAG_COPIED bits the last l1ChunkProcess changed in CHECK_TABLE. */
export function l1ChunkChanged(): i32 { return l1Changed; }

/**
 * Processes the L2 table CHECK_LIST[listIndex] (listed by the last l1ChunkProcess), read into
 * CHECK_TABLE (one cluster; zeros past the end of the file), classifying each entry as QEMU does.
 * - COUNT: counts the data clusters (a compressed cluster counts every host cluster its data
 *   touches; a ZERO_ALLOC entry counts its cluster; with an external data file, data clusters
 *   are not counted) and, for the active L1, the allocated / fragmented / compressed clusters.
 *   Reserved bits, unaligned offsets, invalid subcluster bitmaps and compressed entries with
 *   OFLAG_COPIED (or in a data-file image, or with a bitmap) are corruptions.
 * - COPIED, COPIED_CLEAR, COPIED_SET: as l1ChunkProcess, for the OFLAG_COPIED bit of standard and
 *   ZERO_ALLOC entries (a table is only changed when it is cluster-aligned and inside the file).
 * Returns the entries changed (TypeScript then writes CHECK_TABLE back; always 0 in COUNT and
 * COPIED), or -1 for a bad index.
 */
export function l2TableProcess(listIndex: i32): i32 {
  if (listIndex < 0 || listIndex >= listCount) return -1;
  const l2Offset = <u64>load<f64>(listPtr + (<usize>listIndex << 3));
  return walkMode == WalkMode.COUNT ? countL2Table() : checkL2Flags(l2Offset);
}

const TYPE_UNALLOCATED: i32 = 0;
const TYPE_ZERO_PLAIN: i32 = 1;
const TYPE_ZERO_ALLOC: i32 = 2;
const TYPE_NORMAL: i32 = 3;
const TYPE_COMPRESSED: i32 = 4;

// QEMU's cluster type of an L2 entry (qcow2 spec, "Cluster mapping"), tested in QEMU's order.
function clusterTypeOf(entry: u64): i32 {
  if (entry & QCOW_OFLAG_COMPRESSED) return TYPE_COMPRESSED;
  if ((entry & QCOW_OFLAG_ZERO) != 0 && !hasExtendedL2) return (entry & L2E_OFFSET_MASK) != 0 ? TYPE_ZERO_ALLOC : TYPE_ZERO_PLAIN;
  if ((entry & L2E_OFFSET_MASK) == 0) {
    // Offset 0 is a valid data-file offset; there OFLAG_COPIED (always set) tells it apart.
    return hasExternalData && (entry & QCOW_OFLAG_COPIED) != 0 ? TYPE_NORMAL : TYPE_UNALLOCATED;
  }
  return TYPE_NORMAL;
}

function countL2Table(): i32 {
  const entries: i32 = 1 << (clusterBits - l2EntryBits);
  let nextContiguous: u64 = 0;
  for (let i: i32 = 0; i < entries; i++) {
    const entryPtr = tablePtr + (<usize>i << l2EntryBits);
    const entry = loadBE64(entryPtr);
    const bitmap = hasExtendedL2 ? loadBE64(entryPtr + 8) : 0;
    const type = clusterTypeOf(entry);
    if (type != TYPE_COMPRESSED && (entry & L2E_STD_RESERVED_MASK) != 0) {
      corruption();
      event(CheckEvent.L2_RESERVED, hi(entry), lo(entry));
    }
    if (type == TYPE_COMPRESSED) {
      countCompressed(i, entry, bitmap);
    } else if (type == TYPE_NORMAL || type == TYPE_ZERO_ALLOC) {
      const hostOffset = entry & L2E_OFFSET_MASK;
      if (((bitmap >> 32) & bitmap) != 0) {
        corruption();
        event(CheckEvent.SUBCLUSTER_ALLOC_AND_ZERO, hi(hostOffset), lo(hostOffset));
      }
      const isBad = isUnaligned(hostOffset);
      if (isBad) {
        corruption();
        const hasData = hasExtendedL2 ? (bitmap & L2_BITMAP_ALLOC_MASK) != 0 : (entry & QCOW_OFLAG_ZERO) == 0;
        event(CheckEvent.DATA_UNALIGNED, hi(hostOffset), lo(hostOffset), hasData ? 1 : 0);
      }
      if (isWalkActive) {
        bump(CheckCount.ALLOCATED_CLUSTERS);
        if (nextContiguous != 0 && hostOffset != nextContiguous) bump(CheckCount.FRAGMENTED_CLUSTERS);
        nextContiguous = hostOffset + clusterBytes();
      }
      if (!hasExternalData) addReferences(hostOffset, clusterBytes(), isBad);
    } else if (type == TYPE_UNALLOCATED && (bitmap & L2_BITMAP_ALLOC_MASK) != 0) {
      corruption();
      event(CheckEvent.UNALLOCATED_WITH_BITMAP, hi(entry), lo(entry));
    }
  }
  return 0;
}

// A compressed descriptor (decoded by format.ts): every host cluster the data touches is
// referenced once (an offset past the file, even one above the spec's 2^56, is only a range past
// the end, as for QEMU).
function countCompressed(index: i32, entry: u64, bitmap: u64): void {
  const hostOffset = compressedHostOffset(entry, clusterBits);
  if (entry & QCOW_OFLAG_COPIED) {
    corruption();
    event(CheckEvent.COMPRESSED_COPIED, hi(hostOffset), lo(hostOffset));
    entry &= ~QCOW_OFLAG_COPIED; // QEMU reports the entry without it from here on
  }
  if (hasExternalData) {
    corruption();
    event(CheckEvent.COMPRESSED_WITH_DATA_FILE, <f64>index, hi(entry), lo(entry));
    return;
  }
  if (bitmap != 0) {
    corruption();
    event(CheckEvent.COMPRESSED_WITH_BITMAP, <f64>index, hi(entry), lo(entry));
    return;
  }
  const sectorCount = compressedSectorCount(entry, clusterBits);
  addReferences(hostOffset, sectorCount * 512 - (hostOffset & 511), false);
  if (isWalkActive) {
    // Compressed clusters are fragmented by nature (QEMU counts them so).
    bump(CheckCount.ALLOCATED_CLUSTERS);
    bump(CheckCount.COMPRESSED_CLUSTERS);
    bump(CheckCount.FRAGMENTED_CLUSTERS);
  }
}

function checkL2Flags(l2Offset: u64): i32 {
  const entries: i32 = 1 << (clusterBits - l2EntryBits);
  const isWritable = !isUnaligned(l2Offset) && l2Offset + clusterBytes() <= fileBytes;
  let changed: i32 = 0;
  for (let i: i32 = 0; i < entries; i++) {
    const entryPtr = tablePtr + (<usize>i << l2EntryBits);
    const entry = loadBE64(entryPtr);
    const type = clusterTypeOf(entry);
    if (type != TYPE_NORMAL && type != TYPE_ZERO_ALLOC) continue;
    if (hasExternalData) flagRefcount = 1; // data-file clusters are not refcounted: always 1
    else if (!refcountForFlags((entry & L2E_OFFSET_MASK) >> clusterBits)) continue;
    const isOne = flagRefcount == 1;
    if (isOne == ((entry & QCOW_OFLAG_COPIED) != 0)) continue;
    if (walkMode == WalkMode.COPIED) {
      corruption();
      bump(CheckCount.COPIED_CORRUPTIONS);
      event(CheckEvent.COPIED_DATA_CLUSTER, hi(entry), lo(entry), hi(flagRefcount), lo(flagRefcount), 0);
    } else if (isWritable && (walkMode == WalkMode.COPIED_SET || !isOne)) {
      storeBE64(entryPtr, isOne ? entry | QCOW_OFLAG_COPIED : entry & ~QCOW_OFLAG_COPIED);
      changed++;
      bump(CheckCount.CORRUPTIONS_FIXED);
      event(CheckEvent.COPIED_DATA_CLUSTER, hi(entry), lo(entry), hi(flagRefcount), lo(flagRefcount), 1);
    }
  }
  return changed;
}

// The refcount the OFLAG_COPIED walks compare with, in flagRefcount: the stored one (COPIED),
// or the one the repair leaves (COPIED_CLEAR, COPIED_SET). False when it cannot be known: the
// block's offset is unaligned (QEMU skips those too), or the block lies in the file beyond the
// blocks the compare read (a cluster past the end whose block was never needed).
let flagRefcount: u64 = 0;

function refcountForFlags(cluster: u64): bool {
  const index = cluster >> refblockEntryBits();
  const location = blockLocation(index);
  if (location == BLOCK_UNREADABLE) return false;
  if (index < comparedBlocks()) {
    flagRefcount = walkMode != WalkMode.COPIED && isFixed(cluster)
      ? loadRefcount(computedPtr, cluster) : loadRefcount(storedPtr, cluster);
    return true;
  }
  if (location != BLOCK_ABSENT) return false;
  flagRefcount = 0;
  return true;
}

/**
 * Checks the refcount table's entries and counts each refcount block as referenced (QEMU's last
 * counting step). Reserved bits, an unaligned block, a block past the end of the image (the
 * file, or the highest cluster referenced so far) and a block referenced more than once are
 * corruptions.
 */
export function checkRefblocks(): void {
  for (let index: u64 = 0; index < reftableEntries; index++) {
    const entry = loadBE64(reftablePtr + (<usize>index << 3));
    const blockOffset = entry & REFT_OFFSET_MASK;
    if (entry & REFT_RESERVED_MASK) {
      corruption();
      event(CheckEvent.REFTABLE_RESERVED, <f64>index);
      continue;
    }
    if (isUnaligned(blockOffset)) {
      corruption();
      event(CheckEvent.REFBLOCK_UNALIGNED, <f64>index);
      continue;
    }
    const cluster = blockOffset >> clusterBits;
    if (cluster >= max(fileClusters, referencedEnd)) {
      corruption();
      event(CheckEvent.REFBLOCK_OUTSIDE, <f64>index);
      continue;
    }
    if (blockOffset == 0) continue;
    addReferences(blockOffset, clusterBytes(), false);
    const references = loadRefcount(computedPtr, cluster);
    if (references != 1) {
      corruption();
      event(CheckEvent.REFBLOCK_REFCOUNT, <f64>index, hi(references), lo(references));
    }
  }
}
