// SPDX-License-Identifier: MIT
// The consistency check's shared state (check.ts describes a pass): the check regions placed
// from a start address and their sizes, the counters, the event records, the per-cluster arrays
// (COMPUTED and STORED at the image's refcount width, TAINTED bits) and how far references
// reach. The geometry is geometry.ts's and refcount.ts's, set by configureCheck.

import { MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, MAX_EXACT_POSITION, MAX_REFCOUNT_ORDER, MAX_REFTABLE_BYTES, MAX_SNAPSHOTS } from './format';
import { clusterBits, clusterBytes } from './geometry';
import { refcountOrder } from './refcount';
import { loadRefcount as loadRefcountOf, storeRefcount as storeRefcountOf } from './refcount-codec';

/** Check regions, for checkRegionOffset / checkRegionBytes. */
export enum CheckRegion {
  TABLE = 0,
  LIST = 1,
  REFTABLE = 2,
  EVENTS = 3,
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

/** Most event records one call keeps; later ones are only counted (checkEventsDropped). */
export const CHECK_EVENT_CAPACITY: i32 = 1024;
/** Bytes of one event record: f64 kind, then seven f64 arguments. */
export const CHECK_EVENT_STRIDE: i32 = 64;
/** Bytes of one SNAPSHOTS record (check-snapshots.ts). */
export const SNAPSHOT_RECORD_BYTES: u64 = 24;
/** QEMU refuses to check files of more clusters than a C int counts (EFBIG). */
const MAX_FILE_CLUSTERS: u64 = 0x7fffffff;

/** Bytes of the checked file. */
export let fileBytes: u64 = 0;
/** Host clusters of the file (the last may be partial). */
export let fileClusters: u64 = 0;
/** Entries of the refcount table in CHECK_REFTABLE. */
export let reftableEntries: u64 = 0;
/** Snapshots the header announces (nb_snapshots). */
export let snapshotCapacity: u32 = 0;
/** Host offset and entries of the active L1 table. */
export let activeL1Offset: u64 = 0;
export let activeL1Entries: u64 = 0;

// Region addresses (the table in check.ts says what each holds).
/** CHECK_TABLE: one table chunk as on disk. */
export let tablePtr: usize = 0;
/** CHECK_LIST: f64 host offsets of the L2 tables to visit. */
export let listPtr: usize = 0;
/** CHECK_REFTABLE: the refcount table as on disk. */
export let reftablePtr: usize = 0;
let eventsPtr: usize = 0;
/** SNAPSHOTS: one record per parsed snapshot (check-snapshots.ts). */
export let snapshotsPtr: usize = 0;
/** COMPUTED: references per host cluster, at the refcount width. */
export let computedPtr: usize = 0;
/** STORED: the stored refcount blocks, as read. */
export let storedPtr: usize = 0;
let taintedPtr: usize = 0;
let arraysEnd: usize = 0;

/** True when `hostOffset` is not cluster-aligned. */
@inline export function isUnaligned(hostOffset: u64): bool { return (hostOffset & (clusterBytes() - 1)) != 0; }
@inline function align16(bytes: u64): u64 { return (bytes + 15) & ~<u64>15; }
/** The high and low 32 bits of a u64, as event arguments (a "pair"). */
@inline export function hi(value: u64): f64 { return <f64>(<u32>(value >> 32)); }
@inline export function lo(value: u64): f64 { return <f64>(<u32>value); }

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
  if (!(fileSize >= 0) || fileSize > <f64>MAX_EXACT_POSITION || fileSize != Math.floor(fileSize)) return -1;
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
 * Places the check regions from linear-memory address `start` (configureCheck has validated the
 * arguments and set the geometry) and zeroes the refcount table region.
 */
export function placeCheckRegions(start: usize, fileSize: f64, reftableBytes: f64, snapshotCount: i32, l1Offset: f64, l1Entries: f64): void {
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
export let referencedEnd: u64 = 0;
/** The highest cluster with a stored refcount or a reference (compareBlock). */
let highestCluster: u64 = 0;

/** Adds one to counter `which`. */
@inline export function bump(which: CheckCount): void {
  store<u64>(counts + (<usize>which << 3), load<u64>(counts + (<usize>which << 3)) + 1);
}
/** Counter `which`. */
@inline function countOf(which: CheckCount): u64 { return load<u64>(counts + (<usize>which << 3)); }
/** Sets counter `which`. */
@inline export function setCount(which: CheckCount, value: u64): void { store<u64>(counts + (<usize>which << 3), value); }

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

/** Appends an event record (kind, then arguments a..g); counted as dropped when CHECK_EVENTS is full. */
export function event(kind: CheckEvent, a: f64, b: f64 = 0, c: f64 = 0, d: f64 = 0, e: f64 = 0, f: f64 = 0, g: f64 = 0): void {
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

/** Counts one corruption. */
@inline export function corruption(): void { bump(CheckCount.CORRUPTIONS); }

/** The refcount at `index` of the COMPUTED or STORED array or a refcount block, at the image's width (and its setter). */
@inline export function loadRefcount(base: usize, index: u64): u64 { return loadRefcountOf(base, index, refcountOrder); }
@inline export function storeRefcount(base: usize, index: u64, value: u64): void { storeRefcountOf(base, index, refcountOrder, value); }

/** True when a reference to cluster `cluster` was invalid (its refcount must not be raised). */
@inline export function isTainted(cluster: u64): bool {
  return ((<u32>load<u8>(taintedPtr + <usize>(cluster >> 3)) >> <u32>(cluster & 7)) & 1) != 0;
}

/** Marks cluster `cluster` as having an invalid reference. */
@inline export function taint(cluster: u64): void {
  const at = taintedPtr + <usize>(cluster >> 3);
  store<u8>(at, <u8>(<u32>load<u8>(at) | (<u32>1 << <u32>(cluster & 7))));
}

/** Resets the counters, events, the per-cluster arrays and the referenced extent for a new pass. */
export function resetCheckState(): void {
  memory.fill(counts, 0, <usize>COUNT_SLOTS * 8);
  memory.fill(computedPtr, 0, arraysEnd - computedPtr);
  eventCount = 0;
  eventsDropped = 0;
  referencedEnd = 0;
  highestCluster = 0;
}

/** Notes that cluster `cluster` is referenced (it extends referencedEnd). */
@inline export function noteReferenced(cluster: u64): void { if (cluster + 1 > referencedEnd) referencedEnd = cluster + 1; }
/** Notes that cluster `cluster` has a stored refcount or a reference (for IMAGE_END_OFFSET). */
@inline export function noteHighestCluster(cluster: u64): void { highestCluster = cluster; }
