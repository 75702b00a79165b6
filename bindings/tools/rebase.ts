// SPDX-License-Identifier: MIT
// Changing a qcow2 image's backing file (qemu-img rebase). Safe mode first copies into the image
// every cluster it does not hold itself whose content differs between the old and the new
// backing file, so the image reads the same afterwards; then the header names the new backing
// file. Unsafe mode (-u) only changes the name. With compression (rebase -c, as QEMU 8.2 has
// it) the copied clusters are stored compressed: whole clusters, zeros as zero clusters.

import type { BlockImage } from '../dispatch/image.js';
import type { Qcow2Image } from '../qcow2/qcow2-image.js';
import { ImageError } from '../base/errors.js';
import { createInlineCompressor, type ClusterCompressor } from '../qcow2/compress.js';
import { layerRanges } from './commit.js';
import { CompressedCopies } from './rebase-compressed.js';

/** Bytes compared per step. */
const COMPARE_CHUNK_BYTES = 1 << 20;

/** Options of copyBackingDifferences. */
export interface RebaseCopyOptions {
  /** Called as ranges are compared: done and total bytes not held by the image itself. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Store the copied clusters compressed where that saves space (qemu-img rebase -c). */
  compress?: boolean;
  /** Compressor for `compress` (default: on the calling thread). Not closed here. */
  compressor?: ClusterCompressor;
}

/**
 * Safe rebase's copy: for every guest cluster `image` (writable, opened over its current backing
 * chain) does not hold itself, compares what it reads now with what `newBacking` reads there
 * (zeros past its end, or everywhere when undefined) and writes the current content into the
 * image where they differ. Afterwards the image reads the same over either backing file. Then
 * call image.setBackingFile. Throws IMAGE_READ_ONLY for a read-only image, and the images' errors.
 */
export async function copyBackingDifferences(image: Qcow2Image, newBacking: BlockImage | undefined, options: RebaseCopyOptions = {}): Promise<void> {
  if (image.readOnly) throw new ImageError('IMAGE_READ_ONLY', 'the image is open read-only');
  const held = await layerRanges(image);
  const gaps: [number, number][] = [];
  let position = 0;
  for (const range of held) {
    if (position < range.start) gaps.push([position, range.start]);
    position = range.end;
  }
  if (position < image.virtualSize) gaps.push([position, image.virtualSize]);
  const total = gaps.reduce((sum, [start, end]) => sum + (end - start), 0);
  const clusterBytes = image.header.clusterSize;
  const compressor = options.compress ? options.compressor ?? createInlineCompressor() : undefined;
  const compressed = compressor && new CompressedCopies(image, compressor);
  let done = 0;
  try {
    options.onProgress?.(0, total);
    for (const [start, end] of gaps) {
      for (let at = start; at < end; at += COMPARE_CHUNK_BYTES) {
        const length = Math.min(COMPARE_CHUNK_BYTES, end - at);
        const current = await image.read(at, length);
        const next = new Uint8Array(length);
        const inNew = newBacking ? Math.max(0, Math.min(length, newBacking.virtualSize - at)) : 0;
        if (inNew > 0) await newBacking!.readInto(at, next.subarray(0, inNew));
        // Write whole differing clusters' worth (bounded by the gap), merged into runs.
        let runStart = -1;
        const flushRun = async (runEnd: number) => {
          if (runStart >= 0) await image.write(at + runStart, current.subarray(runStart, runEnd));
          runStart = -1;
        };
        for (let piece = 0; piece < length;) {
          const pieceEnd = Math.min(length, Math.floor((at + piece) / clusterBytes) * clusterBytes + clusterBytes - at);
          if (!differ(current, next, piece, pieceEnd)) await flushRun(piece);
          else if (compressed?.takes(at + piece, pieceEnd - piece)) {
            await flushRun(piece);
            await compressed.add(at + piece, current.subarray(piece, pieceEnd));
          }
          else if (runStart < 0) runStart = piece;
          piece = pieceEnd;
        }
        await flushRun(length);
        done += length;
        options.onProgress?.(done, total);
      }
    }
    await compressed?.finish();
  } finally {
    if (compressor && !options.compressor) await compressor.close();
  }
  await image.flush();
}

function differ(a: Uint8Array, b: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (a[i] !== b[i]) return true;
  return false;
}
