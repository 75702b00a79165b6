// SPDX-License-Identifier: MIT
// The allocation planner for writes (QEMU's qcow2_alloc_host_offset / QCowL2Meta, sans I/O).
// planWrite answers one run at a time with a write plan record (write-plan.ts): write in place
// (clusters this image owns alone), or allocate fresh contiguous host clusters (refcounts raised
// at once), with where the uncovered head and tail come from; TypeScript then writes the data
// with that copy-on-write and calls commitAllocation (or, when the write failed, releases the
// clusters the record says were taken), which points the L2
// entries at the new clusters and hands back the clusters they stop referencing (to be released
// only after the new entries are on disk). L2 entries change only in tables this image alone
// owns: a table shared with an internal snapshot is copied first (l2-entry.ts states the rule).

import {
  L1E_OFFSET_MASK, L2E_OFFSET_MASK, QCOW_OFLAG_COMPRESSED, QCOW_OFLAG_COPIED,
  QCOW_OFLAG_ZERO, loadBE64, storeBE64, compressedHostOffset, compressedSectorCount,
} from './format';
import {
  clusterBits, hasExtendedL2, hasExternalData, l1EntryCount, l1IndexOf, l2CoverageBits, l2IndexOf, l2EntryBits,
  sliceBits, sliceIndexBits, subclusterBits,
} from './geometry';
import { markNewTable } from './new-tables';
import { L2Access, l1EntryAddress, l1EntryValue, l2EntryAddress, l2EntrySlot, lookupL2Entry, readL1Entry } from './l2-entry';
import { CacheId, installZeroSlice, markSlotDirty, slotCount, isSlotDirty, slotKey } from './cache';
import { needWriteback } from './need';
import { refcountOf, lastReadRefcount, addRefcount, createRefblock, refblockEntryBits, refblockOffset, refcountOrder } from './refcount';
import { Region, regionOffset } from './layout';
import { CopySource, PlanField, copySourceOf, describeCopy, setPlanField, writePlan } from './write-plan';
import { hasNoHostCluster, isOwnedCluster, isWritableInPlace } from './write-state';
import { Status } from './status';

/** What planWrite decided for a run. */
export enum PlanKind {
  /** Write the guest bytes at hostStart + (guest - guestStart): no metadata changes. */
  IN_PLACE = 0,
  /** New clusters at hostStart for the cluster-aligned guest run: write data plus COW, commit. */
  ALLOCATE = 1,
  /**
   * Extended L2, clusters with no host cluster yet: new clusters, but only the subclusters of the
   * subcluster-aligned run [guestStart, guestEnd) are written (with COW inside the edge
   * subclusters) and marked allocated by commitSubclusters; the others keep reading as before.
   */
  ALLOCATE_SUBCLUSTERS = 2,
  /**
   * Extended L2, one cluster this image owns with unallocated subclusters in the run: write the
   * subcluster-aligned run in place (COW inside the edge subclusters), then commitSubclusters.
   */
  FILL_SUBCLUSTERS = 3,
}

/** Most clusters one ALLOCATE run takes. */
const MAX_RUN_CLUSTERS: u64 = 512;
// FREED_CAPACITY (layout.ts) holds 3 per cluster of a MAX_RUN_CLUSTERS run: a compressed
// cluster's data may touch up to 3 host clusters.

let allocationHint: u64 = 0; // first host cluster index allocation looks at
let l1DirtyFirst: u64 = <u64>-1;
let l1DirtyEnd: u64 = 0;
let l1Generation: u32 = 0;

let committed: i32 = 0;
let freedCount: i32 = 0;

/** Allocation starts at or after host byte `fileSize` (rounded up to a cluster). */
export function setAllocationStart(fileSize: f64): void {
  const bytes = <u64>fileSize;
  allocationHint = (bytes + (<u64>1 << clusterBits) - 1) >> clusterBits;
}

/** The host cluster index allocation looks at next (everything from it on is fresh). */
export function allocationHintCluster(): f64 { return <f64>allocationHint; }

/** Moves allocation past host cluster index `cluster` (exclusive), e.g. after a refcount area. */
export function skipAllocationTo(cluster: f64): void {
  if (<u64>cluster > allocationHint) allocationHint = <u64>cluster;
}

let allocatedHost: u64 = 0;
let allocatedCount: u64 = 0;

// Takes `count` contiguous free host clusters (refcount 0 -> 1), all within one refcount slice so
// that checking and raising cannot be split by an eviction. Sets allocatedHost. OK, NEED_TABLE,
// NEED_WRITEBACK, NO_SPACE, CORRUPT. Work done before a NEED (new refcount blocks) stays done.
function allocateClusters(count: u64): Status {
  let start = allocationHint;
  let found: u64 = 0;
  const perSlice = <u64>(8 << sliceBits) >> refcountOrder;
  while (found < count) {
    const cluster = start + found;
    if (found > 0 && (cluster & (perSlice - 1)) == 0) break; // stay within one refcount slice
    const index = cluster >> refblockEntryBits();
    const status = refcountOf(cluster);
    if (status != Status.OK) return status;
    if (lastReadRefcount() != 0) {
      // Clusters before the next candidate are never taken now (a run that was too short is left
      // behind, as every allocation leaves it), so the hint moves too: a scan interrupted by a
      // NEED_* resumes here instead of walking refcount slices it already walked (over a long
      // stretch of used clusters and a small cache, it never got past the slices it evicted).
      start = cluster + 1;
      allocationHint = start;
      found = 0;
      continue;
    }
    if (blockMissing(index)) {
      const created = createRefblock(index, cluster);
      if (created != Status.OK) return created;
      allocationHint = cluster + 1;
      start = cluster + 1;
      found = 0;
      continue;
    }
    found++;
  }
  for (let i: u64 = 0; i < found; i++) {
    const status = addRefcount(start + i, 1);
    if (status != Status.OK) return status; // same slice, already present: only CORRUPT can come back
  }
  allocationHint = start + found;
  allocatedHost = start << clusterBits;
  allocatedCount = found;
  return Status.OK;
}

function blockMissing(index: u64): bool {
  return refblockOffset(index) == 0;
}

// The L2 entry for `guestOffset`, ready to change: every writer of L2 entries (planWrite,
// commitAllocation, commitSubclusters, zeroClusters, zeroSubclusters) gets its entry here and
// nowhere else. It looks the entry up for writing (l2-entry.ts), which enforces the rule for
// shared tables: an L2 table is changed only while this image alone owns it, which its L1 entry
// says with COPIED. A table without it (an internal snapshot references it too) is never edited
// in place: the call returns NEED_TABLE_COPY, the caller copies the table to a new cluster (allocateTableCopy,
// switchToTableCopy) and calls again, and the entry is then found in the copy. An empty L1 entry
// gets a fresh zeroed table when `mayAllocate`. OK (sets entryAddress, entrySlot), NEED_*,
// NO_SPACE, CORRUPT, INVALID (no table and !mayAllocate, or past the L1 table).
let entryAddress: usize = 0;
let entrySlot: i32 = -1;
function locateEntry(guestOffset: u64, mayAllocate: bool): Status {
  let status = lookupL2Entry(guestOffset, L2Access.WRITE);
  if (status != Status.OK) return status;
  if (l2EntryAddress() == 0) {
    if (!mayAllocate) return Status.INVALID;
    if (!hasCleanSlot(CacheId.L2)) return needWriteback(CacheId.L2);
    status = allocateClusters(1);
    if (status != Status.OK) return status;
    // A table allocated past the old end of the file reads as zeros until written; its slices
    // are installed zeroed and dirty as they are used.
    setL1Entry(l1IndexOf(guestOffset), allocatedHost | QCOW_OFLAG_COPIED);
    markNewTable(l1IndexOf(guestOffset));
    const sliceOffset = (<u64>(l2IndexOf(guestOffset) >> sliceIndexBits())) << sliceBits;
    if (installZeroSlice(CacheId.L2, allocatedHost + sliceOffset) < 0) return needWriteback(CacheId.L2);
    status = lookupL2Entry(guestOffset, L2Access.WRITE);
    if (status != Status.OK) return status;
  }
  entrySlot = l2EntrySlot();
  entryAddress = l2EntryAddress();
  return Status.OK;
}

// Changes L1 entry `l1Index` in memory; write-back writes it.
function setL1Entry(l1Index: u64, entry: u64): void {
  storeBE64(l1EntryAddress(l1Index), entry);
  if (l1Index < l1DirtyFirst) l1DirtyFirst = l1Index;
  if (l1Index + 1 > l1DirtyEnd) l1DirtyEnd = l1Index + 1;
  l1Generation++;
}

let tableCopySource: u64 = 0;
let tableCopyTarget: u64 = 0;

/**
 * First step of copying the shared L2 table of L1 entry `l1IndexF` (what a NEED_TABLE_COPY asks;
 * QEMU's l2_allocate): allocates the cluster for the copy, its refcount 1. Then
 * tableCopySourceOf() is the shared table and tableCopyTargetOf() the new cluster; the caller
 * writes the table's bytes there, makes them durable, and calls switchToTableCopy. The entries
 * are copied as they are: their clusters' refcounts already count both the snapshot's reference
 * and the active one, and so do their COPIED flags (set only where the refcount is 1).
 * OK, with tableCopyTargetOf() 0 when the entry needs no copy (any more); NEED_TABLE /
 * NEED_WRITEBACK / NEED_GROWTH (call again), NO_SPACE, CORRUPT (reserved bits in the L1 entry, or
 * a table offset not cluster-aligned: mapping.ts corruptReason), INVALID.
 */
export function allocateTableCopy(l1IndexF: f64): Status {
  const l1Index = <u64>l1IndexF;
  const status = readL1Entry(l1Index, l1Index << l2CoverageBits(), L2Access.READ);
  if (status != Status.OK) return status;
  const l1Entry = l1EntryValue();
  tableCopySource = l1Entry & L1E_OFFSET_MASK;
  tableCopyTarget = 0;
  if (tableCopySource == 0 || (l1Entry & QCOW_OFLAG_COPIED) != 0) return Status.OK;
  const allocated = allocateClusters(1);
  if (allocated != Status.OK) return allocated;
  tableCopyTarget = allocatedHost;
  return Status.OK;
}

/** Host offset of the shared table the last allocateTableCopy copies. */
export function tableCopySourceOf(): f64 { return <f64>tableCopySource; }
/** Host offset of the cluster the last allocateTableCopy allocated for the copy (0: none). */
export function tableCopyTargetOf(): f64 { return <f64>tableCopyTarget; }

/**
 * Last step of a table copy: points L1 entry `l1IndexF` at the copy at `targetF` (with COPIED),
 * once the copy is durable, if the entry still points at the shared table at `sourceF` without
 * COPIED. The shared table's refcount is the caller's to lower, once the new L1 entry is on disk.
 * OK, or INVALID (the entry changed: the copy is not used).
 */
export function switchToTableCopy(l1IndexF: f64, sourceF: f64, targetF: f64): Status {
  const l1Index = <u64>l1IndexF;
  if (l1Index >= <u64>l1EntryCount) return Status.INVALID;
  if (loadBE64(l1EntryAddress(l1Index)) != <u64>sourceF) return Status.INVALID;
  setL1Entry(l1Index, <u64>targetF | QCOW_OFLAG_COPIED);
  return Status.OK;
}

function hasCleanSlot(cache: CacheId): bool {
  const count = slotCount(cache);
  for (let slot = 0; slot < count; slot++) if (slotKey(cache, slot) == 0 || !isSlotDirty(cache, slot)) return true;
  return false;
}

// Subcluster bits (bit i = subcluster i) covering bytes [fromByte, toByte) of a cluster (toByte >
// fromByte, both within the cluster).
function subclusterMask(fromByte: u64, toByte: u64): u64 {
  const first = <u32>(fromByte >> subclusterBits);
  const last = <u32>((toByte - 1) >> subclusterBits);
  return ((<u64>1 << (last + 1)) - 1) & ~((<u64>1 << first) - 1);
}

/**
 * Plans the write of guest bytes [guestOffset, guestOffset + length) from its start: one run,
 * described by the write plan record (write-plan.ts). IN_PLACE runs cover guest bytes exactly;
 * ALLOCATE runs are cluster-aligned and cover the start of the range, the subcluster kinds are
 * subcluster-aligned; for them the record names the host clusters taken (refcounts raised: the
 * caller writes the run with its head and tail, then calls commitAllocation or commitSubclusters,
 * or releases them when the write failed) and the head's and tail's copy sources.
 * Returns OK, NEED_TABLE / NEED_WRITEBACK (see need.ts; call again), NO_SPACE, CORRUPT, INVALID.
 */
export function planWrite(guestOffsetF: f64, lengthF: f64): Status {
  const guestOffset = <u64>guestOffsetF;
  const end = guestOffset + <u64>lengthF;
  if (!(lengthF > 0)) return Status.INVALID;
  let status = locateEntry(guestOffset, true);
  if (status != Status.OK) return status;
  const clusterMask = (<u64>1 << clusterBits) - 1;
  const firstCluster = guestOffset & ~clusterMask;
  // Runs stay inside one L2 slice: every entry of the run is in this slot.
  const sliceGuestBits = clusterBits + sliceIndexBits();
  const sliceEnd = ((guestOffset >> sliceGuestBits) + 1) << sliceGuestBits;
  const entryBytes = <usize>1 << l2EntryBits;
  let entry = loadBE64(entryAddress);
  let bitmap: u64 = hasExtendedL2 ? loadBE64(entryAddress + 8) : 0;
  const clusterEnd = firstCluster + clusterMask + 1;
  const subclusterMaskBytes = (<u64>1 << subclusterBits) - 1;

  // Extended L2, an owned cluster whose written subclusters are not all allocated: fill them in
  // place (one cluster per plan).
  if (hasExtendedL2 && isOwnedCluster(entry, bitmap) && !isWritableInPlace(entry, bitmap)) {
    const dataEnd = min(end, clusterEnd);
    const hostCluster = entry & L2E_OFFSET_MASK;
    const mask = subclusterMask(guestOffset - firstCluster, dataEnd - firstCluster);
    if ((<u32>bitmap & <u32>mask) != <u32>mask) {
      const guestStart = guestOffset & ~subclusterMaskBytes;
      const guestEnd = min(clusterEnd, (dataEnd + subclusterMaskBytes) & ~subclusterMaskBytes);
      writePlan(PlanKind.FILL_SUBCLUSTERS, guestStart, guestEnd, hostCluster + (guestStart - firstCluster));
      return describeEdges(guestOffset, dataEnd, false, hostCluster - firstCluster);
    }
    // Every written subcluster is allocated: plain in place, within this cluster.
    writePlan(PlanKind.IN_PLACE, guestOffset, dataEnd, hostCluster + (guestOffset - firstCluster));
    return describeEdges(guestOffset, dataEnd, false, 0);
  }

  if (isWritableInPlace(entry, bitmap)) {
    // With an external data file the entry's offset is the data file offset (it may be 0).
    const hostStart = (entry & L2E_OFFSET_MASK) + (guestOffset & clusterMask);
    let runEnd = firstCluster + clusterMask + 1;
    let nextHost = (entry & L2E_OFFSET_MASK) + clusterMask + 1;
    let at = entryAddress + entryBytes;
    while (runEnd < end && runEnd < sliceEnd) {
      entry = loadBE64(at);
      bitmap = hasExtendedL2 ? loadBE64(at + 8) : 0;
      if (!isWritableInPlace(entry, bitmap)) break;
      if ((entry & L2E_OFFSET_MASK) != nextHost) break;
      runEnd += clusterMask + 1;
      nextHost += clusterMask + 1;
      at += entryBytes;
    }
    const guestEnd = min(end, runEnd);
    writePlan(PlanKind.IN_PLACE, guestOffset, guestEnd, hostStart);
    return describeEdges(guestOffset, guestEnd, false, 0);
  }

  // Count the clusters from here that need allocating, up to the end, the slice and the cap.
  // With extended L2, clusters without a host cluster get subcluster allocation and are not
  // mixed with clusters whose old data must be copied whole.
  const bySubcluster = hasExtendedL2 && hasNoHostCluster(entry);
  let clusterCount: u64 = 1;
  let at = entryAddress + entryBytes;
  while (clusterCount < MAX_RUN_CLUSTERS) {
    const next = firstCluster + (clusterCount << clusterBits);
    if (next >= end || next >= sliceEnd) break;
    entry = loadBE64(at);
    bitmap = hasExtendedL2 ? loadBE64(at + 8) : 0;
    if (isWritableInPlace(entry, bitmap)) break;
    if (hasExtendedL2 && (hasNoHostCluster(entry) != bySubcluster || isOwnedCluster(entry, bitmap))) break;
    clusterCount++;
    at += entryBytes;
  }
  let hostCluster = firstCluster; // external data file: data clusters are not refcounted; guest offset == host offset
  let taken: u64 = 0;
  if (!hasExternalData) {
    status = allocateClusters(clusterCount);
    if (status != Status.OK) return status;
    clusterCount = allocatedCount; // may be fewer (refcount slice boundary)
    hostCluster = allocatedHost;
    taken = allocatedCount;
  }
  let guestStart = firstCluster;
  let guestEnd = firstCluster + (clusterCount << clusterBits);
  let kind = PlanKind.ALLOCATE;
  if (bySubcluster) {
    kind = PlanKind.ALLOCATE_SUBCLUSTERS;
    guestStart = guestOffset & ~subclusterMaskBytes;
    guestEnd = min(guestEnd, (end + subclusterMaskBytes) & ~subclusterMaskBytes);
  }
  writePlan(kind, guestStart, guestEnd, hostCluster + (guestStart - firstCluster));
  setPlanField(PlanField.TAKEN_HOST, <f64>hostCluster);
  setPlanField(PlanField.TAKEN_CLUSTERS, <f64>taken);
  const dataEnd = min(end, guestEnd);
  status = describeEdges(guestOffset, dataEnd, !hasExternalData, hostCluster - firstCluster);
  if (status != Status.OK) {
    for (let i: u64 = 0; i < taken; i++) addRefcount((hostCluster >> clusterBits) + i, -1);
    return status;
  }
  // A tail that needs real data, in a last cluster written from its start, may stay pending
  // (deferred copy-on-write; plain clusters only).
  const deferrable = kind == PlanKind.ALLOCATE && !hasExtendedL2 && !hasExternalData &&
    copySourceOf(PlanField.TAIL) != CopySource.NONE && guestOffset + clusterMask + 1 <= guestEnd;
  setPlanField(PlanField.TAIL_DEFERRABLE, deferrable ? 1 : 0);
  return Status.OK;
}

// Fills the plan record's head and tail copy records: [GUEST_START, dataStart) and [dataEnd,
// GUEST_END) of the plan just written, going to host bytes at guest + `hostMinusGuest` (fresh
// clusters when `targetFresh`). Their clusters' L2 slice is cached (the plan's own).
function describeEdges(dataStart: u64, dataEnd: u64, targetFresh: bool, hostMinusGuest: u64): Status {
  const guestStart = <u64>load<f64>(regionOffset(Region.PLAN) + (<usize>PlanField.GUEST_START << 3));
  const guestEnd = <u64>load<f64>(regionOffset(Region.PLAN) + (<usize>PlanField.GUEST_END << 3));
  const status = describeCopy(PlanField.HEAD, guestStart, dataStart - guestStart, targetFresh, guestStart + hostMinusGuest);
  if (status != Status.OK) return status;
  return describeCopy(PlanField.TAIL, dataEnd, guestEnd - dataEnd, targetFresh, dataEnd + hostMinusGuest);
}

/**
 * Marks the subclusters of the subcluster-aligned guest run [guestStart, guestEnd) allocated
 * (and not zero) after an ALLOCATE_SUBCLUSTERS or FILL_SUBCLUSTERS plan's data is written,
 * resuming after `alreadyCommitted` clusters. With `isNewCluster`, each cluster's entry points at
 * its new host cluster (hostStart is the host offset of guestStart); otherwise entries keep theirs.
 * Returns OK, or NEED_TABLE (call again with committedCountOf() as alreadyCommitted), CORRUPT.
 */
export function commitSubclusters(guestStartF: f64, guestEndF: f64, hostStartF: f64, isNewCluster: i32, alreadyCommitted: i32): Status {
  const guestStart = <u64>guestStartF;
  const guestEnd = <u64>guestEndF;
  const clusterMask = (<u64>1 << clusterBits) - 1;
  const firstCluster = guestStart & ~clusterMask;
  const hostBase = <u64>hostStartF - (guestStart - firstCluster);
  committed = alreadyCommitted;
  freedCount = 0;
  while (true) {
    const clusterStart = firstCluster + (<u64>committed << clusterBits);
    if (clusterStart >= guestEnd) break;
    const status = locateEntry(clusterStart, false);
    if (status != Status.OK) return status;
    const from = max(guestStart, clusterStart) - clusterStart;
    const to = min(guestEnd, clusterStart + clusterMask + 1) - clusterStart;
    const mask = subclusterMask(from, to);
    if (isNewCluster) storeBE64(entryAddress, (hostBase + (<u64>committed << clusterBits)) | QCOW_OFLAG_COPIED);
    const bitmap = loadBE64(entryAddress + 8);
    storeBE64(entryAddress + 8, (bitmap & ~(mask << 32)) | mask);
    markSlotDirty(CacheId.L2, entrySlot);
    committed++;
  }
  return Status.OK;
}

/**
 * Points the L2 entries of the cluster-aligned guest run [guestStart, guestStart + clusterCount
 * clusters) at the host clusters from hostStart (COPIED; every subcluster allocated with extended
 * L2), resuming after the first `alreadyCommitted` clusters. Writes the host cluster offsets the
 * old entries of this call's clusters referenced into the FREED region (freedCountOf()); the
 * caller collects them over resumed calls and releases them once the new entries are on disk.
 * Returns OK, or NEED_TABLE (call again with committedCountOf() as alreadyCommitted), CORRUPT.
 */
export function commitAllocation(guestStartF: f64, clusterCount: i32, hostStartF: f64, alreadyCommitted: i32): Status {
  const guestStart = <u64>guestStartF;
  const hostStart = <u64>hostStartF;
  committed = alreadyCommitted;
  freedCount = 0;
  while (committed < clusterCount) {
    const guest = guestStart + (<u64>committed << clusterBits);
    const status = locateEntry(guest, false);
    if (status != Status.OK) return status;
    // Release what the old entry referenced (its refcount drops after the new entry is on disk).
    recordFreed(loadBE64(entryAddress));
    storeBE64(entryAddress, (hostStart + (<u64>committed << clusterBits)) | QCOW_OFLAG_COPIED);
    if (hasExtendedL2) storeBE64(entryAddress + 8, 0x00000000ffffffff);
    markSlotDirty(CacheId.L2, entrySlot);
    committed++;
  }
  return Status.OK;
}

// Appends to FREED the host clusters the L2 entry `old` references (none with an external data
// file, whose data clusters are not refcounted): a compressed cluster's data may touch several.
function recordFreed(old: u64): void {
  if (hasExternalData) return;
  const freed = regionOffset(Region.FREED);
  if (old & QCOW_OFLAG_COMPRESSED) {
    const hostOffset = compressedHostOffset(old, clusterBits);
    const sectors = compressedSectorCount(old, clusterBits);
    const last = (hostOffset & ~<u64>511) + sectors * 512 - 1;
    for (let c = hostOffset >> clusterBits; c <= last >> clusterBits; c++) {
      store<f64>(freed + (<usize>freedCount << 3), <f64>(c << clusterBits));
      freedCount++;
    }
  } else if ((old & L2E_OFFSET_MASK) != 0) {
    store<f64>(freed + (<usize>freedCount << 3), <f64>(old & L2E_OFFSET_MASK));
    freedCount++;
  }
}

/** Clusters the last commitAllocation or zeroClusters call completed. */
export function committedCountOf(): i32 { return committed; }
/** Host cluster offsets (f64) the last commitAllocation call wrote to the FREED region. */
export function freedCountOf(): i32 { return freedCount; }

/** First dirty L1 entry index (or -1), end of the dirty range, and the L1 change counter. */
export function l1DirtyFirstOf(): f64 { return l1DirtyEnd == 0 ? -1 : <f64>l1DirtyFirst; }
export function l1DirtyEndOf(): f64 { return <f64>l1DirtyEnd; }
export function l1ChangeCount(): u32 { return l1Generation; }
/** Marks the L1 table written, if it did not change since `generation`. */
export function markL1Clean(generation: u32): bool {
  if (generation != l1Generation) return false;
  l1DirtyFirst = <u64>-1;
  l1DirtyEnd = 0;
  return true;
}

/** What zeroClusters leaves in each entry. */
export enum ZeroMode {
  /** The zero flag (v3) or all-zero subclusters (extended L2): reads as zeros over any backing. */
  ZERO_FLAG = 0,
  /** An unallocated entry: reads as zeros only without a backing file (v2 without backing). */
  UNALLOCATE = 1,
}

/**
 * Makes the whole guest clusters [guestStart, guestStart + clusterCount clusters) read as zeros
 * by metadata alone (no data is written), resuming after `alreadyDone` clusters. Old host clusters
 * go to the FREED region as in commitAllocation. With UNALLOCATE, clusters without an L2 table are
 * left alone (they already read as zeros); with ZERO_FLAG an L2 table is allocated if needed.
 * Returns OK, NEED_TABLE / NEED_WRITEBACK (call again with committedCountOf()), NO_SPACE, CORRUPT.
 */
export function zeroClusters(guestStartF: f64, clusterCount: i32, mode: i32, alreadyDone: i32): Status {
  const guestStart = <u64>guestStartF;
  committed = alreadyDone;
  freedCount = 0;
  while (committed < clusterCount) {
    const guest = guestStart + (<u64>committed << clusterBits);
    const l1Index = l1IndexOf(guest);
    if (l1Index >= <u64>l1EntryCount) return Status.INVALID;
    if (mode == ZeroMode.UNALLOCATE && (loadBE64(l1EntryAddress(l1Index)) & L1E_OFFSET_MASK) == 0) {
      committed++;
      continue;
    }
    const status = locateEntry(guest, true);
    if (status != Status.OK) return status;
    recordFreed(loadBE64(entryAddress));
    if (hasExtendedL2) {
      storeBE64(entryAddress, 0);
      storeBE64(entryAddress + 8, mode == ZeroMode.ZERO_FLAG ? 0xffffffff00000000 : 0);
    } else {
      storeBE64(entryAddress, mode == ZeroMode.ZERO_FLAG ? QCOW_OFLAG_ZERO : 0);
    }
    markSlotDirty(CacheId.L2, entrySlot);
    committed++;
  }
  return Status.OK;
}

/**
 * Extended L2: makes the whole subclusters of [guestStartF, guestEndF) (subcluster-aligned,
 * inside one cluster) read as zeros by setting their zero bits and clearing their allocation
 * bits; the cluster keeps its host cluster, if any. Returns OK, NEED_TABLE / NEED_WRITEBACK
 * (call again), UNSUPPORTED for a compressed cluster (which has no subclusters: write zeros
 * instead), NO_SPACE, CORRUPT.
 */
export function zeroSubclusters(guestStartF: f64, guestEndF: f64): Status {
  const guestStart = <u64>guestStartF;
  const clusterStart = guestStart & ~((<u64>1 << clusterBits) - 1);
  const status = locateEntry(guestStart, true);
  if (status != Status.OK) return status;
  if (loadBE64(entryAddress) & QCOW_OFLAG_COMPRESSED) return Status.UNSUPPORTED;
  const mask = subclusterMask(guestStart - clusterStart, <u64>guestEndF - clusterStart);
  storeBE64(entryAddress + 8, (loadBE64(entryAddress + 8) & ~mask) | (mask << 32));
  markSlotDirty(CacheId.L2, entrySlot);
  return Status.OK;
}
