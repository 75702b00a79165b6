// SPDX-License-Identifier: MIT
// The consistency check's second step and the repair: compares the stored refcounts (one refcount
// block at a time, kept in STORED) with the references counted in COMPUTED, reporting
// corruptions and leaks; then plans and applies in-place refcount fixes (what `qemu-img check -r`
// rewrites), never allocating a block or raising a refcount a bad reference asks for.

import { REFT_OFFSET_MASK, REFT_RESERVED_MASK, loadBE64 } from './format';
import { clusterBits, clusterBytes } from './geometry';
import { refblockEntryBits } from './refcount';
import {
  CheckCount, CheckEvent, bump, computedPtr, event, fileBytes, fileClusters, hi, isTainted, isUnaligned, lo,
  loadRefcount, noteHighestCluster, referencedEnd, reftableEntries, reftablePtr, storeRefcount, storedPtr, tablePtr,
} from './check-state';

/** What planRepair fixes. */
export enum RepairMode {
  NONE = 0,
  /** Lowers stored refcounts that exceed the references (qemu-img check -r leaks). */
  LEAKS = 1,
  /** Also raises refcounts below the references where every reference is valid (-r all). */
  ALL = 2,
}

/** Why planRepair cannot fix a refcount in place (CheckEvent.UNREPAIRABLE argument f). */
export enum RepairBlocker {
  NONE = 0,
  /** A reference to the cluster is itself invalid (an unaligned offset). */
  REFERENCE_INVALID = 1,
  /** No refcount block covers the cluster: one would have to be allocated. */
  REFBLOCK_MISSING = 2,
  /** The covering block's table entry is invalid, the block lies outside the file or is shared. */
  REFBLOCK_UNUSABLE = 3,
  /** The stored refcount cannot be read. */
  REFCOUNT_UNREADABLE = 4,
}

let repairMode: RepairMode = RepairMode.NONE;

/** Forgets the planned repair (checkBegin). */
export function resetRepairMode(): void { repairMode = RepairMode.NONE; }

// ---------------------------------------------------------------------------------------------
// Step 2: compare with the stored refcounts.
// ---------------------------------------------------------------------------------------------

/** blockLocation: no block (every refcount in it reads as 0). */
export const BLOCK_ABSENT: f64 = -1;
/** blockLocation: the block cannot be read (unaligned). */
export const BLOCK_UNREADABLE: f64 = -2;

// Where refcount block `index` is: its host offset to read, BLOCK_ABSENT (no block, or a block
// past the end of the file: every refcount in it reads as 0) or BLOCK_UNREADABLE (unaligned,
// which QEMU's qcow2_get_refcount refuses).
export function blockLocation(index: u64): f64 {
  if (index >= reftableEntries) return BLOCK_ABSENT;
  const blockOffset = loadBE64(reftablePtr + (<usize>index << 3)) & REFT_OFFSET_MASK;
  if (blockOffset == 0) return BLOCK_ABSENT;
  if (isUnaligned(blockOffset)) return BLOCK_UNREADABLE;
  return blockOffset >= fileBytes ? BLOCK_ABSENT : <f64>blockOffset;
}

/** Clusters the compare covers: the file's, and the one after it if it is referenced. */
@inline function comparedClusters(): u64 { return max(fileClusters, referencedEnd); }
@inline export function comparedBlocks(): u64 {
  return (comparedClusters() + (<u64>1 << refblockEntryBits()) - 1) >> refblockEntryBits();
}

/** Refcount blocks covering the compared clusters: the compareBlock / repairBlock indices. */
export function compareBlockCount(): i32 { return <i32>comparedBlocks(); }

/**
 * Host offset to read refcount block `index` from into CHECK_TABLE before compareBlock(index, 1);
 * -1 when there is nothing to read (every refcount is 0), -2 when the block cannot be read (its
 * offset is unaligned); for both, call compareBlock(index, 0).
 */
export function compareBlockHostOffset(index: i32): f64 { return index < 0 ? BLOCK_ABSENT : blockLocation(<u64>index); }

/**
 * Keeps refcount block `index` (read into CHECK_TABLE when `isLoaded` is 1, else all zeros) in
 * STORED and compares its compared clusters' stored refcounts with their references: below is a
 * corruption, above a leak; with an unreadable block each referenced-or-not cluster is a check
 * error. Updates the image end offset (the highest cluster stored or referenced).
 */
export function compareBlock(index: i32, isLoaded: i32): void {
  if (index < 0 || <u64>index >= comparedBlocks()) return;
  const first = <u64>index << refblockEntryBits();
  const end = min(first + (<u64>1 << refblockEntryBits()), comparedClusters());
  const storedBlock = storedPtr + <usize>(<u64>index << clusterBits);
  const isUnreadable = blockLocation(<u64>index) == BLOCK_UNREADABLE;
  if (isLoaded != 0 && !isUnreadable) memory.copy(storedBlock, tablePtr, <usize>clusterBytes());
  else memory.fill(storedBlock, 0, <usize>clusterBytes());
  for (let cluster = first; cluster < end; cluster++) {
    if (isUnreadable) {
      bump(CheckCount.CHECK_ERRORS);
      event(CheckEvent.REFCOUNT_UNREADABLE, <f64>cluster);
      continue;
    }
    const stored = loadRefcount(storedPtr, cluster);
    const references = loadRefcount(computedPtr, cluster);
    if (stored != 0 || references != 0) noteHighestCluster(cluster);
    if (stored == references) continue;
    bump(stored < references ? CheckCount.CORRUPTIONS : CheckCount.LEAKS);
    event(CheckEvent.REFCOUNT_MISMATCH, <f64>cluster, hi(stored), lo(stored), hi(references), lo(references), 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Repair.
// ---------------------------------------------------------------------------------------------

// Whether repairMode asks to rewrite the refcount of cluster `cluster`: a compared mismatch the
// mode covers (leaks for LEAKS; leaks and too-low refcounts for ALL).
function isWanted(cluster: u64): bool {
  if (cluster >= comparedClusters() || blockLocation(cluster >> refblockEntryBits()) == BLOCK_UNREADABLE) return false;
  const stored = loadRefcount(storedPtr, cluster);
  const references = loadRefcount(computedPtr, cluster);
  if (stored == references) return false;
  return stored > references ? repairMode != RepairMode.NONE : repairMode == RepairMode.ALL;
}

// Why the refcount of cluster `cluster` cannot be rewritten in place, NONE when it can: only an
// existing, valid, unshared refcount block inside the file is ever written, and a refcount is
// only raised when every reference to the cluster is valid.
function repairBlocker(cluster: u64): RepairBlocker {
  const index = cluster >> refblockEntryBits();
  if (blockLocation(index) == BLOCK_UNREADABLE) return RepairBlocker.REFCOUNT_UNREADABLE;
  if (loadRefcount(storedPtr, cluster) < loadRefcount(computedPtr, cluster) && isTainted(cluster)) return RepairBlocker.REFERENCE_INVALID;
  if (index >= reftableEntries) return RepairBlocker.REFBLOCK_MISSING;
  const entry = loadBE64(reftablePtr + (<usize>index << 3));
  const blockOffset = entry & REFT_OFFSET_MASK;
  if (blockOffset == 0) return RepairBlocker.REFBLOCK_MISSING;
  if ((entry & REFT_RESERVED_MASK) != 0 || blockOffset >= fileBytes || clusterBytes() > fileBytes - blockOffset) {
    return RepairBlocker.REFBLOCK_UNUSABLE;
  }
  const blockCluster = blockOffset >> clusterBits;
  if (loadRefcount(computedPtr, blockCluster) != 1 || isTainted(blockCluster)) return RepairBlocker.REFBLOCK_UNUSABLE;
  return RepairBlocker.NONE;
}

// Whether the repair rewrites the refcount of cluster `cluster`.
export function isFixed(cluster: u64): bool { return isWanted(cluster) && repairBlocker(cluster) == RepairBlocker.NONE; }

/**
 * Chooses what the repair fixes (RepairMode), after a full pass. A refcount is only rewritten in
 * place, in an existing, valid, unshared refcount block inside the file, and only raised when
 * every reference is valid; any other mismatch the mode covers (and, with ALL, a referenced
 * cluster whose refcount cannot be read) counts UNREPAIRABLE, with an event. Sets LEAKS_PLANNED
 * and CORRUPTIONS_PLANNED.
 */
export function planRepair(mode: i32): void {
  repairMode = mode == RepairMode.ALL ? RepairMode.ALL : mode == RepairMode.LEAKS ? RepairMode.LEAKS : RepairMode.NONE;
  if (repairMode == RepairMode.NONE) return;
  const end = comparedClusters();
  for (let cluster: u64 = 0; cluster < end; cluster++) {
    const references = loadRefcount(computedPtr, cluster);
    const isUnreadable = blockLocation(cluster >> refblockEntryBits()) == BLOCK_UNREADABLE;
    if (!isWanted(cluster) && !(isUnreadable && references != 0 && repairMode == RepairMode.ALL)) continue;
    const stored = isUnreadable ? 0 : loadRefcount(storedPtr, cluster);
    const blocker = repairBlocker(cluster);
    if (blocker == RepairBlocker.NONE) {
      bump(stored > references ? CheckCount.LEAKS_PLANNED : CheckCount.CORRUPTIONS_PLANNED);
      continue;
    }
    bump(CheckCount.UNREPAIRABLE);
    event(CheckEvent.UNREPAIRABLE, <f64>cluster, hi(stored), lo(stored), hi(references), lo(references), <f64>blocker);
  }
}

/**
 * Host offset of refcount block `index` when planRepair chose to change a refcount in it (read
 * it into CHECK_TABLE, call repairBlock, write it back); -1 when nothing in it changes.
 */
export function repairBlockHostOffset(index: i32): f64 {
  if (index < 0 || <u64>index >= comparedBlocks() || repairMode == RepairMode.NONE) return -1;
  const first = <u64>index << refblockEntryBits();
  const end = min(first + (<u64>1 << refblockEntryBits()), comparedClusters());
  for (let cluster = first; cluster < end; cluster++) {
    if (isFixed(cluster)) return blockLocation(<u64>index);
  }
  return -1;
}

/**
 * Sets, in refcount block `index` (freshly read into CHECK_TABLE), every refcount planRepair
 * chose to fix to the cluster's references, and records it in STORED. Counts LEAKS_FIXED or
 * CORRUPTIONS_FIXED and emits a repairing REFCOUNT_MISMATCH event per change. Returns the number
 * of refcounts changed (TypeScript then writes the block back).
 */
export function repairBlock(index: i32): i32 {
  if (index < 0 || <u64>index >= comparedBlocks() || repairMode == RepairMode.NONE) return 0;
  const first = <u64>index << refblockEntryBits();
  const end = min(first + (<u64>1 << refblockEntryBits()), comparedClusters());
  let changed: i32 = 0;
  for (let cluster = first; cluster < end; cluster++) {
    if (!isFixed(cluster)) continue;
    const stored = loadRefcount(storedPtr, cluster);
    const references = loadRefcount(computedPtr, cluster);
    storeRefcount(tablePtr, cluster - first, references);
    storeRefcount(storedPtr, cluster, references);
    bump(stored > references ? CheckCount.LEAKS_FIXED : CheckCount.CORRUPTIONS_FIXED);
    event(CheckEvent.REFCOUNT_MISMATCH, <f64>cluster, hi(stored), lo(stored), hi(references), lo(references), 1);
    changed++;
  }
  return changed;
}
