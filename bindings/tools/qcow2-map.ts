// SPDX-License-Identifier: MIT
// Allocation maps of whole backing chains, shaped like `qemu-img map --output=json`: which layer
// serves each guest range and whether it reads as data or zeros. Built from each qcow2 layer's
// read mapping; it reads no guest data and does not probe host files for holes.

import type { BlockImage } from '../dispatch/image.js';
import { ImageError, exactNumber } from '../base/errors.js';
import { Qcow2Image } from '../qcow2/qcow2-image.js';
import { RunKind } from '../qcow2/qcow2-core.js';

/** One entry of the map: guest bytes [start, start + length), as qemu-img map prints it. */
export interface MapEntry {
  /** Guest offset of the first byte. */
  start: number;
  /** Bytes in the range (a run of guest bytes that share every other field). */
  length: number;
  /** The layer that serves the range: 0 the image, 1 its backing file, ... */
  depth: number;
  /** Allocated in layer `depth` (false: no layer allocates it; it reads as zeros). */
  present: boolean;
  /** Reads as zeros without reading data (zero clusters, or unallocated everywhere). */
  zero: boolean;
  /** Served by data stored in layer `depth` (clusters, compressed clusters, raw file bytes). */
  data: boolean;
  /** Host offset of `start` in that layer's file (or external data file); absent for compressed clusters and zeros. */
  offset?: number;
}

/**
 * Maps guest [start, start + length) of `image` (default: all of it) through its backing chain
 * and returns entries tiling that range, neighbours merged as qemu-img map merges them (same
 * depth, present, zero and data, and offsets both absent or continuing).
 *
 * Per layer: a qcow2 data cluster gives `data` with its host offset; a compressed cluster gives
 * `data` without offset; a zero cluster (or zero subcluster) gives `present` and `zero`; an
 * unallocated range goes to the backing file, and past the backing file's end (or without one)
 * it is `zero`, not `present`, at the depth of the last layer that covers it. A raw layer is
 * `data` at offset == guest offset everywhere.
 *
 * Where it differs from qemu-img map (both are correct by the qcow2 spec; the differences are
 * what the host file system and QEMU's block status report, not what the image says):
 * - no host-file hole probing: QEMU reports `zero: true` for data clusters that lie in holes of
 *   the host file (preallocated metadata) and for holes of raw layers (then `data: false` too);
 *   here those are `zero: false, data: true`;
 * - no `offset` on zero clusters with a preallocated host cluster, nor on unallocated
 *   subclusters of an allocated extended-L2 cluster (QEMU prints the reserved host offset).
 *
 * Throws IMAGE_OUT_OF_RANGE / INVALID_ARGUMENT for a bad range, QCOW2_CORRUPT for invalid
 * mapping entries, and backend errors.
 */
export async function mapImage(image: BlockImage, start = 0, length = image.virtualSize - start): Promise<MapEntry[]> {
  if (!Number.isSafeInteger(start) || start < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new ImageError('INVALID_ARGUMENT', `invalid map range: start ${exactNumber(start)}, length ${exactNumber(length)} (both must be integers from 0 to 2^53)`);
  }
  if (start + length > image.virtualSize) {
    throw new ImageError('IMAGE_OUT_OF_RANGE', `map range [${start}, ${start + length}) reaches past the virtual size ${image.virtualSize}`);
  }
  const entries: MapEntry[] = [];
  await mapLayer(image, 0, start, start + length, (entry) => appendMerged(entries, entry));
  return entries;
}

/** Appends `entry` to `entries`, merging it into the last entry where qemu-img map would. */
function appendMerged(entries: MapEntry[], entry: MapEntry): void {
  const last = entries[entries.length - 1];
  if (last && last.depth === entry.depth && last.present === entry.present && last.zero === entry.zero &&
      last.data === entry.data && last.start + last.length === entry.start &&
      (last.offset === undefined ? entry.offset === undefined : entry.offset === last.offset + last.length)) {
    last.length += entry.length;
    return;
  }
  entries.push(entry);
}

async function mapLayer(image: BlockImage, depth: number, start: number, end: number, emit: (entry: MapEntry) => void): Promise<void> {
  if (start >= end) return;
  if (!(image instanceof Qcow2Image)) {
    emit({ start, length: end - start, depth, present: true, zero: false, data: true, offset: start });
    return;
  }
  let position = start;
  while (position < end) {
    const runs = await image.mapGuestRange(position, end - position);
    for (const run of runs) {
      const base = { start: run.guestOffset, length: run.length, depth };
      switch (run.kind) {
        case RunKind.DATA:
          emit({ ...base, present: true, zero: false, data: true, offset: run.hostOffset });
          break;
        case RunKind.COMPRESSED:
          emit({ ...base, present: true, zero: false, data: true });
          break;
        case RunKind.ZERO:
          emit({ ...base, present: true, zero: true, data: false });
          break;
        case RunKind.UNALLOCATED: {
          const runEnd = run.guestOffset + run.length;
          const backing = image.backing;
          const backingEnd = backing ? Math.max(run.guestOffset, Math.min(runEnd, backing.virtualSize)) : run.guestOffset;
          if (backing) await mapLayer(backing, depth + 1, run.guestOffset, backingEnd, emit);
          if (backingEnd < runEnd) emit({ start: backingEnd, length: runEnd - backingEnd, depth, present: false, zero: true, data: false });
          break;
        }
      }
    }
    const last = runs[runs.length - 1];
    position = last.guestOffset + last.length;
  }
}
