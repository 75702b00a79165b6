// SPDX-License-Identifier: MIT
// Compressed clusters for decoder tests, in Node and in browsers: a patterned cluster's contents
// and the zstd frames (one per cluster, content size declared, as this package writes them) with
// the cases every zstd decoder must decide as the portable one does.

import { loadZstd, zstdFrame } from '../../bindings/qcow2/compress.js';

/** The cluster size of these cases. */
export const CLUSTER_BYTES = 65536;

/** `bytes` of a fixed pattern that compresses but is not trivially zero. */
export function patterned(bytes: number): Uint8Array {
  const data = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) data[i] = (i * 31 + (i >> 9)) & 0xff;
  return data;
}

/** The parts, one after another, in a new array. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.byteLength, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

/** zstd frames of a patterned cluster, of its first half, and of two clusters. */
export interface ZstdFrames { valid: Uint8Array; half: Uint8Array; twoClusters: Uint8Array }

/** Compresses the frames of ZstdFrames. */
export async function makeZstdFrames(): Promise<ZstdFrames> {
  const zstd = await loadZstd();
  return {
    valid: zstdFrame(zstd, patterned(CLUSTER_BYTES)),
    half: zstdFrame(zstd, patterned(CLUSTER_BYTES).subarray(0, CLUSTER_BYTES / 2)),
    twoClusters: zstdFrame(zstd, patterned(2 * CLUSTER_BYTES)),
  };
}

const SKIPPABLE_FRAME = new Uint8Array([0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]);

/**
 * The zstd cases, named, each made on demand from `frames()` (frames are made in a beforeAll):
 * [0] a valid cluster with trailing bytes, [1] two halves after a skippable frame, [2] two
 * clusters in one frame, [3] a truncated frame, [4] not zstd, [5] half a cluster.
 */
export function zstdCases(frames: () => ZstdFrames): [string, () => Uint8Array][] {
  return [
    ['a valid frame followed by the next cluster\'s frame', () => concatBytes(frames().valid, frames().half)],
    ['two frames of half a cluster each, after a skippable frame', () => concatBytes(SKIPPABLE_FRAME, frames().half, frames().half)],
    ['a frame of two clusters', () => frames().twoClusters],
    ['a truncated frame', () => frames().valid.subarray(0, frames().valid.byteLength >> 1)],
    ['bytes that are not zstd', () => new Uint8Array(600).fill(0xff)],
    ['a frame of half a cluster', () => frames().half],
  ];
}
