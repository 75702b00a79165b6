// SPDX-License-Identifier: MIT
// Image consistency check and in-place repair, as `qemu-img check` (QEMU 7.2) does them: rebuilds
// the refcount every host cluster should have, compares it with the stored refcounts, checks
// OFLAG_COPIED, and fixes refcounts and flags inside table chunks. Sans I/O: TypeScript
// (bindings/qcow2/qcow2-check.ts) reads one table chunk at a time into CHECK_TABLE. It never allocates
// clusters, grows a table or changes an L2 entry other than its OFLAG_COPIED bit.
//
// The check runs in a core instance of its own; configureCheck places its regions from `start`
// (TypeScript passes fixedRegionsEnd()):
//
//   region      record                                           count
//   ---------   ----------------------------------------------   ------------------------------
//   TABLE       one table chunk as on disk (L1, L2, refcount      1 cluster
//               block, snapshot table)
//   LIST        f64 host offsets of the L2 tables to visit        1 cluster / 8
//   REFTABLE    u64 big-endian refcount table entries, on disk    refcount_table_clusters
//   EVENTS      f64 kind + 7 f64 arguments (message records)      CHECK_EVENT_CAPACITY
//   SNAPSHOTS   u64 L1 offset, u32 L1 entries, u16 id bytes,      nb_snapshots
//               u16 name bytes, u64 id position in the table
//   COMPUTED    references per host cluster, packed at the        clusters of the file + 1
//               image's refcount width (refcount block format)
//   STORED      stored refcounts, whole refcount blocks as read   blocks covering COMPUTED
//   TAINTED     1 bit per host cluster: a reference to it is      clusters of the file + 1
//               invalid (its refcount is never raised)
//
// Like QEMU, a reference reaching a cluster or more past the end of the file is a corruption
// and is not counted, so no counted cluster lies beyond the one after the file's last.
//
// A pass: checkBegin; the snapshot table (snapshotTableConsume); the references (checkAddRange
// for the header, snapshot table and refcount table; l1WalkBegin / l1ChunkProcess /
// l2TableProcess in WalkMode.COUNT over the active L1 and every snapshot's; checkRefblocks);
// compareBlock over every refcount block; OFLAG_COPIED (the active L1 in WalkMode.COPIED).
// A repair after a pass: planRepair; the active L1 in COPIED_CLEAR; repairBlock; COPIED_SET.
//
// This file configures the check and starts a pass; check-state.ts holds the regions, counters
// and events, check-snapshots.ts parses the snapshot table, check-walk.ts counts references and
// walks OFLAG_COPIED, check-refcounts.ts compares and repairs refcounts.

import { MAX_EXACT_POSITION, MAX_L1_BYTES, MIN_EXTL2_CLUSTER_BITS } from './format';
import { hasExternalData, setGeometry } from './geometry';
import { setRefcountGeometry } from './refcount';
import {
  CheckEvent, checkRegionsBytes, corruption, event, placeCheckRegions, resetCheckState, snapshotCapacity,
} from './check-state';
import { snapshotParseReset } from './check-snapshots';
import { resetRepairMode } from './check-refcounts';
import { Status } from './status';

/**
 * Sets the geometry and places the check regions from linear-memory address `start`. The inputs
 * come from the parsed header; `l1Offset`/`l1Entries` locate the active L1 table. Then
 * TypeScript copies the refcount table (raw big-endian bytes) into CHECK_REFTABLE, and starts a
 * pass with checkBegin. Returns OK; INVALID for arguments outside their domain (as
 * checkRegionsBytes); NO_MEMORY when memory ends before start + checkRegionsBytes(...).
 */
export function configureCheck(start: usize, fileSize: f64, bits: i32, order: i32, extendedL2: i32, externalData: i32,
                               reftableBytes: f64, snapshotCount: i32, l1Offset: f64, l1Entries: f64): Status {
  const needed = checkRegionsBytes(fileSize, bits, order, reftableBytes, snapshotCount);
  if (needed < 0) return Status.INVALID;
  if (extendedL2 != 0 && bits < <i32>MIN_EXTL2_CLUSTER_BITS) return Status.INVALID;
  if (!(l1Offset >= 0) || l1Offset > <f64>MAX_EXACT_POSITION || !(l1Entries >= 0) || l1Entries * 8 > <f64>MAX_L1_BYTES) return Status.INVALID;
  if (<f64>start + needed > <f64>(<u64>memory.size() << 16)) return Status.NO_MEMORY;
  // The check instance maps nothing: the virtual size and the L1 table of geometry.ts stay 0.
  setGeometry(<u32>bits, extendedL2 != 0, externalData != 0, 0, 0);
  setRefcountGeometry(<u32>order, 0);
  placeCheckRegions(start, fileSize, reftableBytes, snapshotCount, l1Offset, l1Entries);
  checkBegin();
  return Status.OK;
}

/**
 * Resets the counters, events and arrays for a new pass (the refcount table region stays as
 * loaded). An image with an external data file and internal snapshots is a corruption (the
 * snapshots' guest data would have to live in the image file).
 */
export function checkBegin(): void {
  resetCheckState();
  resetRepairMode();
  snapshotParseReset();
  if (hasExternalData && snapshotCapacity > 0) {
    corruption();
    event(CheckEvent.SNAPSHOTS_WITH_DATA_FILE, <f64>snapshotCapacity);
  }
}
