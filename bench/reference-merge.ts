// SPDX-License-Identifier: MIT
// The merge algorithm of assembly/merge.ts written as plain, idiomatic TypeScript (objects, arrays,
// Array.prototype.sort, a small binary heap): the baseline the wasm core has to beat.

import type { MergeMode } from '../bindings/core/merge-core.js';

/** A write request as the dispatcher holds it: guest byte offset and byte length. */
export interface MergeRequest {
  readonly offset: number;
  readonly length: number;
}

/** A merged host write: guest range and the run of pieces [firstPiece, firstPiece + pieceCount). */
export interface ReferenceExtent {
  guestOffset: number;
  length: number;
  firstPiece: number;
  pieceCount: number;
}

/** A slice of one request's data (requestIndex -1 marks a gap the format fills). */
export interface ReferencePiece {
  requestIndex: number;
  offsetInRequest: number;
  length: number;
}

/** The extents [firstExtent, firstExtent + extentCount) that carry a request's bytes. */
export interface ReferenceRequestSpan {
  firstExtent: number;
  extentCount: number;
}

/** What referenceMerge returns: the same records, in the same order, as the wasm core. */
export interface ReferenceMergeOutput {
  extents: ReferenceExtent[];
  pieces: ReferencePiece[];
  requestMap: ReferenceRequestSpan[];
}

/** Knobs of referenceMerge that the wasm core takes from its layout and gap policy. */
export interface ReferenceMergeOptions {
  /** Bridge gaps inside one aligned block of 2^gapBlockBits bytes in 'full' mode; default never. */
  gapBlockBits?: number;
  /** Most pieces one call may produce (the core's PIECE_CAPACITY); default 16384. */
  pieceCapacity?: number;
  /** Most extents one call may produce (the core's EXTENT_CAPACITY); default 16384. */
  extentCapacity?: number;
  /** Most requests one call takes (the core's MAX_BATCH_REQUESTS); default 4096. */
  maxBatchRequests?: number;
}

/** Piece requestIndex that marks gap fill. */
export const REFERENCE_GAP_REQUEST = -1;

const MAX_EXACT_POSITION = 2 ** 53;

/**
 * Merges `requests` (in submission order) exactly like mergeWrites in assembly/merge.ts: 'off'
 * gives one extent per request in submission order; 'adjacent' and 'full' sort by (offset,
 * submission index) and sweep, the latest request winning every byte, 'adjacent' joining only
 * strictly sequential hand-overs. Extents respect `maxIov` pieces and `maxTransfer` bytes.
 * Returns 'output-full' when the result exceeds the capacities. Throws RangeError for what the
 * core rejects as INVALID (non-integer or negative positions, ranges past 2^53, bad caps, too
 * many requests).
 */
export function referenceMerge(requests: readonly MergeRequest[], mode: MergeMode, maxIov: number,
                               maxTransfer: number, options: ReferenceMergeOptions = {}): ReferenceMergeOutput | 'output-full' {
  if (requests.length > (options.maxBatchRequests ?? 4096)) throw new RangeError('too many requests in one batch');
  if (!Number.isInteger(maxIov) || maxIov < 1 || !Number.isInteger(maxTransfer) || maxTransfer < 1 || maxTransfer > MAX_EXACT_POSITION) {
    throw new RangeError(`bad caps: maxIov ${maxIov}, maxTransfer ${maxTransfer}`);
  }
  const spans = requests.map((request, index): RequestSpan => {
    const { offset, length } = request;
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > MAX_EXACT_POSITION) {
      throw new RangeError(`bad request ${index}: offset ${offset}, length ${length}`);
    }
    return { index, start: offset, end: offset + length };
  });

  const builder = new ExtentBuilder(maxIov, maxTransfer, options.pieceCapacity ?? 16384, options.extentCapacity ?? 16384);
  if (mode === 'off') {
    for (const span of spans) {
      if (span.end > span.start) builder.emit(span.index, 0, span.start, span.end - span.start, false);
      builder.close();
    }
  } else {
    const sorted = spans.slice().sort((a, b) => a.start - b.start || a.index - b.index);
    sweep(spans, sorted, mode, builder, options.gapBlockBits);
  }
  builder.close();
  if (builder.overflowed) return 'output-full';
  const { extents, pieces } = builder;
  const requestMap = mode === 'off' ? mapInOrder(spans, extents) : mapByOverlap(spans, extents);
  return { extents, pieces, requestMap };
}

interface RequestSpan {
  index: number;
  start: number;
  end: number;
}

/** A max-heap of request indices: the top is the request submitted last. */
class MaxHeap {
  private readonly items: number[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): number {
    return this.items[0];
  }

  clear(): void {
    this.items.length = 0;
  }

  push(value: number): void {
    const items = this.items;
    let i = items.length;
    items.push(value);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent] >= value) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = value;
  }

  pop(): void {
    const items = this.items;
    const last = items.pop()!;
    if (items.length === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= items.length) break;
      const child = left + 1 < items.length && items[left + 1] > items[left] ? left + 1 : left;
      if (items[child] <= last) break;
      items[i] = items[child];
      i = child;
    }
    items[i] = last;
  }
}

/** Collects pieces into extents under the caps, extending the last piece where it continues. */
class ExtentBuilder {
  readonly extents: ReferenceExtent[] = [];
  readonly pieces: ReferencePiece[] = [];
  overflowed = false;
  private open: ReferenceExtent | undefined;

  constructor(private readonly maxIov: number, private readonly maxTransfer: number,
              private readonly pieceCapacity: number, private readonly extentCapacity: number) {}

  emit(requestIndex: number, offsetInRequest: number, guestOffset: number, length: number, joins: boolean): void {
    if (!joins) this.close();
    while (length > 0 && !this.overflowed) {
      if (!this.open) {
        if (this.extents.length === this.extentCapacity) {
          this.overflowed = true;
          return;
        }
        this.open = { guestOffset, length: 0, firstPiece: this.pieces.length, pieceCount: 0 };
        this.extents.push(this.open);
      }
      const extent = this.open;
      if (extent.length === this.maxTransfer) {
        this.close();
        continue;
      }
      const take = Math.min(length, this.maxTransfer - extent.length);
      const last = this.pieces[this.pieces.length - 1];
      if (extent.pieceCount > 0 && last.requestIndex === requestIndex && last.offsetInRequest + last.length === offsetInRequest) {
        last.length += take;
      } else {
        if (extent.pieceCount === this.maxIov) {
          this.close();
          continue;
        }
        if (this.pieces.length === this.pieceCapacity) {
          this.overflowed = true;
          return;
        }
        this.pieces.push({ requestIndex, offsetInRequest, length: take });
        extent.pieceCount++;
      }
      extent.length += take;
      offsetInRequest += take;
      guestOffset += take;
      length -= take;
    }
  }

  close(): void {
    this.open = undefined;
  }

  /**
   * Whether a gap of `gapBytes` and the first byte after it, as two more pieces, fit the extent
   * that is open (a bridged gap never makes or ends an extent on its own).
   */
  gapFitsOpenExtent(gapBytes: number): boolean {
    const extent = this.open;
    return extent !== undefined && extent.pieceCount + 2 <= this.maxIov && extent.length + gapBytes < this.maxTransfer;
  }
}

// The sweep of assembly/merge.ts: walk the sorted requests; at every position the active request
// submitted last wins. Each group of touching requests becomes one or more extents.
function sweep(spans: readonly RequestSpan[], sorted: readonly RequestSpan[], mode: MergeMode,
               builder: ExtentBuilder, gapBlockBits: number | undefined): void {
  const heap = new MaxHeap();
  let next = 0;
  while (next < sorted.length) {
    const first = sorted[next];
    if (first.start === first.end) {
      next++;
      continue;
    }
    let position = first.start;
    heap.clear();
    let isGroupStart = true;
    let previousRequest = -2;
    let previousEndedRequest = false;
    for (;;) {
      // Admit every request starting at or before the position.
      while (next < sorted.length && sorted[next].start <= position) {
        const span = sorted[next++];
        if (span.end > span.start) heap.push(span.index);
      }
      // Drop finished requests from the top.
      while (heap.size > 0 && spans[heap.peek()].end <= position) heap.pop();
      if (heap.size === 0) {
        // Empty requests write nothing: a gap is bridged only to bytes that are written.
        while (next < sorted.length && sorted[next].start === sorted[next].end) next++;
        if (next >= sorted.length) break;
        const nextStart = sorted[next].start;
        if (mode === 'full' && builder.gapFitsOpenExtent(nextStart - position) && gapAllowed(position, nextStart, gapBlockBits)) {
          builder.emit(REFERENCE_GAP_REQUEST, 0, position, nextStart - position, true);
          previousRequest = REFERENCE_GAP_REQUEST;
          position = nextStart;
          continue;
        }
        break;
      }
      // Emit the winner's bytes up to its end or the next start.
      const winner = spans[heap.peek()];
      let until = winner.end;
      if (next < sorted.length && sorted[next].start < until) until = sorted[next].start;
      const offsetInRequest = position - winner.start;
      let joins = !isGroupStart;
      if (joins && mode === 'adjacent' && winner.index !== previousRequest) {
        joins = previousEndedRequest && offsetInRequest === 0;
      }
      builder.emit(winner.index, offsetInRequest, position, until - position, joins);
      previousRequest = winner.index;
      previousEndedRequest = until === winner.end;
      isGroupStart = false;
      position = until;
    }
    builder.close();
  }
}

function gapAllowed(gapStart: number, gapEnd: number, blockBits: number | undefined): boolean {
  if (blockBits === undefined) return false;
  const blockBytes = 2 ** blockBits;
  return Math.floor(gapStart / blockBytes) === Math.floor((gapEnd - 1) / blockBytes);
}

// 'off': extents follow request order; a request owns the next extents covering its length.
function mapInOrder(spans: readonly RequestSpan[], extents: readonly ReferenceExtent[]): ReferenceRequestSpan[] {
  let extent = 0;
  return spans.map((span) => {
    const firstExtent = extent;
    for (let remaining = span.end - span.start; remaining > 0; extent++) remaining -= extents[extent].length;
    return { firstExtent, extentCount: extent - firstExtent };
  });
}

// Sorted modes: extents are disjoint and ascending; binary search for the first one ending after
// the request's start, then take every extent starting before its end.
function mapByOverlap(spans: readonly RequestSpan[], extents: readonly ReferenceExtent[]): ReferenceRequestSpan[] {
  return spans.map((span) => {
    let lo = 0;
    let hi = extents.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (extents[mid].guestOffset + extents[mid].length <= span.start) lo = mid + 1;
      else hi = mid;
    }
    let last = lo;
    if (span.end > span.start) {
      while (last < extents.length && extents[last].guestOffset < span.end) last++;
    }
    return { firstExtent: lo, extentCount: last - lo };
  });
}
