// SPDX-License-Identifier: MIT
// The linear-memory region map, defined once here and read by TypeScript at init
// (bindings/core/wasm.ts). Memory is imported, fixed in size, and never grows: views built once
// stay valid across awaits. Regions are laid out upwards from __heap_base:
//
//   region            record                                   count
//   ---------------   --------------------------------------   ----------------------
//   REQUESTS          f64 guestOffset, f64 length               MAX_BATCH_REQUESTS
//   REQUEST_MAP       i32 firstExtent, i32 extentCount          MAX_BATCH_REQUESTS
//   PIECES            f64 requestIndex (-1 = gap), f64 offsetInRequest, f64 length
//                                                               PIECE_CAPACITY
//   EXTENTS           f64 guestOffset, f64 length, f64 firstPiece, f64 pieceCount
//                                                               EXTENT_CAPACITY
//   SCRATCH           merge internals (keys, sort order, heap)  sized for MAX_BATCH_REQUESTS
//   HEADER            u8 image file bytes from position 0       HEADER_REGION_BYTES
//   RUNS              f64 kind, guestOffset, length, hostOffset, compressedBytes
//                                                               RUN_CAPACITY
//   FREED             f64 host cluster offsets a commit released FREED_CAPACITY
//   PLAN              f64 write plan record (write-plan.ts)      1
//   CLUSTER_STATES    u8 WriteState per cluster (write-state.ts) CLUSTER_STATE_CAPACITY
//   ---- end of the fixed regions; configureImage (image-regions.ts) places the rest: ----
//   L1_TABLE          u64 big-endian L1 entries, as on disk     the image's l1_size
//   REFTABLE          u64 big-endian refcount table entries     refcount_table_clusters
//   NEW_TABLES        1 bit per L1 entry: its table is new      the image's l1_size
//   TABLE_INDEX       u64 sorted L2 table and refcount block    l1_size + refcount table
//                     cluster indices (table-index.ts)          capacity entries
//   L2 cache          slice slots and their bookkeeping         cacheBytes / slice bytes
//   refcount cache    slice slots and their bookkeeping         a quarter of the L2 cache
//
// Records hold byte positions as integer-valued f64 (exact to 2^53) so TypeScript can use a
// Float64Array without BigInt; the core converts them to u64 on load.

import { Status } from './status';

/** Most write requests one mergeWrites call takes. */
export const MAX_BATCH_REQUESTS: i32 = 4096;
/** Most pieces (iovec entries naming request data or a gap) one call may produce. */
export const PIECE_CAPACITY: i32 = 16384;
/** Most extents (host writes) one call may produce. */
export const EXTENT_CAPACITY: i32 = 16384;

export const REQUEST_STRIDE: i32 = 16;
export const REQUEST_MAP_STRIDE: i32 = 8;
export const PIECE_STRIDE: i32 = 24;
export const EXTENT_STRIDE: i32 = 32;
/** Most runs one mapRange call produces. */
export const RUN_CAPACITY: i32 = 4096;
export const RUN_STRIDE: i32 = 40;
/** Most host cluster offsets one commitAllocation releases (3 per cluster of a 512-cluster run). */
export const FREED_CAPACITY: i32 = 1536;
/** Bytes of the PLAN region: one write plan record (write-plan.ts PLAN_FIELDS f64, rounded up). */
export const PLAN_REGION_BYTES: i32 = 256;
/** Most clusters one classifyClusters call classifies. */
export const CLUSTER_STATE_CAPACITY: i32 = 4096;

/** Region identifiers for regionOffset/regionBytes. */
export enum Region {
  REQUESTS = 0,
  REQUEST_MAP = 1,
  PIECES = 2,
  EXTENTS = 3,
  SCRATCH = 4,
  HEADER = 5,
  RUNS = 6,
  L1_TABLE = 7,
  REFTABLE = 8,
  FREED = 9,
  PLAN = 10,
  CLUSTER_STATES = 11,
  NEW_TABLES = 12,
  TABLE_INDEX = 13,
}
const REGION_COUNT: i32 = 14;

// Scratch for merge: u64 start and end keys, u32 sort order, u32 merge-sort buffer, u32 heap,
// u64 packed sort keys and their merge-sort buffer.
export const SCRATCH_BYTES: i32 = MAX_BATCH_REQUESTS * (8 + 8 + 4 + 4 + 4 + 8 + 8);

/** Bytes of the HEADER region: how much of cluster 0 the header parser sees (assembly/header.ts). */
export const HEADER_REGION_BYTES: i32 = 65536;

// Static (below __heap_base) tables of region offsets and sizes; no runtime allocation happens.
const regionOffsets: usize = memory.data(REGION_COUNT * sizeof<usize>(), 16);
const regionSizes: usize = memory.data(REGION_COUNT * sizeof<usize>(), 16);
let layoutEnd: usize = 0;

/**
 * Lays the regions out from __heap_base and checks they fit in memory.
 * Returns Status.OK, or Status.NO_MEMORY when memory is smaller than the regions need.
 * Must be called once before any other entry point; calling it again is harmless.
 */
export function initLayout(): Status {
  let at: usize = (__heap_base + 15) & ~<usize>15;
  at = place(Region.REQUESTS, at, <usize>MAX_BATCH_REQUESTS * REQUEST_STRIDE);
  at = place(Region.REQUEST_MAP, at, <usize>MAX_BATCH_REQUESTS * REQUEST_MAP_STRIDE);
  at = place(Region.PIECES, at, <usize>PIECE_CAPACITY * PIECE_STRIDE);
  at = place(Region.EXTENTS, at, <usize>EXTENT_CAPACITY * EXTENT_STRIDE);
  at = place(Region.SCRATCH, at, <usize>SCRATCH_BYTES);
  at = place(Region.HEADER, at, <usize>HEADER_REGION_BYTES);
  at = place(Region.RUNS, at, <usize>RUN_CAPACITY * RUN_STRIDE);
  at = place(Region.FREED, at, <usize>FREED_CAPACITY * 8);
  at = place(Region.PLAN, at, <usize>PLAN_REGION_BYTES);
  at = place(Region.CLUSTER_STATES, at, <usize>CLUSTER_STATE_CAPACITY);
  layoutEnd = at;
  return at <= (<usize>memory.size() << 16) ? Status.OK : Status.NO_MEMORY;
}

/**
 * Records that `region` starts at `at` (16-byte aligned) and spans `bytes`; returns the next
 * 16-byte aligned address. For the size-dependent regions placed after the fixed ones.
 */
export function place(region: Region, at: usize, bytes: usize): usize {
  store<usize>(regionOffsets + (<usize>region << alignof<usize>()), at);
  store<usize>(regionSizes + (<usize>region << alignof<usize>()), bytes);
  return (at + bytes + 15) & ~<usize>15;
}

/** Byte offset of a region in linear memory (valid after initLayout). */
export function regionOffset(region: i32): usize {
  return <u32>region < <u32>REGION_COUNT ? load<usize>(regionOffsets + (<usize>region << alignof<usize>())) : 0;
}

/** Byte size of a region (valid after initLayout). */
export function regionBytes(region: i32): usize {
  return <u32>region < <u32>REGION_COUNT ? load<usize>(regionSizes + (<usize>region << alignof<usize>())) : 0;
}

/** First byte past the fixed regions: where later, size-dependent regions (caches) may start. */
export function fixedRegionsEnd(): usize {
  return layoutEnd;
}
