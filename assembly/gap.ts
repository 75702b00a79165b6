// SPDX-License-Identifier: MIT
// The gap-merge hook: may a merged write span the gap between two groups of requests? Only a
// format that can fill the gap with exactly what the guest would read there says yes (qcow2, for
// gaps inside clusters the batch allocates). Raw images never do: the policy defaults to NEVER.

import { WriteState, writeStateOf } from './write-state';

/** Which rule answers gapMergeAllowed. */
export enum GapPolicy {
  /** Never merge across a gap (raw images; the default). */
  NEVER = 0,
  /** Merge when the gap lies inside one aligned block of 2^blockBits bytes. */
  WITHIN_BLOCK = 1,
  /**
   * qcow2: merge when the gap lies inside one cluster (2^blockBits bytes) that a write would
   * allocate fresh (writeStateOf: FRESH), so the merged write fills a new cluster instead of
   * overwriting data in place.
   */
  WITHIN_FRESH_CLUSTER = 2,
}

let policy: GapPolicy = GapPolicy.NEVER;
let blockBits: u32 = 16;

/**
 * Chooses the gap policy for later mergeWrites calls of this instance.
 * `bits` is log2 of the block size for WITHIN_BLOCK (9..30). Returns false and keeps the old
 * policy when the arguments are out of range.
 */
export function setGapPolicy(newPolicy: i32, bits: i32): bool {
  if (newPolicy == GapPolicy.NEVER) {
    policy = GapPolicy.NEVER;
    return true;
  }
  if ((newPolicy == GapPolicy.WITHIN_BLOCK || newPolicy == GapPolicy.WITHIN_FRESH_CLUSTER) && bits >= 9 && bits <= 30) {
    policy = <GapPolicy>newPolicy;
    blockBits = <u32>bits;
    return true;
  }
  return false;
}

/**
 * True when a merged write may cover the guest gap [gapStart, gapEnd) (gapStart < gapEnd) with
 * fill data the format supplies.
 */
export function gapMergeAllowed(gapStart: u64, gapEnd: u64): bool {
  if (policy == GapPolicy.NEVER) return false;
  // Same block iff the first and last gap byte share the block number.
  if ((gapStart >> blockBits) != ((gapEnd - 1) >> blockBits)) return false;
  return policy == GapPolicy.WITHIN_BLOCK || writeStateOf(<f64>gapStart) == WriteState.FRESH;
}
