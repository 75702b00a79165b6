// SPDX-License-Identifier: MIT
// Several images read one after another as one read-only disk, as `qemu-img convert a b out`
// sees its sources: part k starts where part k-1 ends, the virtual size is the sum of theirs.

import type { BlockImage, ImageStats, WriteRequest } from '../dispatch/image.js';
import { checkReadTarget, readIntoNewBuffer } from '../dispatch/image.js';
import { ImageError } from '../base/errors.js';

/** One part of a ConcatenatedImage and the guest byte of the whole where it starts. */
export interface ConcatenatedPart {
  /** The part's own image. */
  image: BlockImage;
  /** Guest byte of the whole image where the part's byte 0 appears. */
  guestOffset: number;
}

const STAT_KEYS = ['guestWriteRequests', 'guestWriteBytes', 'guestReadRequests', 'guestReadBytes', 'hostWriteCalls', 'hostWriteBytes',
  'hostReadCalls', 'hostReadBytes', 'cowBytes', 'gapBytes', 'extents', 'mergedRequests'] as const;

/**
 * The images `images` (at least one) end to end, read-only. Reads are split at part boundaries and
 * go to the parts; every write call rejects with IMAGE_READ_ONLY. The parts belong to it: close()
 * closes each of them. stats() sums the parts' counters.
 */
export class ConcatenatedImage implements BlockImage {
  readonly virtualSize: number;
  readonly readOnly = true;
  /** The parts in guest order, with where each starts. */
  readonly parts: readonly ConcatenatedPart[];
  private closed = false;

  constructor(images: readonly BlockImage[]) {
    if (images.length === 0) throw new ImageError('INVALID_ARGUMENT', 'a concatenated image needs at least one part');
    let guestOffset = 0;
    this.parts = images.map((image) => {
      const part = { image, guestOffset };
      guestOffset += image.virtualSize;
      return part;
    });
    this.virtualSize = guestOffset;
  }

  /** Reads `length` guest bytes at `offset` into a new buffer. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    this.checkOpen();
    return readIntoNewBuffer(offset, length, this.virtualSize, (at, target) => this.readInto(at, target));
  }

  /** Reads guest bytes at `offset` into `target` from the parts it spans. */
  async readInto(offset: number, target: Uint8Array): Promise<void> {
    this.checkOpen();
    checkReadTarget(offset, target, this.virtualSize);
    const end = offset + target.byteLength;
    await Promise.all(this.partsIn(offset, end).map(({ image, guestOffset }) => {
      const from = Math.max(offset, guestOffset);
      const to = Math.min(end, guestOffset + image.virtualSize);
      return image.readInto(from - guestOffset, target.subarray(from - offset, to - offset));
    }));
  }

  /** The parts that hold some of guest [start, end), in order. */
  partsIn(start: number, end: number): ConcatenatedPart[] {
    return this.parts.filter(({ image, guestOffset }) => guestOffset < end && guestOffset + image.virtualSize > start && image.virtualSize > 0);
  }

  /** Rejects: the image is read-only. */
  write(_offset: number, _data: Uint8Array): Promise<void> {
    return this.refuseWrite();
  }

  /** Rejects every request: the image is read-only. */
  multiwrite(requests: readonly WriteRequest[]): Promise<void>[] {
    const count = Array.isArray(requests) && requests.length > 0 ? requests.length : 1;
    return Array.from({ length: count }, () => this.refuseWrite());
  }

  /** Rejects: the image is read-only. */
  writeZeroes(_offset: number, _length: number): Promise<void> {
    return this.refuseWrite();
  }

  /** Rejects: the image is read-only. */
  discard(_offset: number, _length: number): Promise<void> {
    return this.refuseWrite();
  }

  /** Nothing to make durable; rejects with IMAGE_CLOSED after close(). */
  async flush(): Promise<void> {
    this.checkOpen();
  }

  /** Closes every part (all of them, even when one fails; the first failure is rethrown); idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const results = await Promise.allSettled(this.parts.map(({ image }) => image.close()));
    const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** The parts' counters, summed. */
  stats(): ImageStats {
    const total = Object.fromEntries(STAT_KEYS.map((key) => [key, 0])) as unknown as ImageStats;
    for (const { image } of this.parts) {
      const stats = image.stats();
      for (const key of STAT_KEYS) total[key] += stats[key];
    }
    return total;
  }

  private checkOpen(): void {
    if (this.closed) throw new ImageError('IMAGE_CLOSED', 'the image is closed');
  }

  private refuseWrite(): Promise<void> {
    return Promise.reject(this.closed ? new ImageError('IMAGE_CLOSED', 'the image is closed')
      : new ImageError('IMAGE_READ_ONLY', 'a concatenation of images is read-only'));
  }
}
