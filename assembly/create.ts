// SPDX-License-Identifier: MIT
// Creating qcow2 images: checks the create options against the format's rules, plans where each
// cluster of a new image goes (the order qemu-img 7.2 allocates them in) and renders any byte
// range of the new file into the HEADER region. Sans I/O: TypeScript writes what this renders.
// It never reads an existing image and knows nothing of backing files beyond their names.
//
// Layout (host clusters, in file order). Every allocated cluster has refcount 1 and they are
// contiguous from cluster 0, so the refcounts are "1 below clusterCount, 0 above":
//
//   cluster 0          header, extensions, backing file name
//   1 .. T             refcount table (T clusters; 1 unless the image is huge)
//   then               refcount blocks needed so far (normally just block 0)
//   then               L1 table (L clusters; absent for a zero-sized image)
//   then               refcount blocks the L1 table made necessary
//   preallocation=metadata only, for each L2 table i in guest order:
//                      L2 table i, its data clusters, then refcount blocks made necessary
//
// A refcount block is allocated right after the run of clusters that first needs it, as QEMU's
// allocator does; qemu-img's own images have the same bytes wherever its allocator does not
// recurse (one refcount table cluster, refcount blocks not needing blocks themselves).

import { Region, regionOffset, regionBytes } from './layout';
import { Status } from './status';
import { renderFeatureNameTable } from './header-render';
import {
  HeaderField, QCOW_MAGIC, V2_HEADER_BYTES, V3_HEADER_BYTES, INCOMPAT_COMPRESSION, INCOMPAT_EXTL2,
  COMPAT_LAZY_REFCOUNTS, CompressionType, EXT_HEADER_BYTES, EXT_BACKING_FORMAT,
  L1E_BYTES,
  L2E_BYTES, L2E_EXTENDED_BYTES, REFTABLE_ENTRY_BYTES, QCOW_OFLAG_COPIED, MIN_CLUSTER_BITS, MAX_CLUSTER_BITS,
  MIN_EXTL2_CLUSTER_BITS, MAX_REFCOUNT_ORDER, V2_REFCOUNT_ORDER, MAX_L1_BYTES, MAX_REFTABLE_BYTES,
  MAX_BACKING_FILE_NAME_BYTES, MAX_BACKING_FORMAT_NAME_BYTES, MAX_EXACT_POSITION, storeBE32, storeBE64,
} from './format';

/** Bits of planCreate's `flags`. */
export enum CreateFlag {
  /** 128-bit L2 entries with 32 subclusters (incompatible bit 4). */
  EXTENDED_L2 = 1,
  /** Compatible bit 0. */
  LAZY_REFCOUNTS = 2,
  /** compression_type 1 and incompatible bit 3. */
  ZSTD = 4,
  /** preallocation=metadata: every L2 table and data cluster allocated (data reads as zeros). */
  PREALLOCATE_METADATA = 8,
}
const KNOWN_FLAGS: i32 = 15;

/**
 * Why planCreate refused the options (createErrorReason), with stable numbers. TypeScript words
 * each like qemu-img 7.2 words the same refusal (bindings/qcow2/qcow2-create.ts). "Detail" is what
 * createErrorDetail() returns with it.
 */
export enum CreateError {
  NONE = 0,
  /** version is not 2 or 3, flags has unknown bits, or a name length is negative (a caller bug). Detail: version. */
  ARGUMENTS_INVALID = 1,
  /** The cluster size is not a power of two from 512 B to 2 MiB. Detail: the size. */
  CLUSTER_SIZE_INVALID = 2,
  /** refcount bits is not a power of two from 1 to 64. Detail: the width. */
  REFCOUNT_BITS_INVALID = 3,
  /** Version 2 with refcount bits other than 16. Detail: the width. */
  V2_REFCOUNT_BITS = 4,
  /** Version 2 with extended L2 entries. */
  V2_EXTENDED_L2 = 5,
  /** Version 2 with lazy refcounts. */
  V2_LAZY_REFCOUNTS = 6,
  /** Version 2 with zstd compression. */
  V2_COMPRESSION_TYPE = 7,
  /** Extended L2 entries with clusters below 16 KiB (subclusters below 512 B). Detail: cluster size. */
  EXTENDED_L2_CLUSTER_TOO_SMALL = 8,
  /** A backing format without a backing file. */
  BACKING_FORMAT_WITHOUT_FILE = 9,
  /** A backing file with preallocation but without extended L2 (the data would hide the backing file). */
  BACKING_WITH_PREALLOCATION = 10,
  /** The backing file name is longer than 1023 bytes. Detail: its length. */
  BACKING_NAME_TOO_LONG = 11,
  /** The backing format name is longer than 15 bytes. Detail: its length. */
  BACKING_FORMAT_TOO_LONG = 12,
  /** The virtual size is negative, not an integer or above 2^53. Detail: the size. */
  VIRTUAL_SIZE_INVALID = 13,
  /** The virtual size is not a multiple of 512 bytes. Detail: the size. */
  VIRTUAL_SIZE_UNALIGNED = 14,
  /** The L1 table would exceed 32 MiB (QEMU's limit). Detail: L1 entries needed. */
  L1_TOO_LARGE = 15,
  /** The refcount table would exceed 8 MiB (QEMU's limit), or the file 2^53 bytes. Detail: clusters. */
  REFCOUNT_TABLE_TOO_LARGE = 16,
  /** Header, extensions and backing file name do not fit in cluster 0. Detail: bytes needed. */
  HEADER_EXCEEDS_CLUSTER = 17,
}

// qemu-img 7.2 writes the feature name table into version 3 images with clusters above 4 KiB
// (smaller clusters would leave too little room for a backing file name).
const FEATURE_TABLE_MIN_CLUSTER_BITS: u32 = 13;

// cluster 0 as planned: header, extensions, end marker, backing file name (at most ~1.6 KiB).
const HEADER_IMAGE_CAPACITY: i32 = 2048;
const headerImage: usize = memory.data(HEADER_IMAGE_CAPACITY, 8);
let headerImageBytes: u32 = 0;

// The plan (valid after planCreate returned OK). Counts and positions are in clusters.
let clusterBits: u32 = 16;
let refcountBitsLog: u32 = 4; // refcount_order
let isPreallocated: bool = false;
let l2EntryBytes: u64 = 8;
let l2EntriesPerTable: u64 = 0; // E
let refcountsPerBlock: u64 = 0; // P
let guestClusterCount: u64 = 0; // G
let l1EntryCount: u64 = 0; // N: one L2 table per entry
let reftableClusterCount: u64 = 0; // T
let l1ClusterCount: u64 = 0; // L
let boundaryHeader: u64 = 0; // b0 = 1 + T: non-refcount-block clusters after header and reftable
let boundaryL1: u64 = 0; // b1 = b0 + L
let nonRefblockCount: u64 = 0; // every allocated cluster that is not a refcount block
let refblockCount: u64 = 0; // R
let fileBytes: u64 = 0;
let headExtentBytes: u64 = 0;
let errorReason: CreateError = CreateError.NONE;
let errorDetail: f64 = 0;

@inline function ceilDiv(a: u64, b: u64): u64 { return a / b + <u64>(a % b != 0); }

/**
 * Refcount blocks allocated once `nonRefblocks` other clusters are: the smallest r with
 * r * P >= nonRefblocks + r, i.e. every allocated cluster, the blocks included, is covered.
 */
@inline function refblocksFor(nonRefblocks: u64): u64 { return ceilDiv(nonRefblocks, refcountsPerBlock - 1); }

/**
 * Plans a new image and builds its cluster 0.
 *
 * Inputs: `virtualSize` bytes (an integer multiple of 512, at most 2^53); `clusterSize` bytes;
 * `version` 2 or 3; `refcountBits` 1..64; `flags` of CreateFlag; the backing file name in
 * HEADER[0, backingNameBytes) and the backing format name right after it, in
 * HEADER[backingNameBytes, backingNameBytes + backingFormatBytes) (0 bytes: none). Checks in
 * this order: version and flags, cluster size, refcount width, version 2 restrictions,
 * subcluster size, backing options, virtual size, L1 size, cluster 0 room, refcount table size.
 *
 * Reads the HEADER region; writes only this module's state. Afterwards renderCreate and the
 * create* getters describe the image.
 *
 * Returns:
 * - Status.OK: planned.
 * - Status.INVALID: the options break a rule; createErrorReason()/createErrorDetail() say which.
 */
export function planCreate(virtualSize: f64, clusterSize: f64, version: i32, refcountBits: i32, flags: i32,
                           backingNameBytes: i32, backingFormatBytes: i32): Status {
  errorReason = CreateError.NONE;
  errorDetail = 0;
  headerImageBytes = 0;
  fileBytes = 0;
  const hasExtendedL2 = (flags & CreateFlag.EXTENDED_L2) != 0;
  const hasLazyRefcounts = (flags & CreateFlag.LAZY_REFCOUNTS) != 0;
  const isZstd = (flags & CreateFlag.ZSTD) != 0;
  isPreallocated = (flags & CreateFlag.PREALLOCATE_METADATA) != 0;

  // 1. Version, cluster size and refcount width.
  if ((version != 2 && version != 3) || (flags & ~KNOWN_FLAGS) != 0) return fail(CreateError.ARGUMENTS_INVALID, <f64>version);
  if (!(clusterSize >= <f64>(1 << MIN_CLUSTER_BITS) && clusterSize <= <f64>(1 << MAX_CLUSTER_BITS))) {
    return fail(CreateError.CLUSTER_SIZE_INVALID, clusterSize);
  }
  const clusterBytes = <u64>clusterSize;
  if (<f64>clusterBytes != clusterSize || popcnt<u64>(clusterBytes) != 1) return fail(CreateError.CLUSTER_SIZE_INVALID, clusterSize);
  clusterBits = <u32>ctz<u64>(clusterBytes);
  if (refcountBits < 1 || refcountBits > (1 << MAX_REFCOUNT_ORDER) || popcnt<i32>(refcountBits) != 1) {
    return fail(CreateError.REFCOUNT_BITS_INVALID, <f64>refcountBits);
  }
  refcountBitsLog = <u32>ctz<i32>(refcountBits);

  // 2. What version 2 (compat 0.10) cannot express.
  if (version == 2) {
    if (refcountBitsLog != V2_REFCOUNT_ORDER) return fail(CreateError.V2_REFCOUNT_BITS, <f64>refcountBits);
    if (hasExtendedL2) return fail(CreateError.V2_EXTENDED_L2, 0);
    if (hasLazyRefcounts) return fail(CreateError.V2_LAZY_REFCOUNTS, 0);
    if (isZstd) return fail(CreateError.V2_COMPRESSION_TYPE, 0);
  }
  if (hasExtendedL2 && clusterBits < MIN_EXTL2_CLUSTER_BITS) return fail(CreateError.EXTENDED_L2_CLUSTER_TOO_SMALL, clusterSize);

  // 3. Backing file options.
  if (backingNameBytes < 0 || backingFormatBytes < 0) return fail(CreateError.ARGUMENTS_INVALID, <f64>version);
  if (backingNameBytes == 0 && backingFormatBytes > 0) return fail(CreateError.BACKING_FORMAT_WITHOUT_FILE, 0);
  if (backingNameBytes > 0 && isPreallocated && !hasExtendedL2) return fail(CreateError.BACKING_WITH_PREALLOCATION, 0);
  if (<u32>backingNameBytes > MAX_BACKING_FILE_NAME_BYTES) return fail(CreateError.BACKING_NAME_TOO_LONG, <f64>backingNameBytes);
  if (<u32>backingFormatBytes > MAX_BACKING_FORMAT_NAME_BYTES) {
    return fail(CreateError.BACKING_FORMAT_TOO_LONG, <f64>backingFormatBytes);
  }

  // 4. Virtual size, and the L1 table that maps it (one entry per L2 table).
  if (!(virtualSize >= 0) || virtualSize > <f64>MAX_EXACT_POSITION || floor<f64>(virtualSize) != virtualSize) {
    return fail(CreateError.VIRTUAL_SIZE_INVALID, virtualSize);
  }
  const sizeBytes = <u64>virtualSize;
  if ((sizeBytes & 511) != 0) return fail(CreateError.VIRTUAL_SIZE_UNALIGNED, virtualSize);
  l2EntryBytes = hasExtendedL2 ? <u64>L2E_EXTENDED_BYTES : <u64>L2E_BYTES;
  l2EntriesPerTable = clusterBytes / l2EntryBytes;
  guestClusterCount = ceilDiv(sizeBytes, clusterBytes);
  l1EntryCount = ceilDiv(guestClusterCount, l2EntriesPerTable);
  if (l1EntryCount * L1E_BYTES > MAX_L1_BYTES) return fail(CreateError.L1_TOO_LARGE, <f64>l1EntryCount);
  l1ClusterCount = ceilDiv(l1EntryCount * L1E_BYTES, clusterBytes);

  // 5. Cluster 0.
  const headerNeeded = buildHeaderImage(version, sizeBytes, flags, backingNameBytes, backingFormatBytes);
  if (headerNeeded > clusterBytes) return fail(CreateError.HEADER_EXCEEDS_CLUSTER, <f64>headerNeeded);

  // 6. Refcount table size: a fixed point, since the table's own clusters need refcounts too.
  refcountsPerBlock = (clusterBytes << 3) >> refcountBitsLog;
  const maxReftableClusters = MAX_REFTABLE_BYTES >> clusterBits;
  const dataRunClusters = isPreallocated ? l1EntryCount + guestClusterCount : 0;
  let tableClusters: u64 = 1;
  for (;;) {
    const nonRefblocks = 1 + tableClusters + l1ClusterCount + dataRunClusters;
    const needed = ceilDiv(refblocksFor(nonRefblocks) * REFTABLE_ENTRY_BYTES, clusterBytes);
    if (needed <= tableClusters) break;
    tableClusters = needed;
    if (tableClusters > maxReftableClusters) return fail(CreateError.REFCOUNT_TABLE_TOO_LARGE, <f64>tableClusters);
  }
  reftableClusterCount = tableClusters;
  boundaryHeader = 1 + tableClusters;
  boundaryL1 = boundaryHeader + l1ClusterCount;
  nonRefblockCount = boundaryL1 + dataRunClusters;
  refblockCount = refblocksFor(nonRefblockCount);
  const clusterCount = nonRefblockCount + refblockCount;
  if (clusterCount > (MAX_EXACT_POSITION >> clusterBits)) return fail(CreateError.REFCOUNT_TABLE_TOO_LARGE, <f64>tableClusters);

  // 7. Where the file ends. Like qemu-img: after the last refcount block or data cluster, but
  // right after the L1 entries when the L1 table is the last thing allocated.
  const refblocksAfterL1 = refblocksFor(boundaryL1) - refblocksFor(boundaryHeader);
  const headClusters = boundaryL1 + refblocksFor(boundaryL1);
  if (isPreallocated || refblocksAfterL1 > 0 || l1EntryCount == 0) {
    fileBytes = clusterCount << clusterBits;
    headExtentBytes = headClusters << clusterBits;
  } else {
    fileBytes = (l1StartCluster() << clusterBits) + l1EntryCount * L1E_BYTES;
    headExtentBytes = fileBytes;
  }
  storeBE64(headerImage + HeaderField.L1_TABLE_OFFSET, l1EntryCount == 0 ? 0 : l1StartCluster() << clusterBits);
  storeBE32(headerImage + HeaderField.REFCOUNT_TABLE_CLUSTERS, <u32>reftableClusterCount);
  return Status.OK;
}

// Writes cluster 0 into headerImage except the fields that depend on the layout (L1 offset,
// refcount table clusters); returns the bytes it needs (which may exceed the capacity only when
// the caller then fails, since names and the feature table are bounded).
function buildHeaderImage(version: i32, sizeBytes: u64, flags: i32, nameBytes: i32, formatBytes: i32): u64 {
  const at = headerImage;
  memory.fill(at, 0, HEADER_IMAGE_CAPACITY);
  storeBE32(at, QCOW_MAGIC);
  storeBE32(at + HeaderField.VERSION, <u32>version);
  storeBE32(at + HeaderField.CLUSTER_BITS, clusterBits);
  storeBE64(at + HeaderField.SIZE, sizeBytes);
  storeBE32(at + HeaderField.L1_SIZE, <u32>l1EntryCount);
  storeBE64(at + HeaderField.REFCOUNT_TABLE_OFFSET, <u64>1 << clusterBits);
  let end: u32 = V2_HEADER_BYTES;
  if (version == 3) {
    let incompatible: u64 = 0;
    if (flags & CreateFlag.ZSTD) incompatible |= INCOMPAT_COMPRESSION;
    if (flags & CreateFlag.EXTENDED_L2) incompatible |= INCOMPAT_EXTL2;
    storeBE64(at + HeaderField.INCOMPATIBLE_FEATURES, incompatible);
    storeBE64(at + HeaderField.COMPATIBLE_FEATURES, (flags & CreateFlag.LAZY_REFCOUNTS) != 0 ? COMPAT_LAZY_REFCOUNTS : 0);
    storeBE32(at + HeaderField.REFCOUNT_ORDER, refcountBitsLog);
    storeBE32(at + HeaderField.HEADER_LENGTH, V3_HEADER_BYTES);
    store<u8>(at + HeaderField.COMPRESSION_TYPE, (flags & CreateFlag.ZSTD) != 0 ? <u8>CompressionType.ZSTD : 0);
    end = V3_HEADER_BYTES;
  }
  // Extensions in qemu-img's order: backing format, feature name table, end marker.
  const names = regionOffset(Region.HEADER);
  if (formatBytes > 0) {
    storeBE32(at + end, EXT_BACKING_FORMAT);
    storeBE32(at + end + 4, <u32>formatBytes);
    memory.copy(at + end + EXT_HEADER_BYTES, names + <usize>nameBytes, <usize>formatBytes);
    end += EXT_HEADER_BYTES + ((<u32>formatBytes + 7) & ~7);
  }
  if (version == 3 && clusterBits >= FEATURE_TABLE_MIN_CLUSTER_BITS) end += renderFeatureNameTable(at + end);
  end += EXT_HEADER_BYTES; // the end-of-extensions marker: eight zero bytes
  if (nameBytes > 0) {
    storeBE64(at + HeaderField.BACKING_FILE_OFFSET, <u64>end);
    storeBE32(at + HeaderField.BACKING_FILE_SIZE, <u32>nameBytes);
    if (end + <u32>nameBytes <= <u32>HEADER_IMAGE_CAPACITY) memory.copy(at + end, names, <usize>nameBytes);
    end += <u32>nameBytes;
  }
  headerImageBytes = min<u32>(end, <u32>HEADER_IMAGE_CAPACITY);
  return <u64>end;
}

function fail(reason: CreateError, detail: f64): Status {
  errorReason = reason;
  errorDetail = detail;
  return Status.INVALID;
}

// ---------------------------------------------------------------------------------------------
// Where things are (host clusters). Allocation runs, each followed by the refcount blocks it made
// necessary: [header + refcount table], [L1 table], then per L2 table i [L2 table i + its data].
// After a run the non-refcount-block cluster count is a "boundary": b0, b1, then b1 + (i+1)(1+E)
// (the last one clamped to nonRefblockCount), and refblocksFor(boundary) blocks exist.
// ---------------------------------------------------------------------------------------------

@inline function l1StartCluster(): u64 { return boundaryHeader + refblocksFor(boundaryHeader); }

/** Non-refcount-block clusters allocated before L2 run `i` (0 <= i <= N). */
@inline function clustersBeforeRun(i: u64): u64 {
  return min<u64>(boundaryL1 + i * (1 + l2EntriesPerTable), nonRefblockCount);
}

/** Host cluster of L2 table `i` (preallocation only); its data clusters follow it. */
@inline function runStartCluster(i: u64): u64 {
  const before = clustersBeforeRun(i);
  return before + refblocksFor(before);
}

/** Data clusters of L2 run `i`. */
@inline function runDataClusters(i: u64): u64 {
  return min<u64>(l2EntriesPerTable, guestClusterCount - i * l2EntriesPerTable);
}

/** Host cluster of refcount block `k` (k < R): right after the first run that needed it. */
function refblockCluster(k: u64): u64 {
  // Block k is needed once more than k * (P - 1) other clusters exist (see refblocksFor).
  const threshold = k * (refcountsPerBlock - 1);
  let boundary: u64;
  if (threshold < boundaryHeader) boundary = boundaryHeader;
  else if (threshold < boundaryL1) boundary = boundaryL1;
  else boundary = clustersBeforeRun((threshold - boundaryL1) / (1 + l2EntriesPerTable) + 1);
  return boundary + k;
}

// What a host cluster holds.
const ROLE_HEADER: i32 = 0;
const ROLE_REFTABLE: i32 = 1;
const ROLE_REFBLOCK: i32 = 2;
const ROLE_L1: i32 = 3;
const ROLE_L2: i32 = 4;
const ROLE_ZERO: i32 = 5; // data clusters, and anything past the image
let roleIndex: u64 = 0; // which refcount block / L1 cluster / L2 table

function roleOf(hostCluster: u64): i32 {
  if (hostCluster == 0) return ROLE_HEADER;
  if (hostCluster < boundaryHeader) { roleIndex = hostCluster - 1; return ROLE_REFTABLE; }
  const l1Start = l1StartCluster();
  if (hostCluster < l1Start) { roleIndex = hostCluster - boundaryHeader; return ROLE_REFBLOCK; }
  if (hostCluster < l1Start + l1ClusterCount) { roleIndex = hostCluster - l1Start; return ROLE_L1; }
  if (hostCluster < boundaryL1 + refblocksFor(boundaryL1)) { roleIndex = hostCluster - boundaryL1; return ROLE_REFBLOCK; }
  if (!isPreallocated || l1EntryCount == 0 || hostCluster >= nonRefblockCount + refblockCount) return ROLE_ZERO;
  // The last run starting at or before hostCluster (run starts increase with i).
  let low: u64 = 0;
  let high: u64 = l1EntryCount - 1;
  while (low < high) {
    const middle = low + ((high - low + 1) >> 1);
    if (runStartCluster(middle) <= hostCluster) low = middle;
    else high = middle - 1;
  }
  const inRun = hostCluster - runStartCluster(low);
  if (inRun == 0) { roleIndex = low; return ROLE_L2; }
  if (inRun <= runDataClusters(low)) return ROLE_ZERO;
  roleIndex = hostCluster - clustersBeforeRun(low + 1);
  return ROLE_REFBLOCK;
}

/**
 * Renders file bytes [hostOffset, hostOffset + byteCount) of the planned image into
 * HEADER[0, byteCount). Both must be multiples of 8 and byteCount at most the region's size.
 * Bytes no structure covers (data clusters, padding, past the file) render as zeros.
 * Returns Status.OK, or Status.INVALID for a misaligned or oversized range or before a plan.
 */
export function renderCreate(hostOffsetF: f64, byteCount: i32): Status {
  if (fileBytes == 0 || !(hostOffsetF >= 0) || hostOffsetF > <f64>MAX_EXACT_POSITION || floor<f64>(hostOffsetF) != hostOffsetF) {
    return Status.INVALID;
  }
  const hostOffset = <u64>hostOffsetF;
  if (byteCount <= 0 || <usize>byteCount > regionBytes(Region.HEADER) || ((hostOffset | <u64>byteCount) & 7) != 0) return Status.INVALID;
  const out = regionOffset(Region.HEADER);
  memory.fill(out, 0, <usize>byteCount);
  const end = hostOffset + <u64>byteCount;
  const clusterMask = (<u64>1 << clusterBits) - 1;
  let position = hostOffset;
  while (position < end) {
    const hostCluster = position >> clusterBits;
    const from = position & clusterMask; // byte range [from, to) of this cluster
    const to = min<u64>(end - (hostCluster << clusterBits), clusterMask + 1);
    const target = out + <usize>(position - hostOffset) - <usize>from; // where byte 0 of the cluster would go
    switch (roleOf(hostCluster)) {
      case ROLE_HEADER: renderHeader(target, from, to); break;
      case ROLE_REFTABLE: renderReftable(target, from, to, roleIndex); break;
      case ROLE_REFBLOCK: renderRefblock(target, from, to, roleIndex); break;
      case ROLE_L1: renderL1(target, from, to, roleIndex); break;
      case ROLE_L2: renderL2(target, from, to, roleIndex); break;
      default: break;
    }
    position = (hostCluster << clusterBits) + to;
  }
  return Status.OK;
}

function renderHeader(target: usize, from: u64, to: u64): void {
  const last = min<u64>(to, <u64>headerImageBytes);
  if (from < last) memory.copy(target + <usize>from, headerImage + <usize>from, <usize>(last - from));
}

// Refcount table entries (qcow2 spec, "Host cluster management"): the refcount block's offset.
function renderReftable(target: usize, from: u64, to: u64, tableCluster: u64): void {
  const first = (tableCluster << clusterBits) / REFTABLE_ENTRY_BYTES;
  for (let byte = from; byte < to; byte += REFTABLE_ENTRY_BYTES) {
    const k = first + byte / REFTABLE_ENTRY_BYTES;
    if (k < refblockCount) storeBE64(target + <usize>byte, refblockCluster(k) << clusterBits);
  }
}

// Refcount block k: refcount 1 for every allocated cluster it covers. Entries of 8 bits and more
// are big-endian; narrower ones are packed from the least significant bit of each byte.
function renderRefblock(target: usize, from: u64, to: u64, k: u64): void {
  const clusterCount = nonRefblockCount + refblockCount;
  const firstCluster = k * refcountsPerBlock;
  if (refcountBitsLog >= 3) {
    const entryBytes = <u64>1 << (refcountBitsLog - 3);
    for (let byte = from; byte < to; byte += entryBytes) {
      if (firstCluster + byte / entryBytes >= clusterCount) break;
      store<u8>(target + <usize>(byte + entryBytes - 1), 1);
    }
    return;
  }
  const entriesPerByteLog = 3 - refcountBitsLog;
  for (let byte = from; byte < to; byte++) {
    const entry = firstCluster + (byte << entriesPerByteLog);
    if (entry >= clusterCount) break;
    const inByte = min<u64>(clusterCount - entry, <u64>1 << entriesPerByteLog);
    let value: u32 = 0;
    for (let j: u32 = 0; j < <u32>inByte; j++) value |= <u32>1 << (j << refcountBitsLog);
    store<u8>(target + <usize>byte, <u8>value);
  }
}

// L1 entries: zero, or with preallocation the L2 table's offset with COPIED (refcount is 1).
function renderL1(target: usize, from: u64, to: u64, l1Cluster: u64): void {
  if (!isPreallocated) return;
  const first = (l1Cluster << clusterBits) / L1E_BYTES;
  for (let byte = from; byte < to; byte += L1E_BYTES) {
    const i = first + byte / L1E_BYTES;
    if (i >= l1EntryCount) break;
    storeBE64(target + <usize>byte, (runStartCluster(i) << clusterBits) | QCOW_OFLAG_COPIED);
  }
}

// A preallocated L2 table: each entry names its data cluster, with COPIED. With extended L2 the
// subcluster bitmap stays 0 (every subcluster unallocated), as qemu-img leaves it: the data
// clusters are reserved but read through to the backing file, or as zeros.
function renderL2(target: usize, from: u64, to: u64, table: u64): void {
  const firstData = runStartCluster(table) + 1;
  const dataCount = runDataClusters(table);
  for (let byte = from; byte < to; byte += L1E_BYTES) {
    if ((byte & (l2EntryBytes - 1)) != 0) continue; // the bitmap half of an extended entry
    const m = byte / l2EntryBytes;
    if (m >= dataCount) break;
    storeBE64(target + <usize>byte, ((firstData + m) << clusterBits) | QCOW_OFLAG_COPIED);
  }
}

// ---------------------------------------------------------------------------------------------
// Extents: the host ranges TypeScript writes, in file order. Extent 0 is the head (cluster 0
// through the L1 table and the refcount blocks after it); with preallocation, extent 1 + 2i is
// L2 table i and extent 2 + 2i the refcount blocks allocated after its run (often empty).
// Everything else reads as zeros: TypeScript makes the file createFileBytes() long.
// ---------------------------------------------------------------------------------------------

/** Number of extents of the plan (0 before a successful planCreate). */
export function createExtentCount(): f64 {
  if (fileBytes == 0) return 0;
  return isPreallocated ? <f64>(<u64>1 + <u64>2 * l1EntryCount) : <f64>1;
}

/** Host offset of extent `index` (0 <= index < createExtentCount()). */
export function createExtentStart(indexF: f64): f64 {
  const index = <u64>indexF;
  if (index == 0) return 0;
  const run = (index - 1) >> 1;
  if ((index & 1) == 1) return <f64>(runStartCluster(run) << clusterBits);
  const after = clustersBeforeRun(run + 1);
  return <f64>((after + refblocksFor(clustersBeforeRun(run))) << clusterBits);
}

/** Bytes of extent `index` (a multiple of 8; 0 for an empty one). */
export function createExtentBytes(indexF: f64): f64 {
  const index = <u64>indexF;
  if (index == 0) return <f64>headExtentBytes;
  const run = (index - 1) >> 1;
  if ((index & 1) == 1) return <f64>(<u64>1 << clusterBits);
  return <f64>((refblocksFor(clustersBeforeRun(run + 1)) - refblocksFor(clustersBeforeRun(run))) << clusterBits);
}

/** Bytes the new file has: past the last metadata byte, or past the last preallocated cluster. */
export function createFileBytes(): f64 { return <f64>fileBytes; }
/** Host clusters the new image allocates (its refcounts): qemu-img check's image end / cluster size. */
export function createClusterCount(): f64 { return <f64>(nonRefblockCount + refblockCount); }
/** Why the last planCreate failed (CreateError.NONE after success). */
export function createErrorReason(): i32 { return errorReason; }
/** The value the failed check was about (see CreateError). */
export function createErrorDetail(): f64 { return errorDetail; }
