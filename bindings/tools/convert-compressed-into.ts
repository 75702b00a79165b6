// SPDX-License-Identifier: MIT
// convert -c -n: copies any BlockImage into an existing, open qcow2 image with its clusters
// stored compressed, as qemu-img convert -c -n does. Cluster by cluster: a cluster the source
// reads as zeros (or, unless -S 0, whose bytes are all zero) is written as zeros, since the target
// may hold anything; a data cluster that shrinks is stored compressed (only into a cluster without
// a host cluster, as in QEMU: Qcow2Image.writeCompressedClusters); one that does not is written
// as it is. With `targetHasBacking`, what the source's backing chain serves is left alone.

import type { BlockImage } from '../dispatch/image.js';
import { ImageError } from '../base/errors.js';
import type { Qcow2Image } from '../qcow2/qcow2-image.js';
import type { CompressedClusterWrite } from '../qcow2/qcow2-compressed-write.js';
import { createInlineCompressor, type ClusterCompressor } from '../qcow2/compress.js';
import { classifySource, isZero } from './convert-plan.js';
import { APPLIED, runPipeline, type Action, type Applied } from './convert-pipeline.js';
import { ClusterNeed, clusterNeeds } from './convert-cluster-plan.js';
import { checkOptions, type ConvertIntoOptions, type ConvertResult } from './convert.js';
import { convertChunkBytes } from './convert-chunk-size.js';

/** Guest bytes of compressed clusters gathered before they are stored together. */
const COMPRESSED_BATCH_BYTES = 64 << 20;

/** Options of convertIntoCompressed. */
export interface ConvertIntoCompressedOptions extends ConvertIntoOptions {
  /** Compressor (default: on the calling thread). Not closed by convert. */
  compressor?: ClusterCompressor;
}

/**
 * Copies `source` into the existing, writable qcow2 image `target` (at least as large) with
 * compressed clusters, in the target's compression type and cluster size; resolves after
 * target.flush(). Throws IMAGE_READ_ONLY, INVALID_ARGUMENT, CompressedOverwriteError when a
 * cluster that compresses lands on one the target has a host cluster for (the batch of
 * compressed clusters it is in is not stored; other writes may have been done, as with
 * qemu-img, whose writes before the failing one stay), and the source's and target's errors.
 */
export async function convertIntoCompressed(source: BlockImage, target: Qcow2Image, options: ConvertIntoCompressedOptions = {}): Promise<ConvertResult> {
  const { minSparse, inFlight } = checkOptions(options);
  if (target.readOnly) throw new ImageError('IMAGE_READ_ONLY', 'the target image is read-only');
  if (target.virtualSize < source.virtualSize) {
    throw new ImageError('INVALID_ARGUMENT', `the target's virtual size ${target.virtualSize} is below the source's ${source.virtualSize}`);
  }
  const clusterBytes = target.header.clusterSize;
  const compressionType = target.header.compressionType;
  const compressor = options.compressor ?? createInlineCompressor();
  const targetHasBacking = options.targetHasBacking === true;

  const prepare = async (start: number, length: number, buffer: Uint8Array): Promise<Action[]> => {
    const clusterCount = Math.ceil(length / clusterBytes);
    const needs = clusterNeeds(await classifySource(source, start, length, targetHasBacking, minSparse === 0), start, clusterCount, clusterBytes);
    // The clusters needing data are read to the front of the buffer, end to end (a short last
    // cluster padded with zeros); the all-zero ones then drop out and the rest close up.
    const reads: Promise<void>[] = [];
    let slots = 0;
    for (let c = 0; c < clusterCount; c++) {
      if (needs[c] !== ClusterNeed.DATA) continue;
      const slot = slots++;
      const from = start + c * clusterBytes;
      const bytes = Math.min(clusterBytes, start + length - from);
      buffer.fill(0, slot * clusterBytes + bytes, (slot + 1) * clusterBytes);
      reads.push(source.readInto(from, buffer.subarray(slot * clusterBytes, slot * clusterBytes + bytes)));
    }
    await Promise.all(reads);
    const actions: (Action | number)[] = []; // a number: that candidate, at that cluster of the buffer
    const candidateOffsets: number[] = [];
    let slot = 0;
    for (let c = 0; c < clusterCount; c++) {
      const guestOffset = start + c * clusterBytes;
      const end = Math.min(guestOffset + clusterBytes, start + length);
      if (needs[c] === ClusterNeed.NOTHING) continue;
      if (needs[c] === ClusterNeed.DATA) {
        const at = slot++ * clusterBytes;
        if (minSparse === 0 || !isZero(buffer.subarray(at, at + clusterBytes))) {
          const candidate = candidateOffsets.push(guestOffset) - 1;
          if (candidate * clusterBytes !== at) buffer.copyWithin(candidate * clusterBytes, at, at + clusterBytes);
          actions.push(candidate);
          continue;
        }
      }
      actions.push({ kind: 'zero', guestOffset, length: end - guestOffset });
    }
    const candidates = candidateOffsets.length;
    const results = candidates === 0 ? [] : await compressor.compressClusters(compressionType, buffer.subarray(0, candidates * clusterBytes), clusterBytes);
    return actions.map((action): Action => {
      if (typeof action !== 'number') return action;
      const guestOffset = candidateOffsets[action];
      const compressed = results[action];
      if (compressed) return { kind: 'compressed', guestOffset, bytes: compressed };
      const bytes = Math.min(clusterBytes, start + length - guestOffset);
      return { kind: 'data', guestOffset, bytes: buffer.subarray(action * clusterBytes, action * clusterBytes + bytes) };
    });
  };

  // Compressed clusters are stored in batches (each one crash-safe metadata switch) of several
  // chunks, copied out of the chunk buffers; the other writes go out at once.
  let batch: CompressedClusterWrite[] = [];
  const storeBatch = async (): Promise<void> => {
    const writes = batch;
    batch = [];
    await target.writeCompressedClusters(writes);
  };
  const apply = async (actions: Action[]): Promise<Applied> => {
    const writes: Promise<void>[] = [];
    for (const action of actions) {
      if (action.kind === 'compressed') batch.push({ guestOffset: action.guestOffset, compressed: action.bytes.slice() });
      else if (action.kind === 'zero') writes.push(target.writeZeroes(action.guestOffset, action.length));
      else writes.push(target.write(action.guestOffset, action.bytes));
    }
    await Promise.all(writes);
    if (batch.length * clusterBytes >= COMPRESSED_BATCH_BYTES) await storeBatch();
    return APPLIED;
  };

  try {
    const dataBytes = await runPipeline({
      source, clusterBytes, chunkBytes: Math.ceil(convertChunkBytes() / clusterBytes) * clusterBytes, inFlight, prepare, apply, pooled: true,
      allocate: compressor.allocateBuffer?.bind(compressor), onProgress: options.onProgress,
    });
    await storeBatch();
    await target.flush();
    return { virtualSize: source.virtualSize, dataBytes };
  } finally {
    if (!options.compressor) await compressor.close();
  }
}
