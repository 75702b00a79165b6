// SPDX-License-Identifier: MIT
// The compressed copies of rebase -c: whole guest clusters gathered into batches, compressed
// together and stored with Qcow2Image.writeCompressedClusters (one crash-safe metadata switch per
// batch). As QEMU's rebase does, a cluster of zeros becomes a zero cluster; one that does not
// shrink is written as it is.

import type { Qcow2Image } from '../qcow2/qcow2-image.js';
import type { ClusterCompressor } from '../qcow2/compress.js';
import type { CompressedClusterWrite } from '../qcow2/qcow2-compressed-write.js';
import { isZero } from './convert-plan.js';

/** Guest bytes gathered before a batch is compressed and stored. */
const BATCH_BYTES = 8 << 20;

/**
 * Gathers the clusters a rebase copies and stores them compressed into `image` (writable, open)
 * with `compressor`. Call add() for each cluster, then finish() to store the last batch.
 */
export class CompressedCopies {
  private readonly clusterBytes: number;
  private readonly batchClusters: number;
  private readonly buffer: Uint8Array;
  /** Guest offset and guest bytes of each cluster in the batch (shorter than a cluster only at the end of the disk). */
  private batch: { guestOffset: number; length: number }[] = [];

  constructor(private readonly image: Qcow2Image, private readonly compressor: ClusterCompressor) {
    this.clusterBytes = image.header.clusterSize;
    this.batchClusters = Math.max(1, Math.floor(BATCH_BYTES / this.clusterBytes));
    const bytes = this.batchClusters * this.clusterBytes;
    this.buffer = compressor.allocateBuffer?.(bytes) ?? new Uint8Array(bytes);
  }

  /** Whether guest [guestOffset, guestOffset + length) is one whole cluster, or the disk's last, shorter one: what add() takes. */
  takes(guestOffset: number, length: number): boolean {
    return guestOffset % this.clusterBytes === 0 && (length === this.clusterBytes || guestOffset + length === this.image.virtualSize);
  }

  /** Stores `bytes` at `guestOffset` (a range takes() accepts): zeros at once, other bytes with their batch. */
  async add(guestOffset: number, bytes: Uint8Array): Promise<void> {
    if (isZero(bytes)) {
      await this.image.writeZeroes(guestOffset, bytes.length);
      return;
    }
    const at = this.batch.length * this.clusterBytes;
    this.buffer.set(bytes, at);
    this.buffer.fill(0, at + bytes.length, at + this.clusterBytes);
    this.batch.push({ guestOffset, length: bytes.length });
    if (this.batch.length === this.batchClusters) await this.finish();
  }

  /** Compresses and stores the clusters gathered so far. */
  async finish(): Promise<void> {
    const batch = this.batch;
    if (batch.length === 0) return;
    this.batch = [];
    const results = await this.compressor.compressClusters(this.image.header.compressionType,
      this.buffer.subarray(0, batch.length * this.clusterBytes), this.clusterBytes);
    const compressed: CompressedClusterWrite[] = [];
    const plain: Promise<void>[] = [];
    batch.forEach(({ guestOffset, length }, i) => {
      const bytes = results[i];
      if (bytes) compressed.push({ guestOffset, compressed: bytes });
      else plain.push(this.image.write(guestOffset, this.buffer.subarray(i * this.clusterBytes, i * this.clusterBytes + length)));
    });
    await Promise.all(plain);
    await this.image.writeCompressedClusters(compressed);
  }
}
