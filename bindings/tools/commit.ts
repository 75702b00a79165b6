// SPDX-License-Identifier: MIT
// Committing an overlay into its backing image (qemu-img commit): everything the overlay holds
// itself (data, compressed and zero clusters) is written into the backing image, which is
// flushed, and then the overlay is emptied in one crash-safe step, as qemu-img empties it. The
// chain reads the same at every point: while the copy runs the overlay still covers what
// changes underneath, and emptying only uncovers what the backing image now holds.

import type { BlockImage } from '../dispatch/image.js';
import { ImageError } from '../base/errors.js';
import type { Qcow2Image } from '../qcow2/qcow2-image.js';
import { RunKind } from '../qcow2/qcow2-core.js';

/** A guest range a qcow2 layer serves itself: with data, or as zeros. */
export interface LayerRange {
  /** Guest offset of the first byte. */
  start: number;
  /** Guest offset past the last byte. */
  end: number;
  /** Reads as zeros by metadata (zero clusters), not data. */
  zero: boolean;
}

/** Bytes copied per read and write. */
const COPY_CHUNK_BYTES = 4 << 20;

/**
 * The guest ranges in [start, end) that `image` serves itself (not from its backing file),
 * neighbours of the same kind merged, in order.
 */
export async function layerRanges(image: Qcow2Image, start = 0, end = image.virtualSize): Promise<LayerRange[]> {
  const ranges: LayerRange[] = [];
  let position = start;
  while (position < end) {
    const runs = await image.mapGuestRange(position, end - position);
    for (const run of runs) {
      if (run.kind === RunKind.UNALLOCATED) continue;
      const zero = run.kind === RunKind.ZERO;
      const last = ranges[ranges.length - 1];
      if (last && last.end === run.guestOffset && last.zero === zero) last.end += run.length;
      else ranges.push({ start: run.guestOffset, end: run.guestOffset + run.length, zero });
    }
    const last = runs[runs.length - 1];
    position = last.guestOffset + last.length;
  }
  return ranges;
}

/** Options of commitImage. */
export interface CommitOptions {
  /** Keep the overlay's content (qemu-img commit -d); default: empty it. */
  keepOverlay?: boolean;
  /** Called as bytes are committed: done and total bytes of the overlay's own ranges. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/**
 * Commits `overlay` (a writable qcow2 image) into `base` (its backing image, opened writable
 * separately, at least as large), then empties the overlay unless `options.keepOverlay`. Throws
 * INVALID_ARGUMENT when the overlay has no backing file or the base is smaller, IMAGE_READ_ONLY
 * for a read-only base or overlay (before anything changes), and the images' errors.
 */
export async function commitImage(overlay: Qcow2Image, base: BlockImage, options: CommitOptions = {}): Promise<void> {
  if (!overlay.backing) throw new ImageError('INVALID_ARGUMENT', 'Image does not have a backing file');
  if (base.readOnly) throw new ImageError('IMAGE_READ_ONLY', 'the backing image is open read-only');
  if (overlay.readOnly && !options.keepOverlay) throw new ImageError('IMAGE_READ_ONLY', 'the overlay is open read-only: it cannot be emptied');
  if (base.virtualSize < overlay.virtualSize) {
    throw new ImageError('INVALID_ARGUMENT', `the backing image (${base.virtualSize} bytes) is smaller than the overlay (${overlay.virtualSize} bytes): resize it first`);
  }
  const ranges = await layerRanges(overlay);
  const total = ranges.reduce((sum, r) => sum + (r.end - r.start), 0);
  let done = 0;
  options.onProgress?.(0, total);
  for (const range of ranges) {
    for (let at = range.start; at < range.end; at += COPY_CHUNK_BYTES) {
      const length = Math.min(COPY_CHUNK_BYTES, range.end - at);
      if (range.zero) await base.writeZeroes(at, length);
      else await base.write(at, await overlay.read(at, length));
      done += length;
      options.onProgress?.(done, total);
    }
  }
  await base.flush();
  if (!options.keepOverlay) await overlay.makeEmpty();
}
