// SPDX-License-Identifier: MIT
// Inflating compressed qcow2 clusters: raw deflate ("zlib" in QEMU, no header, 4 KiB window) via
// fflate and zstd frames via fzstd; both pure JavaScript, so Node, browsers and Deno alike. A
// platform entry may add native decoders (qcow2-wasm/node adds node:zlib's raw-deflate decoder,
// which runs in the thread pool, a batch decoder of zlib and zstd clusters on worker threads, and
// a zstd decoder, node:zlib's where it has one, else WebAssembly; qcow2-wasm/browser adds the
// engine's DecompressionStream and the WebAssembly zstd decoder); what they decline or fail on
// goes to the portable decoders, so every platform decodes alike. The compressed length is only
// known to 512-byte precision, so trailing bytes are expected.

import { Inflate } from 'fflate';
import { Decompress as ZstdStream } from 'fzstd';
import { ImageError } from '../base/errors.js';

/** qcow2 compression types (header byte 104). */
export type CompressionType = 'zlib' | 'zstd';

/**
 * A platform's raw-deflate decoder: resolves with the output of `compressed` (at most
 * `clusterBytes` of it; fewer when the stream is short), or undefined when it declines (e.g. the
 * stream produces more than a cluster, or the decoder cannot tell a verdict): the portable decoder
 * then decides (it stops at a full cluster, as QEMU does). Rejects when the data does not decode.
 */
export type NativeDeflateDecoder = (compressed: Uint8Array, clusterBytes: number) => Promise<Uint8Array | undefined>;

/**
 * A platform's decoder of one whole zstd frame: returns the frame's output, empty when the frame
 * does not decode or would produce more than `capacityBytes` (the caller tells that apart from a
 * frame that is empty). It allocates no window: output goes straight into a buffer of at most
 * `capacityBytes`.
 */
export interface ZstdFrameDecoder { decodeFrame(frame: Uint8Array, capacityBytes: number): Uint8Array }

/**
 * A platform's decoder of many compressed clusters of one type at once (e.g. on worker threads):
 * `pieces` holds [start, end) pairs of `input`, each the compressed bytes of one cluster (raw
 * deflate; for zstd exactly one frame, or an empty range the decoder leaves), decoded into
 * `targets` (one cluster each); `input` stays the caller's. Resolves with one flag per piece: 1
 * when it decoded to exactly one cluster (now in its target), 0 when not (its target is left
 * unspecified): the caller decodes those itself, so outcomes stay those of decodeCluster.
 */
export interface ClusterBatchDecoder {
  /**
   * Optional: a buffer of `inputBytes` for the input of a batch of `clusterCount` clusters of
   * `clusterBytes` compressed with `type`, which decodeClusters then takes without copying it
   * (undefined when it would not take the batch now). The caller gives it to decodeClusters at most once and leaves it after
   * (unless it decodes pieces from it itself).
   */
  inputBuffer?(type: CompressionType, inputBytes: number, clusterCount: number, clusterBytes: number): Uint8Array | undefined;
  /** Optional: ends the decoder's threads once their work is over (the next batch starts them again). */
  end?(): void;
  decodeClusters(type: CompressionType, input: Uint8Array, pieces: Uint32Array, targets: readonly Uint8Array[]): Promise<Uint8Array>;
}

let clusterBatch: ClusterBatchDecoder | undefined;

/** Sets (or, with undefined, removes) the batch decoder decodeClusters hands clusters to. */
export function setClusterBatchDecoder(decoder: ClusterBatchDecoder | undefined): void {
  clusterBatch = decoder;
}

let batchHolders = 0;

/**
 * Counts one more user (an open image) of the batch decoder; returns the call that uncounts it
 * (calling it again does nothing). When the last one goes, the batch decoder ends its threads.
 */
export function holdClusterBatchDecoder(): () => void {
  batchHolders++;
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    if (--batchHolders === 0) clusterBatch?.end?.();
  };
}

/**
 * A buffer of `inputBytes` to read the compressed bytes (`type`) of `clusterCount` clusters of
 * `clusterBytes` into before one decodeClusters call on them: the batch decoder's (no copy to
 * it then) where it lends one, else a new one.
 */
export function compressedInputBuffer(type: CompressionType, inputBytes: number, clusterCount: number, clusterBytes: number): Uint8Array {
  return clusterBatch?.inputBuffer?.(type, inputBytes, clusterCount, clusterBytes) ?? new Uint8Array(inputBytes);
}

/** One cluster of a decodeClusters call: its compressed bytes [start, end) and where it goes. */
export interface ClusterPiece { start: number; end: number; hostOffset: number; cluster: Uint8Array }

/**
 * Decodes the clusters whose compressed bytes lie in `input` (several consecutive clusters read
 * with one host read), each into its `cluster` (exactly one cluster): with the batch decoder when
 * one is set (a zstd cluster only when its first frame is whole and may fill the cluster by
 * itself), everything else (and what it leaves) as decodeCluster does, side by side. Rejects as
 * decodeCluster does, once every cluster is over.
 */
export async function decodeClusters(type: CompressionType, input: Uint8Array, pieces: readonly ClusterPiece[]): Promise<void> {
  let left = pieces;
  if (clusterBatch !== undefined && pieces.length > 0) {
    const ranges = new Uint32Array(pieces.length * 2);
    pieces.forEach((piece, i) => {
      const end = type === 'zlib' ? piece.end : piece.start + wholeClusterFrameBytes(input.subarray(piece.start, piece.end), piece.cluster.byteLength);
      ranges[2 * i] = piece.start;
      ranges[2 * i + 1] = end;
    });
    try {
      const decoded = await clusterBatch.decodeClusters(type, input, ranges, pieces.map((piece) => piece.cluster));
      left = pieces.filter((_, i) => decoded[i] !== 1);
    } catch {
      // The batch decoder failed as a whole (e.g. a worker exited): decode everything here.
    }
  }
  const settled = await Promise.allSettled(left.map((piece) =>
    decodeCluster(type, input.subarray(piece.start, piece.end), piece.cluster, piece.hostOffset)));
  for (const outcome of settled) if (outcome.status === 'rejected') throw outcome.reason;
}

// The length of the zstd frame `compressed` starts with when that frame is whole, not skippable,
// within the window limit and may produce exactly `clusterBytes` by itself (its headers say so or
// do not tell); else 0 (decodeCluster then follows the frames and reports what is wrong).
function wholeClusterFrameBytes(compressed: Uint8Array, clusterBytes: number): number {
  let frame: ZstdFrame | undefined;
  try {
    frame = zstdFrameAt(compressed, 0);
  } catch {
    return 0;
  }
  if (frame === undefined || frame.skippable) return 0;
  return frame.knownOutputBytes === clusterBytes || frame.knownOutputBytes < 0 ? frame.end : 0;
}

let nativeDeflate: NativeDeflateDecoder | undefined;

/** Sets (or, with undefined, removes) the native raw-deflate decoder decodeCluster prefers. */
export function setNativeDeflateDecoder(decoder: NativeDeflateDecoder | undefined): void {
  nativeDeflate = decoder;
}

let zstdLoader: (() => Promise<ZstdFrameDecoder>) | undefined;
let nativeZstd: Promise<ZstdFrameDecoder | undefined> | undefined;

/**
 * Sets (or, with undefined, removes) the loader of the native zstd frame decoder decodeCluster
 * prefers. It is called once, at the first zstd cluster; when it rejects, zstd clusters decode
 * with the portable decoder.
 */
export function setNativeZstdDecoder(loader: (() => Promise<ZstdFrameDecoder>) | undefined): void {
  zstdLoader = loader;
  nativeZstd = undefined;
}

function loadedZstd(): Promise<ZstdFrameDecoder | undefined> | undefined {
  if (zstdLoader === undefined) return undefined;
  nativeZstd ??= zstdLoader().catch(() => undefined);
  return nativeZstd;
}

/**
 * Decodes `compressed` into `cluster` (exactly one cluster), with the native decoder of its type
 * when one is set, else (and for what it declines) as inflateCluster. Rejects as inflateCluster
 * throws.
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
  if (type === 'zstd') {
    const pending = loadedZstd();
    const decoder = pending === undefined ? undefined : await pending;
    if (decoder !== undefined && zstdFramesNative(decoder, compressed, cluster, hostOffset)) return;
  }
  inflateCluster(type, compressed, cluster, hostOffset);
}

// Decodes the zstd frames of `input` one by one with the native decoder until the cluster is full,
// as QEMU's streaming loop does (bytes after the frame that fills it are ignored). False when it
// cannot (a frame that does not decode, is truncated, or would overfill the cluster): the
// portable decoder then decides. Throws QCOW2_CORRUPT for a frame whose window is too large.
function zstdFramesNative(decoder: ZstdFrameDecoder, input: Uint8Array, cluster: Uint8Array, hostOffset: number): boolean {
  let at = 0;
  let filled = 0;
  while (filled < cluster.byteLength) {
    let frame: ZstdFrame | undefined;
    try {
      frame = zstdFrameAt(input, at);
    } catch (error) {
      throw new ImageError('QCOW2_CORRUPT', `compressed cluster at host offset ${hostOffset} does not decode (zstd)`, { cause: error });
    }
    if (frame === undefined) return false;
    if (!frame.skippable) {
      const output = decoder.decodeFrame(input.subarray(at, frame.end), cluster.byteLength - filled);
      if (output.byteLength === 0 && frame.knownOutputBytes !== 0) return false;
      cluster.set(output, filled);
      filled += output.byteLength;
    }
    at = frame.end;
  }
  return true;
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

/**
 * Compressed bytes first given to a streaming deflate decoder (doubling after), which stops at the
 * piece that fills the cluster: bounds a bomb's work.
 */
export const DEFLATE_FIRST_PUSH_BYTES = 4096;

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

/** One zstd frame's extent in its input, from its frame and block headers. */
interface ZstdFrame {
  /** Input byte after the frame (its checksum included). */
  end: number;
  /** Bytes the frame produces when its headers tell (content size, or raw and RLE blocks only), else -1. */
  knownOutputBytes: number;
  /** A skippable frame (no output). */
  skippable: boolean;
}

const ZSTD_SKIPPABLE_MAGIC_MASK = 0xfffffff0;
const ZSTD_SKIPPABLE_MAGIC = 0x184d2a50;

// Reads the frame at byte `at` of `input` (headers only, no decoding): undefined when no whole
// frame is there (not a frame, or truncated). Throws when the frame declares a window or
// single-segment size above MAX_ZSTD_WINDOW_BYTES.
function zstdFrameAt(input: Uint8Array, at: number): ZstdFrame | undefined {
  if (at + 6 > input.byteLength) return undefined;
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  const magic = view.getUint32(at, true);
  if (((magic & ZSTD_SKIPPABLE_MAGIC_MASK) >>> 0) === ZSTD_SKIPPABLE_MAGIC) {
    if (at + 8 > input.byteLength) return undefined;
    const end = at + 8 + view.getUint32(at + 4, true);
    return end <= input.byteLength ? { end, knownOutputBytes: 0, skippable: true } : undefined;
  }
  if (magic !== ZSTD_MAGIC) return undefined;
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
  if (header + sizeBytes > input.byteLength) return undefined;
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
  let end = header + sizeBytes;
  let blocksOutput = 0;
  for (let last = false; !last;) {
    if (end + 3 > input.byteLength) return undefined;
    const block = input[end] | (input[end + 1] << 8) | (input[end + 2] << 16);
    last = (block & 1) !== 0;
    const type = (block >> 1) & 3;
    const size = block >>> 3;
    end += 3 + (type === 1 ? 1 : size);
    blocksOutput = type === 2 || blocksOutput < 0 ? -1 : blocksOutput + size;
  }
  if ((descriptor & 4) !== 0) end += 4; // content checksum
  if (end > input.byteLength) return undefined;
  return { end, knownOutputBytes: contentBytes >= 0 ? contentBytes : blocksOutput, skippable: false };
}

// Walks the zstd frames of `input` (headers only, no decoding) until the frames seen are known to
// produce `clusterBytes` or no whole frame follows, and throws when a frame declares a window or
// single-segment size above MAX_ZSTD_WINDOW_BYTES. Anything it cannot follow is left to the
// decoder, which reports it.
function checkZstdWindows(input: Uint8Array, clusterBytes: number): void {
  let at = 0;
  let produced = 0;
  for (let frame = zstdFrameAt(input, at); frame !== undefined && produced < clusterBytes; frame = zstdFrameAt(input, at)) {
    // Output unknown without decoding (compressed blocks, no content size): keep checking the
    // frames after it, as the decoder may reach them.
    if (frame.knownOutputBytes > 0) produced += frame.knownOutputBytes;
    at = frame.end;
  }
}
