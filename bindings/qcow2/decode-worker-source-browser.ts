// SPDX-License-Identifier: MIT
// The script of a browser worker that decodes batches of compressed qcow2 clusters: zlib with the
// engine's DecompressionStream, zstd with the reference decoder built to WebAssembly (the zstddec
// package, whose script the page hands over at the first zstd batch). decode-workers-browser.ts
// starts it from a Blob: it is built from the source text of functions that refer to nothing
// outside themselves, so it needs no file of its own and works however the page was bundled.

import { DEFLATE_FIRST_PUSH_BYTES } from './decompress.js';
import { inflateWithStream, POSTED_READS, PROBE_STREAM } from './inflate-stream.js';
import type { DecodeBatchReply, DecodeBatchRequest } from './decode-workers-browser.js';

/** The part of a dedicated worker's global scope the script uses. */
interface DecodeWorkerScope {
  onmessage: ((event: MessageEvent<DecodeBatchRequest>) => void) | null;
  postMessage(message: DecodeBatchReply, transfer: Transferable[]): void;
  importScripts(...urls: string[]): void;
}

/** What the zstd decoder's script defines (zstddec's API): decode returns an empty array when the frame does not decode or its output exceeds `capacityBytes`. */
interface ZstdDecoderExports { ZSTDDecoder: new () => { init(): Promise<void>; decode(frame: Uint8Array, capacityBytes: number): Uint8Array } }

/** A decoder of one piece into a whole cluster, or undefined when it does not give exactly one. */
type PieceDecoder = (piece: Uint8Array, clusterBytes: number) => Promise<Uint8Array | undefined> | Uint8Array | undefined;

// The worker's code: answers every batch, in order, with the pieces it decoded to a whole cluster
// (the rest are left to the page, which decodes them again and reports what is wrong). zlib
// pieces go through `inflate`; when the engine drops a stream's output at trailing bytes (found
// out once with `probe`, a stream of "qcow" followed by a byte), it declines every zlib batch.
// zstd pieces go through the decoder of the script the first zstd batch names, loaded once; where
// it cannot load, it declines every zstd batch. Refers to nothing outside itself.
function serveDecodeBatches(scope: DecodeWorkerScope, inflate: typeof inflateWithStream, firstPushBytes: number, postedReads: number, probe: number[]): void {
  const inflateUsable = inflate(new Uint8Array(probe), 4, firstPushBytes, postedReads)
    .then((output) => output !== undefined && String.fromCharCode(...output) === 'qcow');
  const inflatePiece: PieceDecoder = (piece, clusterBytes) => inflate(piece, clusterBytes, firstPushBytes, postedReads);
  let zstdLoaded: Promise<PieceDecoder | undefined> | undefined;
  const loadZstd = async (script: DecodeBatchRequest['zstdDecoder']): Promise<PieceDecoder | undefined> => {
    if (script === undefined) return undefined;
    scope.importScripts(script.url);
    const decoder = new (Reflect.get(scope, script.globalName) as ZstdDecoderExports).ZSTDDecoder();
    await decoder.init();
    return (piece, clusterBytes) => {
      const cluster = decoder.decode(piece, clusterBytes);
      return cluster.byteLength === clusterBytes ? cluster : undefined;
    };
  };
  const decoderFor = async ({ type, zstdDecoder }: DecodeBatchRequest): Promise<PieceDecoder | undefined> => {
    if (type === 'zlib') return (await inflateUsable) ? inflatePiece : undefined;
    zstdLoaded ??= loadZstd(zstdDecoder).catch(() => undefined);
    return zstdLoaded;
  };
  const decodeBatch = async (request: DecodeBatchRequest): Promise<DecodeBatchReply> => {
    const { id, input, pieces, clusterBytes } = request;
    const count = pieces.length / 2;
    const output = new Uint8Array(count * clusterBytes);
    const decoded = new Uint8Array(count);
    const decode = await decoderFor(request);
    if (decode === undefined) return { id, output: output.buffer, decoded, declined: true };
    const compressed = new Uint8Array(input);
    await Promise.all(Array.from({ length: count }, async (_, i) => {
      const start = pieces[2 * i];
      const end = pieces[2 * i + 1];
      if (end === start) return;
      const cluster = await decode(compressed.subarray(start, end), clusterBytes);
      if (cluster === undefined) return;
      output.set(cluster, i * clusterBytes);
      decoded[i] = 1;
    }));
    return { id, output: output.buffer, decoded };
  };
  // One batch at a time, in the order they came: the first is usually the one a guest waits for
  // (its neighbours and read-ahead follow), and interleaving would make it wait for them all.
  // A batch that fails as a whole (e.g. no memory for its output, or a zstd piece the decoder
  // throws on) is answered with no cluster decoded.
  let previous: Promise<void> = Promise.resolve();
  scope.onmessage = (event) => {
    const { id, pieces } = event.data;
    previous = previous
      .then(() => decodeBatch(event.data))
      .catch((): DecodeBatchReply => ({ id, output: new ArrayBuffer(0), decoded: new Uint8Array(pieces.length / 2) }))
      .then((reply) => scope.postMessage(reply, [reply.output, reply.decoded.buffer]));
  };
}

/**
 * The worker's script: it decodes the batches of DecodeBatchRequest messages (zlib with
 * inflateWithStream, zstd with the decoder script the request names) and answers each with a
 * DecodeBatchReply (`declined` for a type the worker cannot decode: zlib in an engine whose
 * DecompressionStream drops the output before trailing bytes, zstd when its script does not load).
 */
export function decodeWorkerSource(): string {
  return `(${serveDecodeBatches.toString()})(self, ${inflateWithStream.toString()}, ${DEFLATE_FIRST_PUSH_BYTES}, ${POSTED_READS}, [${PROBE_STREAM.join(',')}]);\n`;
}
