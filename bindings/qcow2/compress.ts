// SPDX-License-Identifier: MIT
// Compressing qcow2 clusters as QEMU does: raw deflate with a 4 KiB window and memLevel 9
// ("zlib", QEMU's deflateInit2(-12, 9); a 32 KiB window would make QEMU's inflateInit2(-12)
// reject the data), or one zstd frame at zstd's default level. A cluster is stored compressed
// only when the result is at most cluster size - 1 bytes, as qemu-img decides. This file runs
// everywhere (pako and a wasm zstd build); bindings/qcow2/compress-node.ts spreads the work over
// worker threads with Node's native zlib and a faster Node-only zstd build.

import type { Zstd } from '@hpcc-js/wasm-zstd';
import type { CompressionType } from './decompress.js';

export type { CompressionType } from './decompress.js';

/** QEMU's deflate parameters: Z_DEFAULT_COMPRESSION, a 2^12-byte window, memLevel 9. */
export const DEFLATE_OPTIONS = { level: 6, windowBits: 12, memLevel: 9 } as const;
/** zstd's default level (ZSTD_CLEVEL_DEFAULT), the one QEMU compresses with. */
export const ZSTD_LEVEL = 3;

/**
 * Compresses clusters. `compressClusters` takes `clusterCount` whole clusters laid end to end in
 * `data` and resolves to one entry per cluster: the compressed bytes, or undefined where
 * compressing does not save at least one byte (the cluster is then stored as it is).
 */
export interface ClusterCompressor {
  /**
   * Compresses the whole clusters of `clusterBytes` bytes each laid end to end in `data` with
   * `type`; one entry per cluster, undefined where compressing saves nothing. `data` must not
   * change until the promise settles. When `data` lies in a buffer from allocateBuffer, the
   * compressed bytes are written into `data` itself, packed from its start (each cluster's before
   * its own input ends, so an entry left undefined still holds its cluster's bytes), and the
   * entries are views of it; otherwise `data` is left unchanged and the entries are independent.
   */
  compressClusters(type: CompressionType, data: Uint8Array, clusterBytes: number): Promise<(Uint8Array | undefined)[]>;
  /**
   * Optional: a zero-filled buffer of `byteLength` bytes that compressClusters works on in place
   * (memory shared with the compressing threads: nothing is copied or allocated per call).
   */
  allocateBuffer?(byteLength: number): Uint8Array;
  /** How many compressClusters calls are worth having in flight at once. */
  readonly parallelism: number;
  /** Releases workers or wasm instances; idempotent. */
  close(): Promise<void>;
}

let zstdInstance: Promise<Zstd> | undefined;

/**
 * The shared wasm zstd instance (compiled once per realm), set to QEMU's level. The module is
 * imported on first use, so bundles that never compress zstd do not load its wasm.
 */
export function loadZstd(): Promise<Zstd> {
  zstdInstance ??= import('@hpcc-js/wasm-zstd').then(({ Zstd }) => Zstd.load()).then((zstd) => {
    zstd.setCompressionLevel(ZSTD_LEVEL);
    return zstd;
  });
  return zstdInstance;
}

/**
 * One zstd frame of `cluster` through the streaming API, which keeps its compression context
 * between calls (the one-shot compress() sets one up per call: three times slower on clusters).
 */
export function zstdFrame(zstd: Zstd, cluster: Uint8Array): Uint8Array {
  zstd.reset();
  const head = zstd.compressChunk(cluster);
  const tail = zstd.compressEnd();
  if (tail.byteLength === 0) return head;
  const frame = new Uint8Array(head.byteLength + tail.byteLength);
  frame.set(head);
  frame.set(tail, head.byteLength);
  return frame;
}

/**
 * Compresses each cluster of `data` with `compressOne`, keeping results below `clusterBytes`.
 * Results are copies, independent of `data`.
 */
export function compressEach(data: Uint8Array, clusterBytes: number, compressOne: (cluster: Uint8Array) => Uint8Array): (Uint8Array | undefined)[] {
  const results: (Uint8Array | undefined)[] = [];
  for (let at = 0; at < data.byteLength; at += clusterBytes) {
    const compressed = compressOne(data.subarray(at, at + clusterBytes));
    results.push(compressed.byteLength < clusterBytes ? compressed : undefined);
  }
  return results;
}

/**
 * A compressor on the calling thread, for every platform: pako for deflate, the wasm zstd build
 * for zstd. Work is done in the promise's microtask, so it does not overlap with itself.
 */
export function createInlineCompressor(): ClusterCompressor {
  return {
    parallelism: 1,
    async compressClusters(type, data, clusterBytes) {
      if (type === 'zstd') {
        const zstd = await loadZstd();
        return compressEach(data, clusterBytes, (cluster) => zstdFrame(zstd, cluster));
      }
      const { deflateRaw } = await import('pako'); // loaded on first use, like the zstd build
      return compressEach(data, clusterBytes, (cluster) => deflateRaw(cluster, DEFLATE_OPTIONS));
    },
    async close() {},
  };
}
