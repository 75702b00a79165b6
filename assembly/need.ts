// SPDX-License-Identifier: MIT
// The NEED record: what a sans-I/O call wants done before it is called again. TABLE: read one
// slice of a metadata table into a cache (cache.ts beginSliceLoad, then commitSliceLoad);
// WRITEBACK: a cache holds only dirty slices, so write metadata back first
// (bindings/qcow2/qcow2-writeback.ts); TABLE_COPY: copy the shared L2 table of one L1 entry
// (bindings/qcow2/qcow2-table-copy.ts).

import { CacheId } from './cache';
import { Status } from './status';

let needCache: CacheId = CacheId.L2;
let needHost: u64 = 0;
let needL1: u64 = 0;

/** Records a need for the slice at `hostOffset` of `cache`; returns Status.NEED_TABLE. */
export function needTable(cache: CacheId, hostOffset: u64): Status {
  needCache = cache;
  needHost = hostOffset;
  return Status.NEED_TABLE;
}

/** Records that `cache` must be written back; returns Status.NEED_WRITEBACK. */
export function needWriteback(cache: CacheId): Status {
  needCache = cache;
  return Status.NEED_WRITEBACK;
}

/** Records that the L2 table of L1 entry `l1Index` is shared and must be copied; returns Status.NEED_TABLE_COPY. */
export function needTableCopy(l1Index: u64): Status {
  needL1 = l1Index;
  return Status.NEED_TABLE_COPY;
}

/** The cache of the last need. */
export function needCacheId(): i32 { return needCache; }
/** Host offset of the slice the last NEED_TABLE asked for. */
export function needHostOffset(): f64 { return <f64>needHost; }

/** The L1 entry index the last NEED_TABLE_COPY named. */
export function needL1Index(): f64 { return <f64>needL1; }
