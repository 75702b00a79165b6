// SPDX-License-Identifier: MIT
// Which compressed runs of a read share one host read: consecutive compressed clusters whose data
// lies together (other runs between them allowed), never backwards, across a large host gap, past
// 4 MiB of host bytes or past 4 MiB of guest bytes; a lone compressed run is a group of one when
// it covers its whole cluster (so it decodes where groups decode), else it stays on its own.

import { describe, expect, it } from 'vitest';
import { groupCompressedRuns, isRunGroup } from '../bindings/qcow2/compressed-run-groups.js';
import { RunKind, type MappedRun } from '../bindings/qcow2/qcow2-core.js';

const CLUSTER = 65536;
const compressed = (index: number, hostOffset: number, compressedBytes = 3000): MappedRun =>
  ({ kind: RunKind.COMPRESSED, guestOffset: index * CLUSTER, length: CLUSTER, hostOffset, compressedBytes });
const data = (index: number): MappedRun => ({ kind: RunKind.DATA, guestOffset: index * CLUSTER, length: CLUSTER, hostOffset: 1 << 30, compressedBytes: 0 });

/** The groups as lists of guest cluster indexes; a run on its own as its index. */
function shape(runs: MappedRun[]): (number | number[])[] {
  return groupCompressedRuns(runs, CLUSTER).map((item) => (isRunGroup(item) ? item.runs.map((run) => run.guestOffset / CLUSTER) : item.guestOffset / CLUSTER));
}

describe('groupCompressedRuns', () => {
  it('groups packed compressed clusters, with data runs between them read on their own', () => {
    expect(shape([compressed(0, 10_000), compressed(1, 12_560), data(2), compressed(3, 15_000)])).toEqual([2, [0, 1, 3]]);
  });

  it('reads one host range covering every member', () => {
    const [group] = groupCompressedRuns([compressed(0, 10_000, 4096), compressed(1, 12_000, 4096)], CLUSTER);
    expect(isRunGroup(group) && [group.hostStart, group.hostEnd, group.guestBytes]).toEqual([10_000, 16_096, 2 * CLUSTER]);
  });

  it('starts a new group for data before the group, after a large gap, or past the size limits', () => {
    expect(shape([compressed(0, 50_000), compressed(1, 10_000)])).toEqual([[0], [1]]);
    expect(shape([compressed(0, 10_000), compressed(1, 10_000 + 3000 + 70_000)])).toEqual([[0], [1]]);
    const wide = Array.from({ length: 3 }, (_, i) => compressed(i, i * 2_000_000, 2_000_000));
    expect(shape(wide)).toEqual([[0, 1], [2]]);
    const many = Array.from({ length: 65 }, (_, i) => compressed(i, 10_000 + i * 100, 100));
    expect(shape(many).map((item) => (Array.isArray(item) ? item.length : 0))).toEqual([64, 1]);
  });

  it('leaves a lone compressed run on its own when it covers part of its cluster', () => {
    const part: MappedRun = { ...compressed(1, 50_000), guestOffset: CLUSTER + 4096, length: 8192 };
    expect(shape([part])).toEqual([1.0625]);
    expect(shape([part, compressed(2, 80_000)])).toEqual([[1.0625, 2]]);
  });
});
