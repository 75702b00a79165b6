// SPDX-License-Identifier: MIT
// Guest -> host mapping for reads: walks L1 and cached L2 slices and emits runs (unallocated,
// zero, data, compressed), joining neighbours so one host read can span many clusters. Sans I/O:
// a slice missing from the cache becomes a NEED record for TypeScript to satisfy.

import {
  L2E_OFFSET_MASK, L2E_STD_RESERVED_MASK,
  QCOW_OFLAG_COMPRESSED, QCOW_OFLAG_COPIED, QCOW_OFLAG_ZERO, loadBE64, compressedHostOffset, compressedSectorCount,
} from './format';
import { clusterBits, hasExtendedL2, hasExternalData, l2CoverageBits, sliceBits, subclusterBits, virtualSizeBytes } from './geometry';
import { L2Access, l2EntryAddress, lookupL2Entry } from './l2-entry';
import { Region, regionOffset, RUN_CAPACITY, RUN_STRIDE } from './layout';
import { Status } from './status';

/** What a run of guest bytes reads as. */
export enum RunKind {
  /** Not allocated here: the backing chain's bytes, or zeros without one. */
  UNALLOCATED = 0,
  /** Reads as zeros (zero flag, or zero subclusters). */
  ZERO = 1,
  /** Host bytes at hostOffset (in the data file when there is one). */
  DATA = 2,
  /** One compressed cluster: compressedBytes at hostOffset inflate to the whole cluster. */
  COMPRESSED = 3,
}

/** Why the mapping refused an entry (corruptReason); the image is corrupt. */
export enum MappingCorruption {
  NONE = 0,
  L1_RESERVED_BITS = 1,
  L2_TABLE_UNALIGNED = 2,
  L2_RESERVED_BITS = 3,
  DATA_CLUSTER_UNALIGNED = 4,
  COMPRESSED_OFFSET_TOO_LARGE = 5,
  SUBCLUSTER_ALLOC_AND_ZERO = 6,
  SUBCLUSTER_ALLOC_WITHOUT_CLUSTER = 7,
  EXTENDED_ENTRY_ZERO_FLAG = 8,
}

// Bits 0..55 of a compressed descriptor may hold the host offset; higher offset bits must be 0.
const COMPRESSED_OFFSET_LIMIT: u64 = <u64>1 << 56;

let runCount: i32 = 0;
let mappedEnd: u64 = 0;
let corruption: MappingCorruption = MappingCorruption.NONE;
let corruptAt: u64 = 0;

/**
 * Maps guest bytes [guestOffset, guestOffset + length) (inside the virtual size) to runs.
 *
 * Output: RUNS records (kind, guestOffset, length, hostOffset, compressedBytes), in guest order,
 * tiling [guestOffset, guestOffset + mappedBytes()). Neighbouring runs of one kind are joined
 * (DATA only where host offsets continue); each COMPRESSED run is one whole or partial cluster.
 * The call may stop early (RUNS full, or a slice missing after some runs): map the rest after.
 *
 * Returns the run count (> 0); -NEED_TABLE when the first slice it needs is not cached (see
 * need.ts; then call again); -CORRUPT with corruptReason()/corruptGuestOffset(); -INVALID for a
 * range outside the virtual size or an empty one.
 */
export function mapRange(guestOffsetF: f64, lengthF: f64): i32 {
  if (!(guestOffsetF >= 0) || !(lengthF > 0) || guestOffsetF + lengthF > <f64>virtualSizeBytes) return -Status.INVALID;
  const end = <u64>guestOffsetF + <u64>lengthF;
  let position = <u64>guestOffsetF;
  runCount = 0;
  corruption = MappingCorruption.NONE;
  while (position < end && runCount < RUN_CAPACITY) {
    const status = mapStep(position, end);
    if (status == Status.NEED_TABLE) {
      if (runCount > 0) break;
      return -Status.NEED_TABLE;
    }
    if (status != Status.OK) return -status;
    position = mappedEnd;
  }
  mappedEnd = position;
  return runCount;
}

/**
 * The host offset of guest bytes [guestOffset, guestOffset + length) (inside the virtual size)
 * when they lie in one cluster that a cached standard L2 entry maps to plain data (allocated, not
 * zero, not compressed, aligned, no reserved bits): a single-cluster read's mapping without a
 * RUNS record. -1 for everything else, with nothing recorded (no NEED, no corruption): map such a
 * range with mapRange, which also says what is wrong. Changes nothing but the cache's use clock.
 */
export function mapDataInCluster(guestOffsetF: f64, lengthF: f64): f64 {
  if (hasExtendedL2 || !(guestOffsetF >= 0) || !(lengthF > 0) || guestOffsetF + lengthF > <f64>virtualSizeBytes) return -1;
  const position = <u64>guestOffsetF;
  const clusterMask = (<u64>1 << clusterBits) - 1;
  const inCluster = position & clusterMask;
  if (inCluster + <u64>lengthF > clusterMask + 1) return -1;
  if (lookupL2Entry(position, L2Access.PROBE) != Status.OK) return -1;
  const entryPtr = l2EntryAddress();
  if (entryPtr == 0) return -1;
  const entry = loadBE64(entryPtr);
  const hostCluster = entry & L2E_OFFSET_MASK;
  if ((entry & (QCOW_OFLAG_COMPRESSED | QCOW_OFLAG_ZERO | L2E_STD_RESERVED_MASK)) != 0 || hostCluster == 0 || (hostCluster & clusterMask) != 0) return -1;
  return <f64>(hostCluster + inCluster);
}

/** Guest bytes the last mapRange call covered, from its guestOffset. */
export function mappedBytes(guestOffsetF: f64): f64 { return <f64>mappedEnd - guestOffsetF; }
/** Bytes of a metadata slice (what a NEED_TABLE load reads). */
export function sliceBytes(): u32 { return <u32>1 << sliceBits; }
/** The reason of the last CORRUPT result. */
export function corruptReason(): i32 { return corruption; }
/** The guest offset whose mapping was corrupt. */
export function corruptGuestOffset(): f64 { return <f64>corruptAt; }

// Maps from `position` to at most the end of its cluster (or subcluster, or the whole L2 range
// when the L1 entry is empty), appending one run; sets mappedEnd.
function mapStep(position: u64, end: u64): Status {
  const found = lookupL2Entry(position, L2Access.READ);
  if (found != Status.OK) return found;
  const entryPtr = l2EntryAddress();
  if (entryPtr == 0) {
    const l2End = ((position >> l2CoverageBits()) + 1) << l2CoverageBits();
    emit(RunKind.UNALLOCATED, position, min(end, l2End) - position, 0, 0);
    return Status.OK;
  }
  const entry = loadBE64(entryPtr);
  const clusterStart = (position >> clusterBits) << clusterBits;
  const clusterEnd = clusterStart + (<u64>1 << clusterBits);
  const inCluster = position - clusterStart;

  if (entry & QCOW_OFLAG_COMPRESSED) return mapCompressed(entry, position, min(end, clusterEnd));
  if (entry & L2E_STD_RESERVED_MASK) return corrupt(MappingCorruption.L2_RESERVED_BITS, position);
  const hostCluster = entry & L2E_OFFSET_MASK;
  if (hostCluster & ((<u64>1 << clusterBits) - 1)) return corrupt(MappingCorruption.DATA_CLUSTER_UNALIGNED, position);
  const isAllocated = hostCluster != 0 || (hasExternalData && (entry & QCOW_OFLAG_COPIED) != 0);

  if (!hasExtendedL2) {
    const stepEnd = min(end, clusterEnd);
    if (entry & QCOW_OFLAG_ZERO) emit(RunKind.ZERO, position, stepEnd - position, 0, 0);
    else if (isAllocated) emit(RunKind.DATA, position, stepEnd - position, hostCluster + inCluster, 0);
    else emit(RunKind.UNALLOCATED, position, stepEnd - position, 0, 0);
    return Status.OK;
  }

  // Extended L2 (qcow2 spec, "Extended L2 Entries"): the bitmap decides per subcluster.
  if (entry & QCOW_OFLAG_ZERO) return corrupt(MappingCorruption.EXTENDED_ENTRY_ZERO_FLAG, position);
  const bitmap = loadBE64(entryPtr + 8);
  const allocBits = <u32>bitmap;
  const zeroBits = <u32>(bitmap >> 32);
  if (allocBits & zeroBits) return corrupt(MappingCorruption.SUBCLUSTER_ALLOC_AND_ZERO, position);
  if (!isAllocated && allocBits != 0) return corrupt(MappingCorruption.SUBCLUSTER_ALLOC_WITHOUT_CLUSTER, position);
  const subcluster = <u32>(inCluster >> subclusterBits);
  const isData = (allocBits >> subcluster) & 1;
  const isZero = (zeroBits >> subcluster) & 1;
  // Extend over following subclusters of the same state.
  let last = subcluster;
  while (last < 31 && ((allocBits >> (last + 1)) & 1) == isData && ((zeroBits >> (last + 1)) & 1) == isZero) last++;
  const stepEnd = min(end, clusterStart + ((<u64>(last + 1)) << subclusterBits));
  if (isZero) emit(RunKind.ZERO, position, stepEnd - position, 0, 0);
  else if (isData) emit(RunKind.DATA, position, stepEnd - position, hostCluster + inCluster, 0);
  else emit(RunKind.UNALLOCATED, position, stepEnd - position, 0, 0);
  return Status.OK;
}

// A compressed cluster (format.ts decodes the descriptor).
function mapCompressed(entry: u64, position: u64, stepEnd: u64): Status {
  const hostOffset = compressedHostOffset(entry, clusterBits);
  if (hostOffset >= COMPRESSED_OFFSET_LIMIT) return corrupt(MappingCorruption.COMPRESSED_OFFSET_TOO_LARGE, position);
  const sectorCount = compressedSectorCount(entry, clusterBits);
  const compressedBytes = sectorCount * 512 - (hostOffset & 511);
  // Never joined with a neighbour: the run's guest start (and so its offset in the cluster)
  // tells TypeScript which part of the inflated cluster it wants.
  writeRun(runCount, RunKind.COMPRESSED, position, stepEnd - position, hostOffset, compressedBytes);
  runCount++;
  mappedEnd = stepEnd;
  return Status.OK;
}

function emit(kind: RunKind, guestOffset: u64, length: u64, hostOffset: u64, compressedBytes: u64): void {
  mappedEnd = guestOffset + length;
  if (runCount > 0) {
    const last = regionOffset(Region.RUNS) + <usize>(runCount - 1) * RUN_STRIDE;
    const lastKind = <i32>load<f64>(last);
    const lastLength = <u64>load<f64>(last, 16);
    if (lastKind == kind && kind != RunKind.COMPRESSED &&
        (kind != RunKind.DATA || <u64>load<f64>(last, 24) + lastLength == hostOffset)) {
      store<f64>(last, <f64>(lastLength + length), 16);
      return;
    }
  }
  writeRun(runCount, kind, guestOffset, length, hostOffset, compressedBytes);
  runCount++;
}

function writeRun(index: i32, kind: RunKind, guestOffset: u64, length: u64, hostOffset: u64, compressedBytes: u64): void {
  const run = regionOffset(Region.RUNS) + <usize>index * RUN_STRIDE;
  store<f64>(run, <f64>kind);
  store<f64>(run, <f64>guestOffset, 8);
  store<f64>(run, <f64>length, 16);
  store<f64>(run, <f64>hostOffset, 24);
  store<f64>(run, <f64>compressedBytes, 32);
}

/** Records why the mapping of `guestOffset` is corrupt (corruptReason); returns Status.CORRUPT. */
export function corrupt(reason: MappingCorruption, guestOffset: u64): Status {
  corruption = reason;
  corruptAt = guestOffset;
  return Status.CORRUPT;
}
