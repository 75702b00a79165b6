// SPDX-License-Identifier: MIT
// The one lookup from a guest offset to its L2 entry: the L1 entry, then the cached L2 slice,
// then the entry in it. The read mapping (mapping.ts) and every writer of L2 entries
// (allocate.ts) find entries here, so what makes a table unusable is decided once: an L1 entry
// with reserved bits or a table offset that is not cluster-aligned is corrupt for every caller
// (as QEMU's qcow2_get_host_offset and get_cluster_table refuse both), and for writing, a table
// whose L1 entry lacks COPIED is shared with an internal snapshot and is never edited in place.

import { L1E_OFFSET_MASK, L1E_RESERVED_MASK, QCOW_OFLAG_COPIED, loadBE64 } from './format';
import { clusterBits, l1EntryCount, l1IndexOf, l2EntryBits, l2IndexOf, sliceBits, sliceIndexBits } from './geometry';
import { CacheId, findSlice, slotAddress } from './cache';
import { MappingCorruption, corrupt } from './mapping';
import { needTable, needTableCopy } from './need';
import { Region, regionOffset } from './layout';
import { Status } from './status';

/** What the caller of lookupL2Entry will do with the entry. */
export enum L2Access {
  /** Read it: a slice missing from the cache is recorded as a NEED_TABLE. */
  READ = 0,
  /**
   * Change it: as READ, and a table whose L1 entry lacks COPIED (an internal snapshot references
   * it too) is refused with NEED_TABLE_COPY naming the L1 entry (allocate.ts copies the table).
   */
  WRITE = 1,
  /** Look without side effects (hints): nothing is recorded, neither a NEED nor a corruption. */
  PROBE = 2,
}

let foundAddress: usize = 0;
let foundSlot: i32 = -1;

/** Linear-memory address of L1 entry `index` (big-endian u64). */
@inline export function l1EntryAddress(index: u64): usize { return regionOffset(Region.L1_TABLE) + (<usize>index << 3); }

/** Host offset of the L2 table L1 entry `index` points at (0: none), unchecked (bookkeeping only). */
@inline export function l1TableAt(index: u64): u64 { return loadBE64(l1EntryAddress(index)) & L1E_OFFSET_MASK; }

let foundL1Entry: u64 = 0;

/**
 * Reads and checks L1 entry `l1Index` (the one mapping guest byte `guestOffset`) into
 * l1EntryValue(). OK (its table offset is 0 or cluster-aligned, no reserved bits), CORRUPT
 * (reason in mapping.ts corruptReason, unless PROBE), INVALID past the L1 table.
 */
export function readL1Entry(l1Index: u64, guestOffset: u64, access: L2Access): Status {
  if (l1Index >= <u64>l1EntryCount) return Status.INVALID;
  const l1Entry = loadBE64(l1EntryAddress(l1Index));
  foundL1Entry = l1Entry;
  if (l1Entry & L1E_RESERVED_MASK) {
    return access == L2Access.PROBE ? Status.CORRUPT : corrupt(MappingCorruption.L1_RESERVED_BITS, guestOffset);
  }
  if (l1Entry & L1E_OFFSET_MASK & ((<u64>1 << clusterBits) - 1)) {
    return access == L2Access.PROBE ? Status.CORRUPT : corrupt(MappingCorruption.L2_TABLE_UNALIGNED, guestOffset);
  }
  return Status.OK;
}

/** The L1 entry the last readL1Entry (or lookupL2Entry) read. */
export function l1EntryValue(): u64 { return foundL1Entry; }

/**
 * Finds the L2 entry of guest byte `guestOffset` for `access`. Returns OK with l2EntryAddress()
 * and l2EntrySlot() set, or with l2EntryAddress() 0 when the L1 entry is empty (no table: the
 * cluster is unallocated; also past the L1 table for READ); NEED_TABLE when the slice is not cached (recorded in the NEED record
 * unless PROBE); NEED_TABLE_COPY (WRITE only); CORRUPT as readL1Entry; INVALID past the L1
 * table (WRITE, PROBE).
 */
export function lookupL2Entry(guestOffset: u64, access: L2Access): Status {
  const l1Index = l1IndexOf(guestOffset);
  foundAddress = 0;
  // Past the L1 table reads as unallocated, as for QEMU; nothing there can be changed.
  if (l1Index >= <u64>l1EntryCount && access == L2Access.READ) return Status.OK;
  const status = readL1Entry(l1Index, guestOffset, access);
  if (status != Status.OK) return status;
  const l2Offset = foundL1Entry & L1E_OFFSET_MASK;
  if (l2Offset == 0) return Status.OK;
  if (access == L2Access.WRITE && (foundL1Entry & QCOW_OFLAG_COPIED) == 0) return needTableCopy(l1Index);
  const l2Index = l2IndexOf(guestOffset);
  const sliceHost = l2Offset + ((<u64>(l2Index >> sliceIndexBits())) << sliceBits);
  const slot = findSlice(CacheId.L2, sliceHost);
  if (slot < 0) return access == L2Access.PROBE ? Status.NEED_TABLE : needTable(CacheId.L2, sliceHost);
  foundSlot = slot;
  foundAddress = slotAddress(CacheId.L2, slot) + (<usize>(l2Index & ((<u32>1 << sliceIndexBits()) - 1)) << l2EntryBits);
  return Status.OK;
}

/** Address of the entry the last successful lookupL2Entry found; 0 when its L1 entry was empty. */
export function l2EntryAddress(): usize { return foundAddress; }
/** L2 cache slot holding the entry the last lookupL2Entry found (to mark it dirty). */
export function l2EntrySlot(): i32 { return foundSlot; }
