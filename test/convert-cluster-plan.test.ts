// SPDX-License-Identifier: MIT
// The cluster plan of a convert into qcow2, on one hand-made chunk: what is read, which clusters
// -S turns into zeros, and that neighbouring data clusters go out as one action over the chunk
// buffer (no copy) while the compressor gets one action per cluster.

import { expect, it } from 'vitest';
import { chunkActions, ClusterNeed, decideClusters, planChunk } from '../bindings/tools/convert-cluster-plan.js';
import { SourceStatus, type SourceSegment } from '../bindings/tools/convert-plan.js';
import type { Action } from '../bindings/tools/convert-pipeline.js';

const CLUSTER = 4096;
const START = 16 * CLUSTER;

// Clusters 0-3 data, 4-5 zero, 6 half zero / half backing, 7 backing, 8-10 data (9 reads as zeros).
const segments: SourceSegment[] = [
  { start: START, length: 4 * CLUSTER, status: SourceStatus.DATA },
  { start: START + 4 * CLUSTER, length: 2.5 * CLUSTER, status: SourceStatus.ZERO },
  { start: START + 6.5 * CLUSTER, length: 1.5 * CLUSTER, status: SourceStatus.BACKING },
  { start: START + 8 * CLUSTER, length: 3 * CLUSTER, status: SourceStatus.DATA },
];
const LENGTH = 11 * CLUSTER;

function chunkBuffer(): Uint8Array {
  const buffer = new Uint8Array(LENGTH);
  for (const cluster of [0, 1, 2, 3, 6, 8, 10]) buffer.fill(cluster + 1, cluster * CLUSTER, (cluster + 1) * CLUSTER);
  return buffer;
}

function describeActions(actions: Action[], buffer: Uint8Array): string[] {
  return actions.map((action) => {
    const clusters = `${(action.guestOffset - START) / CLUSTER}+${(action.kind === 'zero' ? action.length : action.bytes.byteLength) / CLUSTER}`;
    if (action.kind === 'data') expect(action.bytes.buffer).toBe(buffer.buffer);
    return `${action.kind} ${clusters}`;
  });
}

it('reads the data clusters (a mixed zero/backing cluster included) as merged ranges, before any byte is known', () => {
  const plan = planChunk(segments, START, LENGTH, CLUSTER);
  expect(Array.from(plan.needs)).toEqual([2, 2, 2, 2, 1, 1, 2, 0, 2, 2, 2].map((n) => n as ClusterNeed));
  expect(plan.reads).toEqual([[START, START + 4 * CLUSTER], [START + 6 * CLUSTER, START + 7 * CLUSTER], [START + 8 * CLUSTER, START + 11 * CLUSTER]]);
});

it('writes neighbouring data clusters as one action over the buffer, zero runs as one, a zero data cluster as zeros', () => {
  const plan = planChunk(segments, START, LENGTH, CLUSTER);
  const buffer = chunkBuffer();
  const decided = decideClusters(plan, buffer, 4096, false);
  const zeroRuns = (guestOffset: number, end: number): Action => ({ kind: 'zero', guestOffset, length: end - guestOffset });
  // Cluster 6 is data although it holds zeros and backing bytes only; cluster 9 reads zeros: -S skips it.
  expect(describeActions(chunkActions(plan, decided, buffer, false, zeroRuns), buffer))
    .toEqual(['data 0+4', 'zero 4+2', 'data 6+1', 'data 8+1', 'zero 9+1', 'data 10+1']);
  // A new image without a backing file reads zeros already: no zero actions.
  expect(describeActions(chunkActions(plan, decided, buffer, false, () => undefined), buffer)).toEqual(['data 0+4', 'data 6+1', 'data 8+1', 'data 10+1']);
  // -S 0 keeps every data cluster, zeros included.
  expect(describeActions(chunkActions(plan, decideClusters(plan, buffer, 0, false), buffer, false, () => undefined), buffer)).toEqual(['data 0+4', 'data 6+1', 'data 8+3']);
});

it('gives the compressor one action per data cluster, whole zero clusters left out', () => {
  const plan = planChunk(segments, START, LENGTH, CLUSTER);
  const buffer = chunkBuffer();
  const decided = decideClusters(plan, buffer, 4096, true);
  expect(describeActions(chunkActions(plan, decided, buffer, true, () => undefined), buffer))
    .toEqual(['data 0+1', 'data 1+1', 'data 2+1', 'data 3+1', 'data 6+1', 'data 8+1', 'data 10+1']);
});
