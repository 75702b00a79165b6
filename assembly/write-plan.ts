// SPDX-License-Identifier: MIT
// The write plan record (QEMU's QCowL2Meta, as data): what planWrite decided for one run, in the
// PLAN region, read by TypeScript through one Float64Array view. It carries the guest and host
// ranges, the host clusters taken (for commit, or for the abort that gives them back), and for
// the uncovered head and tail of the run where their bytes come from (copy-on-write), so the
// executor in TypeScript only reads, writes and commits what the record says. describeContent
// answers the same question for any guest range inside one cluster (gap fills, pending tails).
//
//   field            meaning (f64 each; byte positions exact to 2^53)
//   ---------------  ------------------------------------------------------------
//   KIND             PlanKind (allocate.ts)
//   GUEST_START/END  the guest run the plan covers (whole clusters or subclusters unless in place)
//   HOST_START       host offset of GUEST_START
//   TAKEN_HOST       first host cluster allocated for the plan (refcount raised), when TAKEN_CLUSTERS > 0
//   TAKEN_CLUSTERS   host clusters allocated: commit points entries at them, an abort releases them
//   TAIL_DEFERRABLE  1 when the tail may be left pending (deferred copy-on-write)
//   HEAD, TAIL       copy records (below) for [GUEST_START, write start) and [write end, GUEST_END)
//   CONTENT          the copy record of the last describeContent call
//
// A copy record is COPY_FIELDS f64: SOURCE (CopySource), GUEST_OFFSET, BYTES (the bytes to
// supply), SOURCE_BYTES (of those, how many the source gives; the rest, past the virtual size,
// are zeros), HOST_OFFSET (DATA: the first byte; COMPRESSED: the compressed data) and
// COMPRESSED_BYTES.

import { hasExternalData, virtualSizeBytes } from './geometry';
import { RunKind, mapRange, mappedBytes } from './mapping';
import { Region, regionOffset, RUN_STRIDE } from './layout';
import { Status } from './status';

/** Where the bytes of a copy record come from. */
export enum CopySource {
  /** Nothing to write: no bytes, zeros into a fresh cluster (it reads as zeros), or bytes already in place. */
  NONE = 0,
  /** Write zeros (the target does not read as zeros by itself). */
  ZEROS = 1,
  /** The backing file at the same guest range (zeros past its end). */
  BACKING = 2,
  /** Host bytes of the image (its data file when there is one) from HOST_OFFSET. */
  DATA = 3,
  /** Part of the compressed cluster at HOST_OFFSET (COMPRESSED_BYTES long), at the guest offset's place in the cluster. */
  COMPRESSED = 4,
  /** Mixed (e.g. subclusters in different states): read the guest range through the mapping. */
  MAPPED = 5,
}

/** Field indexes (f64 units) of the plan record. */
export enum PlanField {
  KIND = 0,
  GUEST_START = 1,
  GUEST_END = 2,
  HOST_START = 3,
  TAKEN_HOST = 4,
  TAKEN_CLUSTERS = 5,
  TAIL_DEFERRABLE = 6,
  HEAD = 8,
  TAIL = 14,
  CONTENT = 20,
}

/** Field indexes (f64 units) inside a copy record. */
export enum CopyField {
  SOURCE = 0,
  GUEST_OFFSET = 1,
  BYTES = 2,
  SOURCE_BYTES = 3,
  HOST_OFFSET = 4,
  COMPRESSED_BYTES = 5,
}

/** f64 fields of one copy record. */
export const COPY_FIELDS: i32 = 6;
/** f64 fields of the plan record. */
export const PLAN_FIELDS: i32 = 26;

let backingBytes: u64 = 0;

/**
 * The guest bytes the backing file supplies: its virtual size, 0 without one. Unallocated bytes
 * at or past it read as zeros, so copy-on-write of them needs no read.
 */
export function setBackingBytes(bytes: f64): void {
  backingBytes = bytes > 0 ? <u64>bytes : 0;
}

@inline function planAddress(): usize { return regionOffset(Region.PLAN); }

/** Stores `value` in field `field` of the plan record. */
export function setPlanField(field: i32, value: f64): void {
  store<f64>(planAddress() + (<usize>field << 3), value);
}

/** Fills the plan record's ranges; clears the taken clusters and the deferral flag. */
export function writePlan(kind: i32, guestStart: u64, guestEnd: u64, hostStart: u64): void {
  setPlanField(PlanField.KIND, <f64>kind);
  setPlanField(PlanField.GUEST_START, <f64>guestStart);
  setPlanField(PlanField.GUEST_END, <f64>guestEnd);
  setPlanField(PlanField.HOST_START, <f64>hostStart);
  setPlanField(PlanField.TAKEN_HOST, 0);
  setPlanField(PlanField.TAKEN_CLUSTERS, 0);
  setPlanField(PlanField.TAIL_DEFERRABLE, 0);
}

/** The SOURCE of copy record `record` (PlanField.HEAD, TAIL or CONTENT). */
export function copySourceOf(record: i32): CopySource {
  return <CopySource><i32>load<f64>(planAddress() + (<usize>(record + CopyField.SOURCE) << 3));
}

function setCopy(record: i32, source: CopySource, hostOffset: u64, compressedBytes: u64): void {
  setPlanField(record + CopyField.SOURCE, <f64>source);
  setPlanField(record + CopyField.HOST_OFFSET, <f64>hostOffset);
  setPlanField(record + CopyField.COMPRESSED_BYTES, <f64>compressedBytes);
}

/**
 * Fills copy record `record` with where the bytes guest [guestStart, guestStart + bytes) (inside
 * one cluster) read from now, for writing them to host bytes from `targetHost`: a target that
 * reads as zeros by itself (`targetFresh`: a cluster allocated past the old end of the file,
 * without an external data file) needs nothing for zeros, and bytes already at the target need
 * nothing. Reads the mapping (mapping.ts), so it decides exactly as reads do. OK, NEED_TABLE
 * (the cluster's L2 slice is not cached; see need.ts), CORRUPT.
 */
export function describeCopy(record: i32, guestStart: u64, bytes: u64, targetFresh: bool, targetHost: u64): Status {
  const inside = guestStart >= virtualSizeBytes ? 0 : min(bytes, virtualSizeBytes - guestStart);
  setPlanField(record + CopyField.GUEST_OFFSET, <f64>guestStart);
  setPlanField(record + CopyField.BYTES, <f64>bytes);
  setPlanField(record + CopyField.SOURCE_BYTES, <f64>inside);
  const zeros = targetFresh && !hasExternalData ? CopySource.NONE : CopySource.ZEROS;
  if (bytes == 0) {
    setCopy(record, CopySource.NONE, 0, 0);
    return Status.OK;
  }
  if (inside == 0) {
    setCopy(record, zeros, 0, 0);
    return Status.OK;
  }
  const count = mapRange(<f64>guestStart, <f64>inside);
  if (count < 0) return <Status>(-count);
  if (<u64>mappedBytes(<f64>guestStart) != inside) {
    setCopy(record, CopySource.MAPPED, 0, 0);
    return Status.OK;
  }
  const runs = regionOffset(Region.RUNS);
  let readsZeros = true;
  for (let i = 0; i < count; i++) {
    const run = runs + <usize>i * RUN_STRIDE;
    const kind = <i32>load<f64>(run);
    if (kind == RunKind.ZERO || (kind == RunKind.UNALLOCATED && <u64>load<f64>(run, 8) >= backingBytes)) continue;
    readsZeros = false;
    break;
  }
  if (readsZeros) setCopy(record, zeros, 0, 0);
  else if (count > 1) setCopy(record, CopySource.MAPPED, 0, 0);
  else {
    const kind = <i32>load<f64>(runs);
    const hostOffset = <u64>load<f64>(runs, 24);
    if (kind == RunKind.UNALLOCATED) setCopy(record, CopySource.BACKING, 0, 0);
    else if (kind == RunKind.DATA) setCopy(record, hostOffset == targetHost ? CopySource.NONE : CopySource.DATA, hostOffset, 0);
    else if (kind == RunKind.COMPRESSED) setCopy(record, CopySource.COMPRESSED, hostOffset, <u64>load<f64>(runs, 32));
    else setCopy(record, CopySource.MAPPED, 0, 0);
  }
  return Status.OK;
}

/**
 * What guest [guestStartF, guestStartF + bytesF) (inside one cluster) reads as now, as the
 * CONTENT copy record: to fill a merged write's gap (`targetFresh` 0: zeros come back as ZEROS)
 * or the pending tail of a new cluster (`targetFresh` 1: zeros need nothing). OK, NEED_TABLE
 * (call again), CORRUPT.
 */
export function describeContent(guestStartF: f64, bytesF: f64, targetFresh: i32): Status {
  if (!(guestStartF >= 0) || !(bytesF >= 0)) return Status.INVALID;
  return describeCopy(PlanField.CONTENT, <u64>guestStartF, <u64>bytesF, targetFresh != 0, <u64>-1);
}
