// SPDX-License-Identifier: MIT
// What convert does with each piece of the source, decided as qemu-img convert decides it: the
// source's allocation (from mapImage, no data read) says data, zeros or "leave it to the target's
// backing file"; data is then scanned for runs of zero sectors that `-S` lets it skip.

import type { BlockImage } from '../dispatch/image.js';
import { mapImage } from './qcow2-map.js';
import { ConcatenatedImage } from './concatenated-image.js';

/** How a guest range of the source is to be treated. */
export const SourceStatus = {
  /** Stored data: read it and write it (unless it turns out to be zeros). */
  DATA: 0,
  /** Reads as zeros (zero clusters, or allocated nowhere without a backing file to show through). */
  ZERO: 1,
  /** Left out: the target's backing file supplies it (convert -B). */
  BACKING: 2,
} as const;
export type SourceStatus = (typeof SourceStatus)[keyof typeof SourceStatus];

/** One classified guest range [start, start + length). */
export interface SourceSegment {
  start: number;
  length: number;
  status: SourceStatus;
}

const SECTOR_BYTES = 512;

/**
 * Classifies guest [start, start + length) of `source`. With `targetHasBacking`, only the source's
 * own top layer counts: ranges its backing chain serves become BACKING (what convert -B leaves to
 * the target's backing file); otherwise every layer's data is DATA. With `fullyAllocate` (-S 0)
 * zero ranges count as DATA too. A ConcatenatedImage is classified part by part. Neighbours of
 * equal status are merged. Errors as mapImage.
 */
export async function classifySource(source: BlockImage, start: number, length: number, targetHasBacking: boolean,
  fullyAllocate = false): Promise<SourceSegment[]> {
  const segments: SourceSegment[] = [];
  const append = (segment: SourceSegment): void => {
    const last = segments[segments.length - 1];
    if (last && last.status === segment.status && last.start + last.length === segment.start) last.length += segment.length;
    else segments.push({ ...segment });
  };
  if (source instanceof ConcatenatedImage) {
    const end = start + length;
    for (const { image, guestOffset } of source.partsIn(start, end)) {
      const from = Math.max(start, guestOffset);
      const to = Math.min(end, guestOffset + image.virtualSize);
      for (const segment of await classifySource(image, from - guestOffset, to - from, targetHasBacking, fullyAllocate)) {
        append({ ...segment, start: segment.start + guestOffset });
      }
    }
    return segments;
  }
  const hasBacking = 'backing' in source && (source as { backing?: BlockImage }).backing !== undefined;
  for (const entry of await mapImage(source, start, length)) {
    let status: SourceStatus;
    if (targetHasBacking && hasBacking && (entry.depth > 0 || !entry.present)) status = SourceStatus.BACKING;
    else status = entry.data || fullyAllocate ? SourceStatus.DATA : SourceStatus.ZERO;
    append({ start: entry.start, length: entry.length, status });
  }
  return segments;
}

/** True when every byte of `bytes` is zero. */
export function isZero(bytes: Uint8Array): boolean {
  const aligned = bytes.byteOffset % 4 === 0 ? Math.floor(bytes.byteLength / 4) : 0;
  if (aligned > 0) {
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, aligned);
    for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  }
  for (let i = aligned * 4; i < bytes.byteLength; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** Per 512-byte sector of `data` (the last may be shorter): 1 when it is all zeros. */
export function zeroSectorFlags(data: Uint8Array): Uint8Array {
  const sectorCount = Math.ceil(data.byteLength / SECTOR_BYTES);
  const flags = new Uint8Array(sectorCount);
  const wholeSectors = data.byteOffset % 4 === 0 ? Math.floor(data.byteLength / SECTOR_BYTES) : 0;
  const words = new Int32Array(data.buffer, data.byteOffset, (wholeSectors * SECTOR_BYTES) / 4);
  const wordsPerSector = SECTOR_BYTES / 4;
  for (let sector = 0; sector < wholeSectors; sector++) {
    let word = sector * wordsPerSector;
    const end = word + wordsPerSector;
    while (word < end && words[word] === 0) word++;
    flags[sector] = word === end ? 1 : 0;
  }
  for (let sector = wholeSectors; sector < sectorCount; sector++) {
    flags[sector] = isZero(data.subarray(sector * SECTOR_BYTES, (sector + 1) * SECTOR_BYTES)) ? 1 : 0;
  }
  return flags;
}

/**
 * Splits `data` (guest bytes from `guestOffset`) into runs to write and runs to skip, as `-S`
 * does: a run of zero 512-byte sectors at least `minSparseBytes` long, or all of `data`, is
 * skipped (reported with `data: false`), everything else is written. `minSparseBytes` 0 writes
 * everything. Runs are reported in order through `emit`, neighbours of the same kind merged.
 * Only every n-th sector is probed (n = the shortest run to skip, in sectors: such a run always
 * holds a probe), so data without long zero runs is scanned at a fraction of its length.
 */
export function sparseRuns(guestOffset: number, data: Uint8Array, minSparseBytes: number,
  emit: (guestOffset: number, length: number, data: boolean) => void): void {
  const length = data.byteLength;
  if (length === 0) return;
  if (minSparseBytes <= 0) {
    emit(guestOffset, length, true);
    return;
  }
  const sectorCount = Math.ceil(length / SECTOR_BYTES);
  const minZeroRun = Math.min(minSparseBytes, length);
  const stride = Math.max(1, Math.floor(minZeroRun / SECTOR_BYTES));
  const wordsPerSector = SECTOR_BYTES / 4;
  const words = data.byteOffset % 4 === 0 ? new Int32Array(data.buffer, data.byteOffset, Math.floor(length / 4)) : undefined;
  const sectorIsZero = (sector: number): boolean => {
    if (words && (sector + 1) * SECTOR_BYTES <= length) {
      // Eight words OR-ed per test: a third faster than a test per word.
      for (let w = sector * wordsPerSector, end = w + wordsPerSector; w < end; w += 8) {
        if ((words[w] | words[w + 1] | words[w + 2] | words[w + 3] | words[w + 4] | words[w + 5] | words[w + 6] | words[w + 7]) !== 0) return false;
      }
      return true;
    }
    return isZero(data.subarray(sector * SECTOR_BYTES, (sector + 1) * SECTOR_BYTES));
  };
  let pendingDataStart = 0; // bytes before it are reported
  for (let probe = stride - 1; probe < sectorCount;) {
    if (!sectorIsZero(probe)) {
      probe += stride;
      continue;
    }
    let first = probe;
    while (first * SECTOR_BYTES > pendingDataStart && sectorIsZero(first - 1)) first--;
    let last = probe;
    while (last + 1 < sectorCount && sectorIsZero(last + 1)) last++;
    const runStart = first * SECTOR_BYTES;
    const runEnd = Math.min(length, (last + 1) * SECTOR_BYTES);
    if (runEnd - runStart >= minZeroRun) {
      if (runStart > pendingDataStart) emit(guestOffset + pendingDataStart, runStart - pendingDataStart, true);
      emit(guestOffset + runStart, runEnd - runStart, false);
      pendingDataStart = runEnd;
    }
    probe = (Math.floor((last + 1) / stride) + 1) * stride - 1; // the first probe index past the run
  }
  if (pendingDataStart < length) emit(guestOffset + pendingDataStart, length - pendingDataStart, true);
}
