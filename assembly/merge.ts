// SPDX-License-Identifier: MIT
// Write merging, the seed of the project (QEMU's bdrv_aio_multiwrite, made exact): a batch of
// write requests in, merged extents out. Sans I/O and data-free: extents name their bytes as
// (request, offset in request, length) pieces; guest data never enters wasm memory.

import {
  Region, regionOffset, MAX_BATCH_REQUESTS, PIECE_CAPACITY, EXTENT_CAPACITY,
  REQUEST_STRIDE, REQUEST_MAP_STRIDE, PIECE_STRIDE, EXTENT_STRIDE,
} from './layout';
import { Status } from './status';
import { gapMergeAllowed } from './gap';

/** How much mergeWrites merges; the switches benchmarks and tests compare. */
export enum MergeMode {
  /** One extent per request, in submission order (what QEMU's block layer does today). */
  OFF = 0,
  /** Sort, then join only strictly sequential requests (what virtio-blk does today). */
  ADJACENT = 1,
  /** Sort, join sequential, overlapping and contained requests, and gaps the format allows. */
  FULL = 2,
}

/** Piece requestIndex value that marks a gap the format fills. */
export const GAP_REQUEST: i32 = -1;

// 2^53: the largest byte position a double holds exactly.
const MAX_EXACT_POSITION: f64 = 9007199254740992.0;

// Per-call state (one wasm instance serves one image; calls never interleave).
let starts: usize = 0; // u64 guest start per request
let ends: usize = 0; // u64 guest end per request
let order: usize = 0; // u32 request indices, sorted
let sortBuffer: usize = 0; // u32 merge-sort scratch
let heap: usize = 0; // u32 max-heap of active request indices (by submission order)
let keys: usize = 0; // u64 packed sort keys (start << 12 | index)
let keysBuffer: usize = 0;
let maxStart: u64 = 0;
let heapSize: i32 = 0;

let pieceCount: i32 = 0;
let extentCount: i32 = 0;
let extentOpen: bool = false;
let extentBytes: u64 = 0;
let extentPieces: i32 = 0;
let capIov: i32 = 1;
let capBytes: u64 = 1;
let overflowed: bool = false;

/**
 * Merges a batch of write requests into extents.
 *
 * Input: REQUESTS holds `requestCount` records (guestOffset, length), in submission order; the
 * record index is the submission order. `maxIov` (>= 1) caps pieces per extent and
 * `maxTransfer` (>= 1) caps bytes per extent.
 *
 * Output:
 * - EXTENTS: disjoint guest ranges, ascending by guest offset (in submission order for OFF),
 *   each naming a run of consecutive PIECES that tile it exactly.
 * - PIECES: (requestIndex, offsetInRequest, length); requestIndex GAP_REQUEST marks gap fill.
 * - REQUEST_MAP: per request, the run of extents whose range overlaps the request's range
 *   (firstExtent, extentCount); a request is done when all of those extents are written.
 *
 * Semantics: writing every extent gives exactly the bytes that applying the requests one by one
 * in submission order gives; on overlap the later request wins byte for byte (FULL and ADJACENT
 * never write a byte a later request overwrites). Zero-length requests produce nothing.
 *
 * Returns the extent count (>= 0), or a negative Status: -INVALID for a bad count, cap, offset
 * or length (positions must be integers with offset + length <= 2^53), -OUTPUT_FULL when the
 * result does not fit PIECES/EXTENTS (retry with fewer requests).
 */
export function mergeWrites(requestCount: i32, mode: i32, maxIov: i32, maxTransfer: f64): i32 {
  if (<u32>requestCount > <u32>MAX_BATCH_REQUESTS || <u32>mode > <u32>MergeMode.FULL) return -Status.INVALID;
  if (maxIov < 1 || !(maxTransfer >= 1.0) || maxTransfer > MAX_EXACT_POSITION) return -Status.INVALID;
  if (!loadRequests(requestCount)) return -Status.INVALID;
  capIov = maxIov;
  capBytes = <u64>maxTransfer;
  pieceCount = 0;
  extentCount = 0;
  extentOpen = false;
  overflowed = false;

  if (mode == MergeMode.OFF) {
    emitUnmerged(requestCount);
  } else {
    sortRequests(requestCount);
    sweep(requestCount, mode);
  }
  closeExtent();
  if (overflowed) return -Status.OUTPUT_FULL;
  if (mode == MergeMode.OFF) mapRequestsInOrder(requestCount);
  else mapRequestsByOverlap(requestCount);
  return extentCount;
}

// Reads REQUESTS into u64 start/end keys; false when a record is not an exact integer range.
function loadRequests(count: i32): bool {
  const scratch = regionOffset(Region.SCRATCH);
  const max = <usize>MAX_BATCH_REQUESTS;
  starts = scratch;
  ends = starts + (max << 3);
  order = ends + (max << 3);
  sortBuffer = order + (max << 2);
  heap = sortBuffer + (max << 2);
  keys = heap + (max << 2);
  keysBuffer = keys + (max << 3);
  maxStart = 0;
  const records = regionOffset(Region.REQUESTS);
  for (let i = 0; i < count; i++) {
    const record = records + <usize>i * REQUEST_STRIDE;
    const offset = load<f64>(record);
    const length = load<f64>(record, 8);
    // Negated comparisons also reject NaN.
    if (!(offset >= 0.0) || !(length >= 0.0) || offset + length > MAX_EXACT_POSITION) return false;
    if (offset != Math.floor(offset) || length != Math.floor(length)) return false;
    const start = <u64>offset;
    store<u64>(starts + (<usize>i << 3), start);
    store<u64>(ends + (<usize>i << 3), start + <u64>length);
    store<u32>(order + (<usize>i << 2), <u32>i);
    if (start > maxStart) maxStart = start;
  }
  return true;
}

@inline function startOf(request: u32): u64 { return load<u64>(starts + (<usize>request << 3)); }
@inline function endOf(request: u32): u64 { return load<u64>(ends + (<usize>request << 3)); }
@inline function orderAt(i: i32): u32 { return load<u32>(order + (<usize>i << 2)); }

// Sort key (guest start, submission order). Compared field by field: never by subtracting
// 64-bit values into a narrower result (the overflow QEMU's multireq_compare warns about).
@inline function sortsBefore(a: u32, b: u32): bool {
  const startA = startOf(a);
  const startB = startOf(b);
  return startA < startB || (startA == startB && a < b);
}

// Sorts `order` by (start, index). Keys are unique, so the order is total and the sort stable.
// Already sorted input (sequential streams) costs one pass; starts below 2^52 sort as packed
// branch-free u64 keys; the field-by-field sort is the fallback.
function sortRequests(count: i32): void {
  let sorted = true;
  for (let i = 1; i < count; i++) {
    if (startOf(<u32>i) < startOf(<u32>(i - 1))) { sorted = false; break; }
  }
  if (sorted) return;
  if (maxStart < (<u64>1 << 52)) {
    sortPacked(count);
    return;
  }
  if (count <= 24) {
    for (let i = 1; i < count; i++) {
      const moving = orderAt(i);
      let j = i - 1;
      while (j >= 0 && sortsBefore(moving, orderAt(j))) {
        store<u32>(order + (<usize>(j + 1) << 2), orderAt(j));
        j--;
      }
      store<u32>(order + (<usize>(j + 1) << 2), moving);
    }
    return;
  }
  // Bottom-up merge sort, ping-ponging between order and sortBuffer.
  let from = order;
  let to = sortBuffer;
  for (let width = 1; width < count; width <<= 1) {
    for (let lo = 0; lo < count; lo += width << 1) {
      const mid = min(lo + width, count);
      const hi = min(lo + (width << 1), count);
      let left = lo;
      let right = mid;
      for (let k = lo; k < hi; k++) {
        let take: u32;
        if (left < mid && (right >= hi ||
            !sortsBefore(load<u32>(from + (<usize>right << 2)), load<u32>(from + (<usize>left << 2))))) {
          take = load<u32>(from + (<usize>left << 2));
          left++;
        } else {
          take = load<u32>(from + (<usize>right << 2));
          right++;
        }
        store<u32>(to + (<usize>k << 2), take);
      }
    }
    const swap = from;
    from = to;
    to = swap;
  }
  if (from != order) memory.copy(order, from, <usize>count << 2);
}

// Sorts (start << 12 | index) keys, which are unique and order exactly like (start, index).
function sortPacked(count: i32): void {
  for (let i = 0; i < count; i++) store<u64>(keys + (<usize>i << 3), (startOf(<u32>i) << 12) | <u64>i);
  let from = keys;
  let to = keysBuffer;
  if (count <= 24) {
    for (let i = 1; i < count; i++) {
      const moving = load<u64>(from + (<usize>i << 3));
      let j = i - 1;
      while (j >= 0 && load<u64>(from + (<usize>j << 3)) > moving) {
        store<u64>(from + (<usize>(j + 1) << 3), load<u64>(from + (<usize>j << 3)));
        j--;
      }
      store<u64>(from + (<usize>(j + 1) << 3), moving);
    }
  } else {
    for (let width = 1; width < count; width <<= 1) {
      for (let lo = 0; lo < count; lo += width << 1) {
        const mid = min(lo + width, count);
        const hi = min(lo + (width << 1), count);
        let left = lo;
        let right = mid;
        let k = lo;
        while (left < mid && right < hi) {
          const a = load<u64>(from + (<usize>left << 3));
          const b = load<u64>(from + (<usize>right << 3));
          const takeLeft = a < b;
          store<u64>(to + (<usize>k << 3), select<u64>(a, b, takeLeft));
          left += <i32>takeLeft;
          right += <i32>!takeLeft;
          k++;
        }
        while (left < mid) { store<u64>(to + (<usize>k << 3), load<u64>(from + (<usize>left << 3))); left++; k++; }
        while (right < hi) { store<u64>(to + (<usize>k << 3), load<u64>(from + (<usize>right << 3))); right++; k++; }
      }
      const swap = from;
      from = to;
      to = swap;
    }
  }
  for (let i = 0; i < count; i++) store<u32>(order + (<usize>i << 2), <u32>(load<u64>(from + (<usize>i << 3)) & 0xfff));
}

// Max-heap of active requests keyed by submission order: the top is the request that wins.
@inline function heapAt(i: i32): u32 { return load<u32>(heap + (<usize>i << 2)); }
@inline function heapSet(i: i32, value: u32): void { store<u32>(heap + (<usize>i << 2), value); }

function heapPush(request: u32): void {
  let i = heapSize++;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    const parentValue = heapAt(parent);
    if (parentValue >= request) break;
    heapSet(i, parentValue);
    i = parent;
  }
  heapSet(i, request);
}

function heapPop(): void {
  const last = heapAt(--heapSize);
  let i = 0;
  while (true) {
    const left = (i << 1) + 1;
    if (left >= heapSize) break;
    let child = left;
    if (left + 1 < heapSize && heapAt(left + 1) > heapAt(left)) child = left + 1;
    if (heapAt(child) <= last) break;
    heapSet(i, heapAt(child));
    i = child;
  }
  if (heapSize > 0) heapSet(i, last);
}

// The sweep: walk sorted requests from low to high guest offset. At every position the winning
// byte source is the active request submitted last (the heap top). A group is a maximal run of
// touching (or, in FULL mode, gap-joinable) requests; each group becomes one or more extents.
//
// 1. Admit every request that starts at or before the current position.
// 2. Drop finished requests from the top of the heap (finished ones below the top are dropped
//    when they surface: they can never win again).
// 3. If nothing is active, the group ends, unless FULL mode may bridge the gap to the next one.
// 4. Otherwise emit the top request's bytes up to its end or the next start, whichever is first.
function sweep(count: i32, mode: i32): void {
  let next = 0;
  while (next < count) {
    const first = orderAt(next);
    if (startOf(first) == endOf(first)) { next++; continue; }
    let position = startOf(first);
    heapSize = 0;
    let isGroupStart = true;
    let previousRequest: i32 = -2;
    let previousEndedRequest = false;
    while (true) {
      // Step 1.
      while (next < count && startOf(orderAt(next)) <= position) {
        const request = orderAt(next++);
        if (endOf(request) > startOf(request)) heapPush(request);
      }
      // Step 2.
      while (heapSize > 0 && endOf(heapAt(0)) <= position) heapPop();
      // Step 3.
      if (heapSize == 0) {
        // Empty requests write nothing: a gap is bridged only to bytes that are written.
        while (next < count && startOf(orderAt(next)) == endOf(orderAt(next))) next++;
        if (next >= count) break;
        const nextStart = startOf(orderAt(next));
        if (mode == MergeMode.FULL && gapFitsOpenExtent(nextStart - position) && gapMergeAllowed(position, nextStart)) {
          emitPiece(GAP_REQUEST, 0, position, nextStart - position, true);
          previousRequest = GAP_REQUEST;
          position = nextStart;
          continue;
        }
        break;
      }
      // Step 4.
      const winner = heapAt(0);
      let until = endOf(winner);
      if (next < count) {
        const nextStart = startOf(orderAt(next));
        if (nextStart < until) until = nextStart;
      }
      const offsetInRequest = position - startOf(winner);
      let joins = !isGroupStart;
      if (joins && mode == MergeMode.ADJACENT && <i32>winner != previousRequest) {
        // Strictly sequential hand-over only: the previous request ended here and this one
        // starts here.
        joins = previousEndedRequest && offsetInRequest == 0;
      }
      emitPiece(<i32>winner, offsetInRequest, position, until - position, joins);
      previousRequest = <i32>winner;
      previousEndedRequest = until == endOf(winner);
      isGroupStart = false;
      position = until;
    }
    closeExtent();
  }
}

// A bridged gap must share its extent with the written bytes after it (an extent made only of a
// gap would rewrite what is already there, and no request would own it): it and the first byte
// of the next request, as two more pieces, must fit the extent that is open.
function gapFitsOpenExtent(gapBytes: u64): bool {
  return extentOpen && extentPieces + 2 <= capIov && extentBytes + gapBytes < capBytes;
}

// OFF mode: every non-empty request is its own extent (split only by maxTransfer).
function emitUnmerged(count: i32): void {
  for (let i = 0; i < count; i++) {
    const start = startOf(<u32>i);
    const end = endOf(<u32>i);
    if (end > start) emitPiece(i, 0, start, end - start, false);
    closeExtent();
  }
}

// Appends bytes to the output: extends the last piece when it continues the same source,
// otherwise adds a piece, opening and closing extents to honour `joins` and the caps.
// `guestOffset` is where the bytes land.
function emitPiece(request: i32, offsetInRequest: u64, guestOffset: u64, length: u64, joins: bool): void {
  if (!joins) closeExtent();
  const pieces = regionOffset(Region.PIECES);
  while (length > 0 && !overflowed) {
    if (!extentOpen) openExtent(guestOffset);
    if (overflowed) return;
    if (extentBytes == capBytes) { closeExtent(); continue; }
    const room = capBytes - extentBytes;
    const take = length < room ? length : room;
    const last = pieces + <usize>(pieceCount - 1) * PIECE_STRIDE;
    if (extentPieces > 0 && <i32>load<f64>(last) == request &&
        <u64>load<f64>(last, 8) + <u64>load<f64>(last, 16) == offsetInRequest) {
      store<f64>(last, load<f64>(last, 16) + <f64>take, 16);
    } else {
      if (extentPieces == capIov) { closeExtent(); continue; }
      if (pieceCount == PIECE_CAPACITY) { overflowed = true; return; }
      const piece = pieces + <usize>pieceCount * PIECE_STRIDE;
      store<f64>(piece, <f64>request);
      store<f64>(piece, <f64>offsetInRequest, 8);
      store<f64>(piece, <f64>take, 16);
      pieceCount++;
      extentPieces++;
    }
    extentBytes += take;
    offsetInRequest += take;
    guestOffset += take;
    length -= take;
  }
}

function openExtent(guestOffset: u64): void {
  if (extentCount == EXTENT_CAPACITY) { overflowed = true; return; }
  const extent = regionOffset(Region.EXTENTS) + <usize>extentCount * EXTENT_STRIDE;
  store<f64>(extent, <f64>guestOffset);
  store<f64>(extent, <f64>pieceCount, 16);
  extentOpen = true;
  extentBytes = 0;
  extentPieces = 0;
}

function closeExtent(): void {
  if (!extentOpen) return;
  const extent = regionOffset(Region.EXTENTS) + <usize>extentCount * EXTENT_STRIDE;
  store<f64>(extent, <f64>extentBytes, 8);
  store<f64>(extent, <f64>extentPieces, 24);
  extentCount++;
  extentOpen = false;
}

@inline function extentStart(i: i32): u64 {
  return <u64>load<f64>(regionOffset(Region.EXTENTS) + <usize>i * EXTENT_STRIDE);
}
@inline function extentEnd(i: i32): u64 {
  const extent = regionOffset(Region.EXTENTS) + <usize>i * EXTENT_STRIDE;
  return <u64>load<f64>(extent) + <u64>load<f64>(extent, 8);
}

@inline function setRequestMap(request: i32, firstExtent: i32, count: i32): void {
  const record = regionOffset(Region.REQUEST_MAP) + <usize>request * REQUEST_MAP_STRIDE;
  store<i32>(record, firstExtent);
  store<i32>(record, count, 4);
}

// OFF mode: extents appear in request order; a request's run is the next extents until its
// length is covered (maxTransfer may have split it into several).
function mapRequestsInOrder(count: i32): void {
  let extent = 0;
  for (let i = 0; i < count; i++) {
    let remaining = endOf(<u32>i) - startOf(<u32>i);
    const first = extent;
    while (remaining > 0) {
      remaining -= extentEnd(extent) - extentStart(extent);
      extent++;
    }
    setRequestMap(i, first, extent - first);
  }
}

// Sorted modes: extents are disjoint and ascending, and `order` holds the requests by start, so
// the first extent ending after each start only moves forward: one merge-like walk.
function mapRequestsByOverlap(count: i32): void {
  let lo = 0;
  for (let k = 0; k < count; k++) {
    const i = orderAt(k);
    const start = startOf(i);
    const end = endOf(i);
    while (lo < extentCount && extentEnd(lo) <= start) lo++;
    let last = lo;
    if (end > start) {
      while (last < extentCount && extentStart(last) < end) last++;
    }
    setRequestMap(<i32>i, lo, last - lo);
  }
}
