// SPDX-License-Identifier: MIT
// Planning one chunk of a convert into a qcow2 target, cluster by cluster, in small synchronous
// steps: what each target cluster needs from the source's allocation (before any data is read),
// which guest ranges to read, and, once read, the actions: neighbouring data clusters become one
// data action over the chunk buffer (no copy), neighbouring zero clusters one zero action.

import { isZero, sparseRuns, SourceStatus, type SourceSegment } from './convert-plan.js';
import type { Action } from './convert-pipeline.js';

/** Per target cluster: does it need data, zeros, or nothing. */
export const enum ClusterNeed { NOTHING, ZERO, DATA }

/** Per cluster of a chunk: a bit per SourceStatus its source segments have (1 << status). */
function statusBits(segments: readonly SourceSegment[], start: number, clusterCount: number, clusterBytes: number): Uint8Array {
  const bits = new Uint8Array(clusterCount);
  for (const segment of segments) {
    const first = Math.floor((segment.start - start) / clusterBytes);
    const last = Math.floor((segment.start + segment.length - 1 - start) / clusterBytes);
    for (let c = first; c <= last; c++) bits[c] |= 1 << segment.status;
  }
  return bits;
}

function needOf(bits: number): ClusterNeed {
  const data = (bits & (1 << SourceStatus.DATA)) !== 0;
  const zero = (bits & (1 << SourceStatus.ZERO)) !== 0;
  const backing = (bits & (1 << SourceStatus.BACKING)) !== 0;
  // A cluster partly zero and partly the backing file's can only be stored as data.
  return data || (zero && backing) ? ClusterNeed.DATA : zero ? ClusterNeed.ZERO : ClusterNeed.NOTHING;
}

/** ClusterNeed of each of `clusterCount` target clusters from guest `start`, from the source's segments over it. */
export function clusterNeeds(segments: readonly SourceSegment[], start: number, clusterCount: number, clusterBytes: number): Uint8Array {
  const needs = statusBits(segments, start, clusterCount, clusterBytes);
  for (let c = 0; c < clusterCount; c++) needs[c] = needOf(needs[c]);
  return needs;
}

/** What a chunk needs from the source, known before any of it is read. */
export interface ChunkPlan {
  /** Guest offset and length of the chunk (whole clusters, except at the virtual size). */
  start: number;
  length: number;
  clusterBytes: number;
  segments: readonly SourceSegment[];
  /** Per cluster: its ClusterNeed. */
  needs: Uint8Array;
  /** Per cluster: 1 when it overlaps stored data of the source (a DATA segment); 0 for a DATA cluster only partly zero, partly backing. */
  holdsData: Uint8Array;
  /** Guest [from, to) ranges of the DATA clusters, neighbours merged: what to read. */
  reads: [number, number][];
}

/** Plans guest [start, start + length) of a qcow2 target from the source's segments over it. */
export function planChunk(segments: readonly SourceSegment[], start: number, length: number, clusterBytes: number): ChunkPlan {
  const clusterCount = Math.ceil(length / clusterBytes);
  const needs = statusBits(segments, start, clusterCount, clusterBytes);
  const holdsData = new Uint8Array(clusterCount);
  const reads: [number, number][] = [];
  for (let c = 0; c < clusterCount; c++) {
    holdsData[c] = (needs[c] >> SourceStatus.DATA) & 1;
    needs[c] = needOf(needs[c]);
    if (needs[c] !== ClusterNeed.DATA) continue;
    const from = start + c * clusterBytes;
    const to = Math.min(from + clusterBytes, start + length);
    const last = reads[reads.length - 1];
    if (last && last[1] === from) last[1] = to;
    else reads.push([from, to]);
  }
  return { start, length, clusterBytes, segments, needs, holdsData, reads };
}

/**
 * Per cluster: 1 when its DATA segments hold bytes that -S (`minSparse`) does not let convert
 * skip, scanning the chunk's bytes in `buffer` (read at the chunk's start).
 */
function keptClusters(plan: ChunkPlan, buffer: Uint8Array, minSparse: number): Uint8Array {
  const { start, clusterBytes } = plan;
  const kept = new Uint8Array(plan.needs.length);
  for (const segment of plan.segments) {
    if (segment.status !== SourceStatus.DATA) continue;
    const bytes = buffer.subarray(segment.start - start, segment.start - start + segment.length);
    sparseRuns(segment.start, bytes, minSparse, (guestOffset, runLength, data) => {
      if (data) kept.fill(1, Math.floor((guestOffset - start) / clusterBytes), Math.ceil((guestOffset + runLength - start) / clusterBytes));
    });
  }
  return kept;
}

/**
 * Decides each cluster of a read chunk: DATA clusters whose bytes -S skips become ZERO (with
 * `wholeClusterZeros`, as for compressed output, only clusters entirely zero do, and only when
 * `minSparse` > 0); a DATA cluster only partly zero, partly backing stays DATA whatever it holds.
 * Returns the per-cluster ClusterNeed.
 */
export function decideClusters(plan: ChunkPlan, buffer: Uint8Array, minSparse: number, wholeClusterZeros: boolean): Uint8Array {
  const { needs, holdsData, clusterBytes } = plan;
  const decided = needs.slice();
  if (wholeClusterZeros) {
    if (minSparse === 0) return decided;
    for (let c = 0; c < decided.length; c++) {
      if (decided[c] !== ClusterNeed.DATA || holdsData[c] === 0) continue;
      const bytes = buffer.subarray(c * clusterBytes, Math.min((c + 1) * clusterBytes, plan.length));
      if (isZero(bytes)) decided[c] = ClusterNeed.ZERO;
    }
    return decided;
  }
  const kept = keptClusters(plan, buffer, minSparse);
  for (let c = 0; c < decided.length; c++) {
    if (decided[c] === ClusterNeed.DATA && holdsData[c] === 1 && kept[c] === 0) decided[c] = ClusterNeed.ZERO;
  }
  return decided;
}

/**
 * The actions of a decided chunk, in guest order: each run of neighbouring DATA clusters is one
 * data action over `buffer` (or, with `perCluster`, one per cluster, as the compressor takes
 * them); each run of ZERO clusters is what `zeroAction` makes of it (nothing, when it returns
 * undefined).
 */
export function chunkActions(plan: ChunkPlan, decided: Uint8Array, buffer: Uint8Array, perCluster: boolean,
  zeroAction: (guestOffset: number, end: number) => Action | undefined): Action[] {
  const { start, length, clusterBytes } = plan;
  const actions: Action[] = [];
  for (let c = 0; c < decided.length;) {
    const need = decided[c];
    let end = c + 1;
    if (!perCluster || need !== ClusterNeed.DATA) while (end < decided.length && decided[end] === need) end++;
    const from = c * clusterBytes;
    const to = Math.min(end * clusterBytes, length);
    if (need === ClusterNeed.DATA) actions.push({ kind: 'data', guestOffset: start + from, bytes: buffer.subarray(from, to) });
    else if (need === ClusterNeed.ZERO) {
      const zero = zeroAction(start + from, start + to);
      if (zero) actions.push(zero);
    }
    c = end;
  }
  return actions;
}
