// SPDX-License-Identifier: MIT
// The engine's own raw-deflate decoder (DecompressionStream 'deflate-raw', in Chromium, Firefox
// and WebKit) for compressed qcow2 clusters: native code instead of the JavaScript inflater.
// Installed by the browser entry point.

import { DEFLATE_FIRST_PUSH_BYTES, type NativeDeflateDecoder } from './decompress.js';

/** Reads kept posted ahead of the decoder (see streamDeflateDecoder). */
export const POSTED_READS = 16;

/**
 * A raw-deflate decoder on DecompressionStream('deflate-raw'), or undefined where the engine has
 * none. It resolves with the cluster only when the stream produced at least `clusterBytes` (the
 * first `clusterBytes` of it, as QEMU stops at a full cluster); anything else (a truncated or
 * invalid stream, or an engine that drops the output of a piece that ends in bytes after the
 * stream's end) resolves undefined, so the portable decoder gives the verdict. Never rejects.
 *
 * The compressed bytes go in pieces that double from a few KiB, and decoding stops at the piece
 * that fills the cluster, so a stream that inflates far past a cluster (a bomb) costs a few MiB.
 * Several reads stay posted while a piece decodes: an engine that errors the stream at trailing
 * bytes (qcow2 cluster data is followed by up to a sector of the next cluster's bytes) keeps what
 * it handed to a read, but drops what it had queued. Engines that drop the output of the piece
 * with the trailing bytes even so (WebKit, as the Compression Streams standard says) would fail
 * nearly every cluster: there the decoder declines at once (found out once, at the first call).
 */
export function streamDeflateDecoder(): NativeDeflateDecoder | undefined {
  if (typeof DecompressionStream !== 'function') return undefined;
  try {
    new DecompressionStream('deflate-raw');
  } catch {
    return undefined; // an engine without the raw format
  }
  const decode: NativeDeflateDecoder = (compressed, clusterBytes) => inflateWithStream(compressed, clusterBytes, DEFLATE_FIRST_PUSH_BYTES, POSTED_READS);
  let keepsOutput: Promise<boolean> | undefined;
  return async (compressed, clusterBytes) => {
    keepsOutput ??= keepsOutputBeforeTrailingBytes(decode);
    return (await keepsOutput) ? decode(compressed, clusterBytes) : undefined;
  };
}

/**
 * One raw-deflate stream through a new DecompressionStream('deflate-raw') (see
 * streamDeflateDecoder): the first `clusterBytes` of its output, or undefined when it produced
 * fewer. Pieces of the input start at `firstPushBytes` and double; `postedReads` reads stay
 * posted. Never rejects. It refers to nothing outside itself, so its source text also runs as is
 * in the decoding workers (decode-workers-browser.ts).
 */
export async function inflateWithStream(compressed: Uint8Array, clusterBytes: number, firstPushBytes: number, postedReads: number): Promise<Uint8Array | undefined> {
  // The stream takes no views of shared memory.
  const input = compressed.buffer instanceof ArrayBuffer ? compressed as Uint8Array<ArrayBuffer> : new Uint8Array(compressed);
  const stream = new DecompressionStream('deflate-raw');
  const writer = stream.writable.getWriter();
  const reader = stream.readable.getReader();
  const cluster = new Uint8Array(clusterBytes);
  let filled = 0;
  let ended = false;
  const take = (result: ReadableStreamReadResult<Uint8Array>): void => {
    if (result.done) {
      ended = true;
      return;
    }
    const chunk = result.value;
    const room = clusterBytes - filled;
    cluster.set(room < chunk.byteLength ? chunk.subarray(0, room) : chunk, filled);
    filled += Math.min(room, chunk.byteLength);
    if (filled < clusterBytes) post();
  };
  const post = (): void => {
    if (ended || filled >= clusterBytes) return;
    void reader.read().then(take, () => { ended = true; });
  };
  for (let i = 0; i < postedReads; i++) post();
  try {
    for (let at = 0, piece = firstPushBytes; at < input.byteLength && filled < clusterBytes && !ended; at += piece, piece *= 2) {
      await writer.write(input.subarray(at, Math.min(input.byteLength, at + piece)));
    }
    if (filled < clusterBytes && !ended) await writer.close();
    // Let the reads take the output of the last piece.
    await Promise.resolve();
  } catch {
    // Invalid data, a truncated stream or trailing bytes: what reached a read counts.
  }
  if (filled < clusterBytes) await new Promise((resolve) => setTimeout(resolve, 0));
  void reader.cancel().catch(() => undefined);
  void writer.abort().catch(() => undefined);
  return filled === clusterBytes ? cluster : undefined;
}

/** A stored deflate block holding "qcow", followed by a byte after the stream's end. */
export const PROBE_STREAM = new Uint8Array([0x01, 0x04, 0x00, 0xfb, 0xff, 0x71, 0x63, 0x6f, 0x77, 0x00]);

/** Whether `decode` returns a stream's output when bytes follow the stream's end. */
async function keepsOutputBeforeTrailingBytes(decode: NativeDeflateDecoder): Promise<boolean> {
  const output = await decode(PROBE_STREAM, 4);
  return output !== undefined && new TextDecoder().decode(output) === 'qcow';
}
