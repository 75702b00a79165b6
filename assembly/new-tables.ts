// SPDX-License-Identifier: MIT
// L2 tables allocated empty that the image file may not hold yet: write-back writes each whole
// (zeros where no slice of it is dirty) before the L1 entry that points at it, so that entry
// never points past the end of the file (QEMU's order: a new table before its L1 entry). One bit
// per L1 entry in the NEW_TABLES region, set when allocation gives the entry a new table and
// cleared once write-back wrote the table whole. Table copies are written whole by their
// caller before their L1 entry changes and are never marked.

import { l1EntryCount } from './geometry';
import { l1TableAt } from './l2-entry';
import { l1DirtyEndOf, l1DirtyFirstOf } from './allocate';
import { Region, regionOffset } from './layout';

/** Bytes of the NEW_TABLES region for an L1 table of `l1Entries`. */
export function newTablesBytes(l1Entries: u64): u64 {
  return (l1Entries + 7) >> 3;
}

/** Records that L1 entry `l1Index` points at a table allocated empty (allocate.ts). */
export function markNewTable(l1Index: u64): void {
  const at = regionOffset(Region.NEW_TABLES) + <usize>(l1Index >> 3);
  store<u8>(at, load<u8>(at) | <u8>(<u32>1 << <u32>(l1Index & 7)));
}

/**
 * The first L1 entry at or after `fromL1IndexF` whose table was allocated empty and is not yet
 * written whole, or -1. Such entries are always in the dirty part of the L1 table (their L1
 * entry reaches the disk only after the table did).
 */
export function newTableFrom(fromL1IndexF: f64): f64 {
  const dirtyFirst = l1DirtyFirstOf();
  if (dirtyFirst < 0) return -1;
  const end = min<u64>(<u64>l1DirtyEndOf(), <u64>l1EntryCount);
  const bits = regionOffset(Region.NEW_TABLES);
  let index = max<u64>(<u64>fromL1IndexF, <u64>dirtyFirst);
  while (index < end) {
    const byte = <u32>load<u8>(bits + <usize>(index >> 3)) >> <u32>(index & 7);
    if (byte == 0) {
      index = (index | 7) + 1;
      continue;
    }
    return <f64>(index + <u64>ctz(byte));
  }
  return -1;
}

/** Host offset of the L2 table L1 entry `l1IndexF` points at (0: none). */
export function l1TableHostOffset(l1IndexF: f64): f64 {
  const l1Index = <u64>l1IndexF;
  if (l1Index >= <u64>l1EntryCount) return 0;
  return <f64>l1TableAt(l1Index);
}

/**
 * Records that the new table of L1 entry `l1IndexF` at `hostOffsetF` is written whole, unless
 * the entry points elsewhere now. True when it was marked new and now is not.
 */
export function markTableWritten(l1IndexF: f64, hostOffsetF: f64): bool {
  const l1Index = <u64>l1IndexF;
  if (l1Index >= <u64>l1EntryCount || <f64>l1TableAt(l1Index) != hostOffsetF) return false;
  const at = regionOffset(Region.NEW_TABLES) + <usize>(l1Index >> 3);
  const bit = <u8>(<u32>1 << <u32>(l1Index & 7));
  if ((load<u8>(at) & bit) == 0) return false;
  store<u8>(at, load<u8>(at) & ~bit);
  return true;
}
