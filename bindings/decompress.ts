// SPDX-License-Identifier: MIT
// Inflating compressed qcow2 clusters: raw deflate ("zlib" in QEMU, no header, 4 KiB window) via
// fflate and zstd frames via fzstd; both pure JavaScript, so Node, browsers and Deno alike. A
// platform entry may add a native raw-deflate decoder (qcow2-wasm/node adds node:zlib's, which runs
// in the thread pool, several clusters at once). The compressed length is only known to 512-byte
// precision, so trailing bytes are expected.

import { Inflate } from 'fflate';
import { Decompress as ZstdStream } from 'fzstd';
import { ImageError } from './errors.js';

/** qcow2 compression types (header byte 104). */
export type CompressionType = 'zlib' | 'zstd';

/**
 * A platform's raw-deflate decoder: resolves with the output of `compressed` (at most
 * `clusterBytes` of it; fewer when the stream is short), or undefined when it declines (the stream
 * produces more than a cluster: the portable decoder then stops at a full cluster, as QEMU does).
 * Rejects when the data does not decode.
 */
export type NativeDeflateDecoder = (compressed: Uint8Array, clusterBytes: number) => Promise<Uint8Array | undefined>;

let nativeDeflate: NativeDeflateDecoder | undefined;

/** Sets (or, with undefined, removes) the native raw-deflate decoder decodeCluster prefers. */
export function setNativeDeflateDecoder(decoder: NativeDeflateDecoder | undefined): void {
  nativeDeflate = decoder;
}

/**
 * Decodes `compressed` into `cluster` (exactly one cluster), with the native decoder when one is
 * set and the type is zlib, else as inflateCluster. Rejects as inflateCluster throws.
 */
export async function decodeCluster(type: CompressionType, compressed: Uint8Array, cluster: Uint8Array, hostOffset: number): Promise<void> {
  if (type === 'zlib' && nativeDeflate !== undefined) {
    let produced: Uint8Array | undefined;
    try {
      produced = await nativeDeflate(compressed, cluster.byteLength);
    } catch (error) {
      throw new ImageError('QCOW2_CORRUPT', `compressed cluster at host offset ${hostOffset} does not decode (${type})`, { cause: error });
    }
    if (produced !== undefined) {
      if (produced.byteLength !== cluster.byteLength) {
        throw new ImageError('QCOW2_CORRUPT',
          `compressed cluster at host offset ${hostOffset} inflates to ${produced.byteLength} bytes, not ${cluster.byteLength}`);
      }
      cluster.set(produced);
      return;
    }
  }
  inflateCluster(type, compressed, cluster, hostOffset);
}

/**
 * Inflates `compressed` into `cluster` (exactly one cluster) with the portable decoders. Throws QCOW2_CORRUPT when the data
 * does not decode or does not fill the cluster exactly.
 */
export function inflateCluster(type: CompressionType, compressed: Uint8Array, cluster: Uint8Array, hostOffset: number): void {
  let produced: Uint8Array;
  try {
    produced = type === 'zlib' ? deflateStream(compressed, cluster) : zstdFrames(compressed, cluster);
  } catch (error) {
    throw new ImageError('QCOW2_CORRUPT', `compressed cluster at host offset ${hostOffset} does not decode (${type})`, { cause: error });
  }
  if (produced.byteLength !== cluster.byteLength) {
    throw new ImageError('QCOW2_CORRUPT',
      `compressed cluster at host offset ${hostOffset} inflates to ${produced.byteLength} bytes, not ${cluster.byteLength}`);
  }
  if (produced.buffer !== cluster.buffer || produced.byteOffset !== cluster.byteOffset) cluster.set(produced);
}

/** Compressed bytes first given to the deflate decoder (doubling after): bounds a bomb's work. */
const DEFLATE_FIRST_PUSH_BYTES = 4096;

// Like QEMU (zlib stops once the output buffer is full), stop inflating once the cluster is
// full: fflate's one-shot inflate with a fixed output buffer decodes the whole stream (a 64 MiB
// "bomb" in one compressed cluster took seconds), so feed the decoder growing pieces and stop at
// the first piece that fills the cluster. A piece inflates to at most ~1032 times its size, so a
// bomb costs about 4 MiB of inflating; doubling keeps valid clusters to a few pushes (fflate's
// stream is slow with many small pushes).
function deflateStream(compressed: Uint8Array, cluster: Uint8Array): Uint8Array {
  let filled = 0;
  const stream = new Inflate((chunk) => {
    const take = Math.min(chunk.byteLength, cluster.byteLength - filled);
    cluster.set(chunk.subarray(0, take), filled);
    filled += take;
    if (filled === cluster.byteLength) throw CLUSTER_FULL;
  });
  try {
    for (let at = 0, piece = DEFLATE_FIRST_PUSH_BYTES; at < compressed.byteLength && filled < cluster.byteLength; at += piece, piece *= 2) {
      const end = Math.min(compressed.byteLength, at + piece);
      stream.push(compressed.subarray(at, end), end === compressed.byteLength);
    }
  } catch (error) {
    if (error !== CLUSTER_FULL) throw error;
  }
  return cluster.subarray(0, filled);
}

// QEMU decompresses zstd with a streaming loop until the cluster is full: the input may hold
// several frames, and past the cluster's last frame come unrelated bytes (often the next
// compressed cluster's frame, as compressed clusters are packed byte by byte). So stream the
// input and stop as soon as exactly a cluster has come out.
const CLUSTER_FULL = new Error('cluster full');

function zstdFrames(compressed: Uint8Array, cluster: Uint8Array): Uint8Array {
  checkZstdWindows(compressed, cluster.byteLength);
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

/**
 * Largest zstd window (or single-segment frame) accepted: the decoder allocates a buffer of the
 * window size a frame header declares (up to 2 GiB), so a hostile header would be a memory bomb.
 * A cluster is at most 2 MiB, and zstd never needs a window larger than its input.
 */
const MAX_ZSTD_WINDOW_BYTES = 8 << 20;
const ZSTD_MAGIC = 0xfd2fb528;

// Walks the zstd frames of `input` (frame headers and block headers only, no decoding) until the
// frames seen are known to produce `clusterBytes` or the input ends, and throws when a frame declares a window or
// single-segment size above MAX_ZSTD_WINDOW_BYTES. Anything it cannot follow is left to the
// decoder, which reports it.
function checkZstdWindows(input: Uint8Array, clusterBytes: number): void {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  let at = 0;
  let produced = 0;
  while (produced < clusterBytes && at + 6 <= input.byteLength && view.getUint32(at, true) === ZSTD_MAGIC) {
    const descriptor = input[at + 4];
    const singleSegment = (descriptor & 0x20) !== 0;
    const sizeFieldCode = descriptor >> 6;
    const dictionaryBytes = [0, 1, 2, 4][descriptor & 3];
    const sizeBytes = [singleSegment ? 1 : 0, 2, 4, 8][sizeFieldCode];
    let header = at + 5;
    let windowBytes = 0;
    if (!singleSegment) {
      const exponent = input[header] >> 3;
      const base = 2 ** (10 + exponent);
      windowBytes = base + (base / 8) * (input[header] & 7);
      header++;
    }
    header += dictionaryBytes;
    if (header + sizeBytes > input.byteLength) return;
    let contentBytes = -1;
    if (sizeBytes > 0) {
      contentBytes = 0;
      for (let i = sizeBytes - 1; i >= 0; i--) contentBytes = contentBytes * 256 + input[header + i];
      if (sizeBytes === 2) contentBytes += 256;
    }
    if (singleSegment) windowBytes = contentBytes;
    if (windowBytes > MAX_ZSTD_WINDOW_BYTES) {
      throw new Error(`zstd frame at byte ${at} declares a ${windowBytes}-byte window (at most ${MAX_ZSTD_WINDOW_BYTES})`);
    }
    at = header + sizeBytes;
    let frameOutput = 0;
    for (let last = false; !last;) {
      if (at + 3 > input.byteLength) return;
      const block = input[at] | (input[at + 1] << 8) | (input[at + 2] << 16);
      last = (block & 1) !== 0;
      const type = (block >> 1) & 3;
      const size = block >>> 3;
      at += 3 + (type === 1 ? 1 : size);
      frameOutput = type === 2 ? -1 : frameOutput < 0 ? -1 : frameOutput + size;
    }
    if ((descriptor & 4) !== 0) at += 4; // content checksum
    // Output unknown without decoding (compressed blocks, no content size): keep checking the
    // frames after it, as the decoder may reach them.
    const output = contentBytes >= 0 ? contentBytes : frameOutput;
    if (output > 0) produced += output;
  }
}
