// SPDX-License-Identifier: MIT
// What a write into a cluster would do, from cached metadata only: the one answer that the
// cluster-lock choice (classifyClusters), the in-place fast path (inPlaceHostOffset), gap
// merging (gap.ts) and the allocation planner (allocate.ts, through the entry predicates) share.

import { L2E_OFFSET_MASK, L2E_STD_RESERVED_MASK, QCOW_OFLAG_COMPRESSED, QCOW_OFLAG_COPIED, QCOW_OFLAG_ZERO, loadBE64 } from './format';
import { clusterBits, hasExtendedL2, hasExternalData, l2EntryBits, sliceIndexBits } from './geometry';
import { L2Access, l1EntryValue, l2EntryAddress, lookupL2Entry } from './l2-entry';
import { Region, regionOffset, CLUSTER_STATE_CAPACITY } from './layout';
import { Status } from './status';

/** What a write into one cluster would do now, as far as the cached metadata tells (writeStateOf). */
export enum WriteState {
  /** The cluster's L2 slice is not cached: not known without I/O. */
  UNKNOWN = 0,
  /** Written in place: this image alone owns it, every subcluster allocated. */
  IN_PLACE = 1,
  /** Allocated fresh with nothing to copy from an old host cluster (unallocated or plain zero; standard L2). */
  FRESH = 2,
  /** Anything else: compressed, shared, zero with a preallocated cluster, subcluster states. */
  OTHER = 3,
}

/**
 * Extended L2: a cluster this image alone owns (COPIED, with a host cluster, not compressed, the
 * entry and its subcluster bitmap not corrupt).
 */
export function isOwnedCluster(entry: u64, bitmap: u64): bool {
  return (entry & QCOW_OFLAG_COMPRESSED) == 0 && (entry & QCOW_OFLAG_COPIED) != 0 && !isCorruptEntry(entry) &&
         !isCorruptExtendedState(entry, bitmap) && ((entry & L2E_OFFSET_MASK) != 0 || hasExternalData);
}

// Extended L2: a zero flag in the entry, or a subcluster both allocated and zero in the bitmap
// (the read mapping refuses both as corrupt; so does a write, never filling in place).
function isCorruptExtendedState(entry: u64, bitmap: u64): bool {
  return (entry & QCOW_OFLAG_ZERO) != 0 || (<u32>bitmap & <u32>(bitmap >> 32)) != 0;
}

// A standard entry with reserved bits set or a host offset inside a cluster: never written in
// place (the planner's other paths refuse it as corrupt, as the read mapping does).
function isCorruptEntry(entry: u64): bool {
  return (entry & L2E_STD_RESERVED_MASK) != 0 || (entry & L2E_OFFSET_MASK & ((<u64>1 << clusterBits) - 1)) != 0;
}

/** Extended L2: a cluster without a host cluster (its subclusters are unallocated or zero). */
export function hasNoHostCluster(entry: u64): bool {
  return (entry & QCOW_OFLAG_COMPRESSED) == 0 && (entry & L2E_OFFSET_MASK) == 0 &&
         !(hasExternalData && (entry & QCOW_OFLAG_COPIED) != 0);
}

/**
 * True when the cluster behind `entry` (and `bitmap`) may be written in place: a normal cluster
 * this image alone references (COPIED), not zero-flagged, every subcluster allocated, the entry
 * not corrupt.
 */
export function isWritableInPlace(entry: u64, bitmap: u64): bool {
  if (entry & QCOW_OFLAG_COMPRESSED) return false;
  if ((entry & QCOW_OFLAG_COPIED) == 0) return false;
  if (isCorruptEntry(entry)) return false;
  if (hasExtendedL2) return <u32>bitmap == 0xffffffff && !isCorruptExtendedState(entry, bitmap);
  if (entry & QCOW_OFLAG_ZERO) return false;
  return (entry & L2E_OFFSET_MASK) != 0 || hasExternalData;
}

/**
 * What a write into the cluster holding guest byte `guestOffsetF` would do, read from the L1 table
 * and the cached L2 slices only (no NEED records, no side effects). Callers use it for decisions
 * that are only hints (which gaps to merge, which clusters to lock); planWrite decides.
 */
export function writeStateOf(guestOffsetF: f64): WriteState {
  const guestOffset = <u64>guestOffsetF;
  if (lookupL2Entry(guestOffset, L2Access.PROBE) != Status.OK) return WriteState.UNKNOWN;
  const at = l2EntryAddress();
  if (at == 0) return hasExtendedL2 || hasExternalData ? WriteState.OTHER : WriteState.FRESH;
  const entry = loadBE64(at);
  const bitmap = hasExtendedL2 ? loadBE64(at + 8) : 0;
  if (isWritableInPlace(entry, bitmap)) return WriteState.IN_PLACE;
  if (hasExtendedL2 || hasExternalData) return WriteState.OTHER;
  const flags = entry & (QCOW_OFLAG_COMPRESSED | L2E_OFFSET_MASK);
  return flags == 0 ? WriteState.FRESH : WriteState.OTHER;
}

/**
 * Classifies the clusters of guest [guestStartF, guestStartF + lengthF) (length > 0) with
 * writeStateOf, one u8 WriteState per cluster into the CLUSTER_STATES region, from the cluster
 * holding guestStartF on. Returns how many it wrote (at most CLUSTER_STATE_CAPACITY: call again
 * from the next cluster for the rest), or 0 for an empty range.
 */
export function classifyClusters(guestStartF: f64, lengthF: f64): i32 {
  if (!(lengthF > 0) || !(guestStartF >= 0)) return 0;
  const first = <u64>guestStartF >> clusterBits;
  const last = (<u64>guestStartF + <u64>lengthF - 1) >> clusterBits;
  const count = <i32>min(last - first + 1, <u64>CLUSTER_STATE_CAPACITY);
  const states = regionOffset(Region.CLUSTER_STATES);
  for (let i = 0; i < count; i++) {
    store<u8>(states + <usize>i, <u8>writeStateOf(<f64>((first + <u64>i) << clusterBits)));
  }
  return count;
}

/**
 * The host offset of guest byte `guestOffsetF` when the whole write of guest [guestOffsetF,
 * guestOffsetF + lengthF) goes in place to one contiguous host range, as the cached metadata
 * tells (every cluster written in place, in a table this image alone owns, host clusters
 * continuing each other inside one L2 slice); -1 for anything else (then planWrite decides).
 * Changes nothing and records nothing.
 */
export function inPlaceHostOffset(guestOffsetF: f64, lengthF: f64): f64 {
  if (!(lengthF > 0) || !(guestOffsetF >= 0)) return -1;
  const guestOffset = <u64>guestOffsetF;
  const end = guestOffset + <u64>lengthF;
  if (lookupL2Entry(guestOffset, L2Access.PROBE) != Status.OK) return -1;
  let at = l2EntryAddress();
  if (at == 0 || (l1EntryValue() & QCOW_OFLAG_COPIED) == 0) return -1;
  const clusterMask = (<u64>1 << clusterBits) - 1;
  const sliceGuestBits = clusterBits + sliceIndexBits();
  const sliceEnd = ((guestOffset >> sliceGuestBits) + 1) << sliceGuestBits;
  if (end > sliceEnd) return -1;
  const entryBytes = <usize>1 << l2EntryBits;
  let entry = loadBE64(at);
  if (!isWritableInPlace(entry, hasExtendedL2 ? loadBE64(at + 8) : 0)) return -1;
  const hostStart = (entry & L2E_OFFSET_MASK) + (guestOffset & clusterMask);
  let runEnd = (guestOffset & ~clusterMask) + clusterMask + 1;
  let nextHost = (entry & L2E_OFFSET_MASK) + clusterMask + 1;
  while (runEnd < end) {
    at += entryBytes;
    entry = loadBE64(at);
    if (!isWritableInPlace(entry, hasExtendedL2 ? loadBE64(at + 8) : 0)) return -1;
    if ((entry & L2E_OFFSET_MASK) != nextHost) return -1;
    runEnd += clusterMask + 1;
    nextHost += clusterMask + 1;
  }
  return <f64>hostStart;
}
