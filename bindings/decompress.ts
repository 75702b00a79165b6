// SPDX-License-Identifier: MIT
// Inflating compressed qcow2 clusters: raw deflate ("zlib" in QEMU, no header, 4 KiB window) via
// fflate and zstd frames via fzstd; both pure JavaScript, so Node, browsers and Deno alike.
// The compressed length is only known to 512-byte precision, so trailing bytes are expected.

import { inflateSync } from 'fflate';
import { Decompress as ZstdStream } from 'fzstd';
import { ImageError } from './errors.js';

/** qcow2 compression types (header byte 104). */
export type CompressionType = 'zlib' | 'zstd';

/**
 * Inflates `compressed` into `cluster` (exactly one cluster). Throws QCOW2_CORRUPT when the data
 * does not decode or does not fill the cluster exactly.
 */
export function inflateCluster(type: CompressionType, compressed: Uint8Array, cluster: Uint8Array, hostOffset: number): void {
  let produced: Uint8Array;
  try {
    produced = type === 'zlib' ? inflateSync(compressed, { out: cluster }) : zstdFrames(compressed, cluster);
  } catch (error) {
    throw new ImageError('QCOW2_CORRUPT', `compressed cluster at host offset ${hostOffset} does not decode (${type})`, { cause: error });
  }
  if (produced.byteLength !== cluster.byteLength) {
    throw new ImageError('QCOW2_CORRUPT',
      `compressed cluster at host offset ${hostOffset} inflates to ${produced.byteLength} bytes, not ${cluster.byteLength}`);
  }
  if (produced.buffer !== cluster.buffer || produced.byteOffset !== cluster.byteOffset) cluster.set(produced);
}

// QEMU decompresses zstd with a streaming loop until the cluster is full: the input may hold
// several frames, and past the cluster's last frame come unrelated bytes (often the next
// compressed cluster's frame, as compressed clusters are packed byte by byte). So stream the
// input and stop as soon as exactly a cluster has come out.
const CLUSTER_FULL = new Error('cluster full');

function zstdFrames(compressed: Uint8Array, cluster: Uint8Array): Uint8Array {
  let filled = 0;
  const stream = new ZstdStream((chunk) => {
    const take = Math.min(chunk.byteLength, cluster.byteLength - filled);
    cluster.set(chunk.subarray(0, take), filled);
    filled += take;
    if (filled === cluster.byteLength) throw CLUSTER_FULL;
  });
  try {
    stream.push(compressed, true);
  } catch (error) {
    if (error !== CLUSTER_FULL) throw error;
  }
  return cluster.subarray(0, filled);
}
