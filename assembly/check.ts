// SPDX-License-Identifier: MIT
// Image consistency check and in-place repair, as `qemu-img check` (QEMU 7.2) does them: rebuilds
// the refcount every host cluster should have, compares it with the stored refcounts, checks
// OFLAG_COPIED, and fixes refcounts and flags inside table chunks. Sans I/O: TypeScript
// (bindings/qcow2-check.ts) reads one table chunk at a time into CHECK_TABLE. It never allocates
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

import {
  L1E_OFFSET_MASK, L1E_RESERVED_MASK, L2E_OFFSET_MASK, L2E_STD_RESERVED_MASK, L2_BITMAP_ALLOC_MASK,
  MAX_CLUSTER_BITS, MAX_L1_BYTES, MAX_REFCOUNT_ORDER, MAX_REFTABLE_BYTES, MAX_SNAPSHOTS,
  MAX_SNAPSHOT_EXTRA_DATA_BYTES, MIN_CLUSTER_BITS, MIN_EXTL2_CLUSTER_BITS, QCOW_OFLAG_COMPRESSED,
  QCOW_OFLAG_COPIED, QCOW_OFLAG_ZERO, REFT_OFFSET_MASK, REFT_RESERVED_MASK, SNAPSHOT_HEADER_BYTES,
  loadBE16, loadBE32, loadBE64, storeBE16, storeBE32, storeBE64, compressedHostOffset, compressedSectorCount,
} from './format';
import { loadRefcount as loadRefcountOf, maxRefcountOf, storeRefcount as storeRefcountOf } from './refcount-codec';
import { Status } from './status';

/** Check regions, for checkRegionOffset / checkRegionBytes. */
export enum CheckRegion {
  TABLE = 0,
  LIST = 1,
  REFTABLE = 2,
  EVENTS = 3,
}

/** What an L1 walk does (l1WalkBegin). */
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

/** What planRepair fixes. */
export enum RepairMode {
  NONE = 0,
  /** Lowers stored refcounts that exceed the references (qemu-img check -r leaks). */
  LEAKS = 1,
  /** Also raises refcounts below the references where every reference is valid (-r all). */
  ALL = 2,
}

/** Counters, for checkCount. */
export enum CheckCount {
  CORRUPTIONS = 0,
  LEAKS = 1,
  CHECK_ERRORS = 2,
  ALLOCATED_CLUSTERS = 3,
  FRAGMENTED_CLUSTERS = 4,
  COMPRESSED_CLUSTERS = 5,
  /** (highest cluster with a stored refcount or a reference + 1) * cluster size (computed). */
  IMAGE_END_OFFSET = 6,
  /** The part of CORRUPTIONS that is OFLAG_COPIED mismatches. */
  COPIED_CORRUPTIONS = 7,
  /** planRepair: refcounts it will lower. */
  LEAKS_PLANNED = 8,
  /** planRepair: refcounts it will raise. */
  CORRUPTIONS_PLANNED = 9,
  /** planRepair: mismatches the mode covers that cannot be fixed in place. */
  UNREPAIRABLE = 10,
  /** Refcounts repairBlock lowered. */
  LEAKS_FIXED = 11,
  /** Refcounts repairBlock raised, plus OFLAG_COPIED bits the repair walks changed. */
  CORRUPTIONS_FIXED = 12,
  /** Snapshot table entries snapshotTableConsume parsed. */
  SNAPSHOTS_PARSED = 13,
  /** Bytes of the snapshot table, to the end of the last parsed entry's name. */
  SNAPSHOT_TABLE_BYTES = 14,
}
const COUNT_SLOTS: i32 = 15;

/**
 * Event records: what TypeScript turns into messages worded like QEMU's. Arguments a..g are f64;
 * a "pair" is a u64 split into two of them, the high 32 bits then the low 32 bits.
 */
export enum CheckEvent {
  /** a cluster index, b c stored refcount pair, d e references pair, f 1 when repairing. */
  REFCOUNT_MISMATCH = 1,
  /** a b host offset pair: a cluster whose count would pass the refcount width. */
  REFCOUNT_OVERFLOW = 2,
  /** a b L2 table offset pair (not cluster-aligned). */
  L2_TABLE_UNALIGNED = 3,
  /** a b data cluster offset pair (not cluster-aligned); c 1 when the entry holds data. */
  DATA_UNALIGNED = 4,
  /** a b host offset pair: a compressed cluster whose entry has OFLAG_COPIED. */
  COMPRESSED_COPIED = 5,
  /** a L2 index, b c entry pair: a compressed cluster in an image with a data file. */
  COMPRESSED_WITH_DATA_FILE = 6,
  /** a L2 index, b c entry pair: a compressed cluster with a subcluster bitmap. */
  COMPRESSED_WITH_BITMAP = 7,
  /** a b host offset pair: a subcluster both allocated and zero. */
  SUBCLUSTER_ALLOC_AND_ZERO = 8,
  /** a b entry pair: an unallocated cluster with allocated subclusters. */
  UNALLOCATED_WITH_BITMAP = 9,
  /** a refcount table index: reserved bits set. */
  REFTABLE_RESERVED = 10,
  /** a refcount table index: the block offset is not cluster-aligned. */
  REFBLOCK_UNALIGNED = 11,
  /** a refcount table index: the block lies past the end of the image. */
  REFBLOCK_OUTSIDE = 12,
  /** a refcount table index, b c pair: the block cluster's references (should be 1). */
  REFBLOCK_REFCOUNT = 13,
  /** a cluster index whose stored refcount cannot be read (its block offset is unaligned). */
  REFCOUNT_UNREADABLE = 14,
  /** a snapshot index, b c L1 offset pair (not cluster-aligned). */
  SNAPSHOT_L1_UNALIGNED = 15,
  /** a snapshot index, b L1 entries (more than 4 Mi). */
  SNAPSHOT_L1_TOO_LARGE = 16,
  /** a snapshot count: internal snapshots in an image with an external data file. */
  SNAPSHOTS_WITH_DATA_FILE = 17,
  /** a L1 index, b c L1 entry pair, d e stored refcount pair, f 1 when repairing. */
  COPIED_L2_TABLE = 18,
  /** a b L2 entry pair, c d stored refcount pair, e 1 when repairing. */
  COPIED_DATA_CLUSTER = 19,
  /** a snapshot index, b extra data bytes (more than 1024). */
  SNAPSHOT_EXTRA_TOO_LARGE = 20,
  /** a snapshots parsed: the table passes 64 MiB. */
  SNAPSHOT_TABLE_TOO_LARGE = 21,
  /** a b host offset pair, c bytes: a range reaching a cluster or more past the end of the file (not counted). */
  RANGE_PAST_END = 22,
  /** a cluster index, b c stored refcount pair, d e references pair, f RepairBlocker. */
  UNREPAIRABLE = 23,
  /** a b entry pair: an L1 entry with reserved bits set. */
  L1_RESERVED = 24,
  /** a b entry pair: a standard L2 entry with reserved bits set. */
  L2_RESERVED = 25,
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

/** Most event records one call keeps; later ones are only counted (checkEventsDropped). */
export const CHECK_EVENT_CAPACITY: i32 = 1024;
/** Bytes of one event record: f64 kind, then seven f64 arguments. */
export const CHECK_EVENT_STRIDE: i32 = 64;
const SNAPSHOT_RECORD_BYTES: u64 = 24;
/** QCOW_MAX_SNAPSHOTS_SIZE: QEMU reads at most 64 MiB of snapshot table. */
const MAX_SNAPSHOT_TABLE_BYTES: u64 = 1024 * 65536;
/** QEMU refuses to check files of more clusters than a C int counts (EFBIG). */
const MAX_FILE_CLUSTERS: u64 = 0x7fffffff;
// 2^53: the largest byte position an f64 holds exactly.
const MAX_EXACT_POSITION: f64 = 9007199254740992.0;

// ---------------------------------------------------------------------------------------------
// Geometry and regions (set by configureCheck).
// ---------------------------------------------------------------------------------------------

let clusterBits: u32 = 16;
let refcountOrder: u32 = 4;
let hasExtendedL2: bool = false;
let hasExternalData: bool = false;
let fileBytes: u64 = 0;
/** Host clusters of the file (the last may be partial). */
let fileClusters: u64 = 0;
let reftableEntries: u64 = 0;
let snapshotCapacity: u32 = 0;
let activeL1Offset: u64 = 0;
let activeL1Entries: u64 = 0;

let tablePtr: usize = 0;
let listPtr: usize = 0;
let reftablePtr: usize = 0;
let eventsPtr: usize = 0;
let snapshotsPtr: usize = 0;
let computedPtr: usize = 0;
let storedPtr: usize = 0;
let taintedPtr: usize = 0;
let arraysEnd: usize = 0;

@inline function clusterBytes(): u64 { return <u64>1 << clusterBits; }
@inline function isUnaligned(hostOffset: u64): bool { return (hostOffset & (clusterBytes() - 1)) != 0; }
/** log2 of the refcount entries in one refcount block. */
@inline function refblockEntryBits(): u32 { return clusterBits + 3 - refcountOrder; }
@inline function l2EntryBits(): u32 { return hasExtendedL2 ? 4 : 3; }
@inline function align16(bytes: u64): u64 { return (bytes + 15) & ~<u64>15; }
@inline function hi(value: u64): f64 { return <f64>(<u32>(value >> 32)); }
@inline function lo(value: u64): f64 { return <f64>(<u32>value); }

// Refcount blocks covering clusters [0, clusters + 1): the file's, and the one after it.
function blocksCovering(clusters: u64, bits: u32, order: u32): u64 {
  const entryBits = bits + 3 - order;
  return (clusters + 1 + (<u64>1 << entryBits) - 1) >> entryBits;
}

/**
 * Bytes of linear memory the check regions take from a 16-byte aligned start, for a file of
 * `fileSize` bytes with clusters of 2^`bits` bytes, refcounts of 2^`order` bits, a refcount table
 * of `reftableBytes` and `snapshotCount` snapshots. -1 for arguments outside their domain or a
 * file of more than 2^31 - 1 clusters (QEMU refuses to check those too).
 */
export function checkRegionsBytes(fileSize: f64, bits: i32, order: i32, reftableBytes: f64, snapshotCount: i32): f64 {
  if (bits < <i32>MIN_CLUSTER_BITS || bits > <i32>MAX_CLUSTER_BITS) return -1;
  if (order < 0 || order > <i32>MAX_REFCOUNT_ORDER) return -1;
  if (!(fileSize >= 0) || fileSize > MAX_EXACT_POSITION || fileSize != Math.floor(fileSize)) return -1;
  if (!(reftableBytes >= 0) || reftableBytes > <f64>MAX_REFTABLE_BYTES || reftableBytes % 8 != 0) return -1;
  if (snapshotCount < 0 || <u32>snapshotCount > MAX_SNAPSHOTS) return -1;
  const cluster = <u64>1 << <u64>bits;
  const clusters = (<u64>fileSize + cluster - 1) >> <u64>bits;
  if (clusters > MAX_FILE_CLUSTERS) return -1;
  return <f64>(<u64>16 + align16(cluster) * 2 + align16(<u64>reftableBytes) +
    align16(<u64>CHECK_EVENT_CAPACITY * CHECK_EVENT_STRIDE) + align16(<u64>snapshotCount * SNAPSHOT_RECORD_BYTES) +
    align16((((clusters + 1) << <u64>order) + 7) >> 3) + blocksCovering(clusters, <u32>bits, <u32>order) * cluster +
    align16((clusters + 8) >> 3));
}

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
  if (!(l1Offset >= 0) || l1Offset > MAX_EXACT_POSITION || !(l1Entries >= 0) || l1Entries * 8 > <f64>MAX_L1_BYTES) return Status.INVALID;
  if (<f64>start + needed > <f64>(<u64>memory.size() << 16)) return Status.NO_MEMORY;
  clusterBits = <u32>bits;
  refcountOrder = <u32>order;
  hasExtendedL2 = extendedL2 != 0;
  hasExternalData = externalData != 0;
  fileBytes = <u64>fileSize;
  fileClusters = (fileBytes + clusterBytes() - 1) >> clusterBits;
  reftableEntries = <u64>reftableBytes >> 3;
  snapshotCapacity = <u32>snapshotCount;
  activeL1Offset = <u64>l1Offset;
  activeL1Entries = <u64>l1Entries;
  let at: usize = (start + 15) & ~<usize>15;
  tablePtr = at; at += <usize>align16(clusterBytes());
  listPtr = at; at += <usize>align16(clusterBytes());
  reftablePtr = at; at += <usize>align16(<u64>reftableBytes);
  eventsPtr = at; at += <usize>align16(<u64>CHECK_EVENT_CAPACITY * CHECK_EVENT_STRIDE);
  snapshotsPtr = at; at += <usize>align16(<u64>snapshotCapacity * SNAPSHOT_RECORD_BYTES);
  computedPtr = at; at += <usize>align16((((fileClusters + 1) << refcountOrder) + 7) >> 3);
  storedPtr = at; at += <usize>(blocksCovering(fileClusters, clusterBits, refcountOrder) << clusterBits);
  taintedPtr = at; at += <usize>align16((fileClusters + 8) >> 3);
  arraysEnd = at;
  memory.fill(reftablePtr, 0, <usize>reftableBytes);
  checkBegin();
  return Status.OK;
}

/** Linear-memory address of a check region (CheckRegion), 0 for an unknown one. */
export function checkRegionOffset(region: i32): usize {
  switch (region) {
    case CheckRegion.TABLE: return tablePtr;
    case CheckRegion.LIST: return listPtr;
    case CheckRegion.REFTABLE: return reftablePtr;
    case CheckRegion.EVENTS: return eventsPtr;
    default: return 0;
  }
}

/** Bytes of a check region (CheckRegion), 0 for an unknown one. */
export function checkRegionBytes(region: i32): usize {
  switch (region) {
    case CheckRegion.TABLE: return <usize>clusterBytes();
    case CheckRegion.LIST: return <usize>clusterBytes();
    case CheckRegion.REFTABLE: return <usize>(reftableEntries << 3);
    case CheckRegion.EVENTS: return <usize>CHECK_EVENT_CAPACITY * CHECK_EVENT_STRIDE;
    default: return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Counters, events and the per-cluster arrays.
// ---------------------------------------------------------------------------------------------

const counts: usize = memory.data(COUNT_SLOTS * 8, 8);
let eventCount: i32 = 0;
let eventsDropped: i32 = 0;
/** One past the highest cluster counted as referenced (QEMU's grown nb_clusters). */
let referencedEnd: u64 = 0;
let highestCluster: u64 = 0;
let repairMode: RepairMode = RepairMode.NONE;

@inline function bump(which: CheckCount): void {
  store<u64>(counts + (<usize>which << 3), load<u64>(counts + (<usize>which << 3)) + 1);
}
@inline function countOf(which: CheckCount): u64 { return load<u64>(counts + (<usize>which << 3)); }
@inline function setCount(which: CheckCount, value: u64): void { store<u64>(counts + (<usize>which << 3), value); }

/** A counter of the current pass (CheckCount), as a number; -1 for an unknown one. */
export function checkCount(which: i32): f64 {
  if (which == CheckCount.IMAGE_END_OFFSET) return <f64>(highestCluster + 1) * <f64>clusterBytes();
  return <u32>which < <u32>COUNT_SLOTS ? <f64>countOf(which) : -1;
}

/** Event records written to CHECK_EVENTS since the last clearCheckEvents (at most CHECK_EVENT_CAPACITY). */
export function checkEventCount(): i32 { return eventCount; }
/** Events not recorded since the last clearCheckEvents because CHECK_EVENTS was full. */
export function checkEventsDropped(): i32 { return eventsDropped; }
/** Empties CHECK_EVENTS (TypeScript calls it after reading the records). */
export function clearCheckEvents(): void { eventCount = 0; eventsDropped = 0; }

function event(kind: CheckEvent, a: f64, b: f64 = 0, c: f64 = 0, d: f64 = 0, e: f64 = 0, f: f64 = 0, g: f64 = 0): void {
  if (eventCount >= CHECK_EVENT_CAPACITY) {
    eventsDropped++;
    return;
  }
  const record = eventsPtr + <usize>eventCount * CHECK_EVENT_STRIDE;
  store<f64>(record, <f64>kind);
  store<f64>(record, a, 8);
  store<f64>(record, b, 16);
  store<f64>(record, c, 24);
  store<f64>(record, d, 32);
  store<f64>(record, e, 40);
  store<f64>(record, f, 48);
  store<f64>(record, g, 56);
  eventCount++;
}

@inline function corruption(): void { bump(CheckCount.CORRUPTIONS); }

// The COMPUTED and STORED arrays and refcount blocks at the image's refcount width.
@inline function loadRefcount(base: usize, index: u64): u64 { return loadRefcountOf(base, index, refcountOrder); }
@inline function storeRefcount(base: usize, index: u64, value: u64): void { storeRefcountOf(base, index, refcountOrder, value); }

@inline function isTainted(cluster: u64): bool {
  return ((<u32>load<u8>(taintedPtr + <usize>(cluster >> 3)) >> <u32>(cluster & 7)) & 1) != 0;
}

@inline function taint(cluster: u64): void {
  const at = taintedPtr + <usize>(cluster >> 3);
  store<u8>(at, <u8>(<u32>load<u8>(at) | (<u32>1 << <u32>(cluster & 7))));
}

/**
 * Resets the counters, events and arrays for a new pass (the refcount table region stays as
 * loaded). An image with an external data file and internal snapshots is a corruption (the
 * snapshots' guest data would have to live in the image file).
 */
export function checkBegin(): void {
  memory.fill(counts, 0, <usize>COUNT_SLOTS * 8);
  memory.fill(computedPtr, 0, arraysEnd - computedPtr);
  eventCount = 0;
  eventsDropped = 0;
  referencedEnd = 0;
  highestCluster = 0;
  repairMode = RepairMode.NONE;
  snapshotParseReset();
  if (hasExternalData && snapshotCapacity > 0) {
    corruption();
    event(CheckEvent.SNAPSHOTS_WITH_DATA_FILE, <f64>snapshotCapacity);
  }
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
    if (cluster + 1 > referencedEnd) referencedEnd = cluster + 1;
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
  if (!(hostOffset >= 0) || !(bytes > 0) || hostOffset > MAX_EXACT_POSITION || bytes > MAX_EXACT_POSITION) return;
  addReferences(<u64>hostOffset, <u64>bytes, false);
}

// ---------------------------------------------------------------------------------------------
// Snapshot table (qcow2 spec, "Snapshots"): entries, each starting 8-aligned: 40 fixed bytes
// (u64 L1 offset, u32 L1 entries, u16 id bytes, u16 name bytes, ..., u32 extra data bytes at
// 36), then the extra data, the id and the name.
// ---------------------------------------------------------------------------------------------

const PHASE_FIXED: i32 = 0;
const PHASE_BODY: i32 = 1;
const PHASE_PADDING: i32 = 2;
const PHASE_DONE: i32 = 3;
const snapshotFixed: usize = memory.data(<i32>SNAPSHOT_HEADER_BYTES, 8);
let snapshotPhase: i32 = PHASE_DONE;
let snapshotFixedBytes: u64 = 0;
let snapshotSkipBytes: u64 = 0;
let snapshotPosition: u64 = 0;
let snapshotsParsed: u32 = 0;

function snapshotParseReset(): void {
  snapshotPhase = snapshotCapacity == 0 ? PHASE_DONE : PHASE_FIXED;
  snapshotFixedBytes = 0;
  snapshotSkipBytes = 0;
  snapshotPosition = 0;
  snapshotsParsed = 0;
}

function finishSnapshotEntry(): void {
  snapshotsParsed++;
  setCount(CheckCount.SNAPSHOTS_PARSED, snapshotsParsed);
  setCount(CheckCount.SNAPSHOT_TABLE_BYTES, snapshotPosition);
  if (snapshotsParsed >= snapshotCapacity) {
    snapshotPhase = PHASE_DONE;
    return;
  }
  snapshotSkipBytes = (8 - (snapshotPosition & 7)) & 7;
  snapshotPhase = snapshotSkipBytes > 0 ? PHASE_PADDING : PHASE_FIXED;
}

function parseSnapshotFixed(): void {
  const record = snapshotsPtr + <usize>(<u64>snapshotsParsed * SNAPSHOT_RECORD_BYTES);
  const extraBytes = <u64>loadBE32(snapshotFixed + 36);
  store<u64>(record, loadBE64(snapshotFixed));
  store<u32>(record, loadBE32(snapshotFixed + 8), 8);
  store<u16>(record, loadBE16(snapshotFixed + 12), 12);
  store<u16>(record, loadBE16(snapshotFixed + 14), 14);
  store<u64>(record, snapshotPosition + extraBytes, 16);
  if (extraBytes > <u64>MAX_SNAPSHOT_EXTRA_DATA_BYTES) {
    corruption();
    event(CheckEvent.SNAPSHOT_EXTRA_TOO_LARGE, <f64>snapshotsParsed, <f64>extraBytes);
  }
  snapshotSkipBytes = extraBytes + <u64>loadBE16(snapshotFixed + 12) + <u64>loadBE16(snapshotFixed + 14);
  if (snapshotSkipBytes == 0) finishSnapshotEntry();
  else snapshotPhase = PHASE_BODY;
}

/**
 * Parses the next `bytes` (at most one cluster) of the snapshot table from CHECK_TABLE:
 * TypeScript feeds consecutive chunks from snapshots_offset while this returns 1. Records each
 * entry's L1 table; an entry with more than 1024 bytes of extra data is a corruption, and so is
 * a table passing 64 MiB (which ends the parse). Returns 1 when it needs more bytes, 0 when done.
 */
export function snapshotTableConsume(bytes: i32): i32 {
  const end = bytes <= 0 ? 0 : min(<u64>bytes, clusterBytes());
  let at: u64 = 0;
  while (at < end && snapshotPhase != PHASE_DONE) {
    if (snapshotPhase == PHASE_FIXED) {
      const take = min(<u64>SNAPSHOT_HEADER_BYTES - snapshotFixedBytes, end - at);
      memory.copy(snapshotFixed + <usize>snapshotFixedBytes, tablePtr + <usize>at, <usize>take);
      snapshotFixedBytes += take;
      at += take;
      snapshotPosition += take;
      if (snapshotFixedBytes == <u64>SNAPSHOT_HEADER_BYTES) {
        snapshotFixedBytes = 0;
        parseSnapshotFixed();
      }
    } else {
      const take = min(snapshotSkipBytes, end - at);
      snapshotSkipBytes -= take;
      at += take;
      snapshotPosition += take;
      if (snapshotSkipBytes == 0) {
        if (snapshotPhase == PHASE_BODY) finishSnapshotEntry();
        else snapshotPhase = PHASE_FIXED;
      }
    }
    if (snapshotPhase != PHASE_DONE && snapshotPosition >= MAX_SNAPSHOT_TABLE_BYTES) {
      corruption();
      event(CheckEvent.SNAPSHOT_TABLE_TOO_LARGE, <f64>snapshotsParsed);
      snapshotPhase = PHASE_DONE;
    }
  }
  return snapshotPhase == PHASE_DONE ? 0 : 1;
}

@inline function snapshotRecord(index: i32): usize { return snapshotsPtr + <usize>(<u64>index * SNAPSHOT_RECORD_BYTES); }

/** Byte position of parsed snapshot `index`'s id in the snapshot table (its name follows); -1 for an unknown index. */
export function snapshotIdPosition(index: i32): f64 {
  return <u32>index < snapshotsParsed ? <f64>load<u64>(snapshotRecord(index), 16) : -1;
}
/** Bytes of parsed snapshot `index`'s id string (0 for an unknown index). */
export function snapshotIdBytes(index: i32): i32 { return <u32>index < snapshotsParsed ? <i32>load<u16>(snapshotRecord(index), 12) : 0; }
/** Bytes of parsed snapshot `index`'s name (0 for an unknown index). */
export function snapshotNameBytes(index: i32): i32 { return <u32>index < snapshotsParsed ? <i32>load<u16>(snapshotRecord(index), 14) : 0; }

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
  const entries: i32 = 1 << (clusterBits - l2EntryBits());
  let nextContiguous: u64 = 0;
  for (let i: i32 = 0; i < entries; i++) {
    const entryPtr = tablePtr + (<usize>i << l2EntryBits());
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
  const entries: i32 = 1 << (clusterBits - l2EntryBits());
  const isWritable = !isUnaligned(l2Offset) && l2Offset + clusterBytes() <= fileBytes;
  let changed: i32 = 0;
  for (let i: i32 = 0; i < entries; i++) {
    const entryPtr = tablePtr + (<usize>i << l2EntryBits());
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

// ---------------------------------------------------------------------------------------------
// Step 2: compare with the stored refcounts.
// ---------------------------------------------------------------------------------------------

const BLOCK_ABSENT: f64 = -1;
const BLOCK_UNREADABLE: f64 = -2;

// Where refcount block `index` is: its host offset to read, BLOCK_ABSENT (no block, or a block
// past the end of the file: every refcount in it reads as 0) or BLOCK_UNREADABLE (unaligned,
// which QEMU's qcow2_get_refcount refuses).
function blockLocation(index: u64): f64 {
  if (index >= reftableEntries) return BLOCK_ABSENT;
  const blockOffset = loadBE64(reftablePtr + (<usize>index << 3)) & REFT_OFFSET_MASK;
  if (blockOffset == 0) return BLOCK_ABSENT;
  if (isUnaligned(blockOffset)) return BLOCK_UNREADABLE;
  return blockOffset >= fileBytes ? BLOCK_ABSENT : <f64>blockOffset;
}

/** Clusters the compare covers: the file's, and the one after it if it is referenced. */
@inline function comparedClusters(): u64 { return max(fileClusters, referencedEnd); }
@inline function comparedBlocks(): u64 {
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
    if (stored != 0 || references != 0) highestCluster = cluster;
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
function isFixed(cluster: u64): bool { return isWanted(cluster) && repairBlocker(cluster) == RepairBlocker.NONE; }

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
