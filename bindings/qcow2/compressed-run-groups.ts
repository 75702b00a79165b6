// SPDX-License-Identifier: MIT
// Grouping the compressed runs of one read so that one host read fetches the compressed bytes of
// several clusters: qemu-img packs compressed clusters back to back, so those of consecutive
// guest clusters usually lie together in the file.

import { RunKind, type MappedRun } from './qcow2-core.js';

/** Compressed runs whose compressed bytes all lie in host bytes [hostStart, hostEnd); guestBytes is their length. */
export interface CompressedRunGroup { hostStart: number; hostEnd: number; guestBytes: number; runs: MappedRun[] }

/** Host bytes between two compressed runs' data still read rather than split into two reads. */
const MAX_GAP_BYTES = 64 * 1024;
/** Largest host range one group reads. */
const MAX_GROUP_BYTES = 4 * 1024 * 1024;
/** Most guest bytes one group decodes (bounds a decoder's output buffer, whatever the read's length). */
const MAX_GROUP_GUEST_BYTES = 4 * 1024 * 1024;

/**
 * Splits `runs` (in guest order) into runs read on their own and groups of compressed runs (in
 * guest order, other runs between them allowed) of at most MAX_GROUP_GUEST_BYTES in all, whose
 * compressed data lies within one host range of at most MAX_GROUP_BYTES, each starting at or
 * after the group's first and at most MAX_GAP_BYTES after the group's end so far. A lone
 * compressed run is a group when it covers its whole cluster of `clusterBytes`, else it is read on
 * its own (its decoded cluster is kept for the next small read in it).
 */
export function groupCompressedRuns(runs: readonly MappedRun[], clusterBytes: number): (MappedRun | CompressedRunGroup)[] {
  const items: (MappedRun | CompressedRunGroup)[] = [];
  let group: CompressedRunGroup | undefined;
  const close = () => {
    if (group) items.push(group.runs.length === 1 && group.runs[0].length < clusterBytes ? group.runs[0] : group);
    group = undefined;
  };
  for (const run of runs) {
    if (run.kind !== RunKind.COMPRESSED) {
      items.push(run);
      continue;
    }
    const runEnd = run.hostOffset + run.compressedBytes;
    if (group && run.hostOffset >= group.hostStart && run.hostOffset <= group.hostEnd + MAX_GAP_BYTES &&
        Math.max(group.hostEnd, runEnd) - group.hostStart <= MAX_GROUP_BYTES && group.guestBytes + run.length <= MAX_GROUP_GUEST_BYTES) {
      group.runs.push(run);
      group.hostEnd = Math.max(group.hostEnd, runEnd);
      group.guestBytes += run.length;
      continue;
    }
    close();
    group = { hostStart: run.hostOffset, hostEnd: runEnd, guestBytes: run.length, runs: [run] };
  }
  close();
  return items;
}

/** True for a group (as opposed to a run read on its own). */
export function isRunGroup(item: MappedRun | CompressedRunGroup): item is CompressedRunGroup {
  return 'runs' in item;
}
