// SPDX-License-Identifier: MIT
// The dedicated worker behind decode-workers-browser.ts: it decodes each batch of compressed
// clusters the page sends as the page would (the engine's DecompressionStream for zlib, the
// WebAssembly zstd decoder, the portable decoders for what they decline) and answers with the
// clusters and which of them decoded. A cluster that does not decode is only marked: the page
// decodes it again and reports the error. Loaded by URL; exports nothing.

import { decodeCluster, setNativeDeflateDecoder, setNativeZstdDecoder } from './decompress.js';
import { streamDeflateDecoder } from './inflate-stream.js';
import type { DecodeBatchReply, DecodeBatchRequest } from './decode-workers-browser.js';

setNativeDeflateDecoder(streamDeflateDecoder());
setNativeZstdDecoder(() => import('./zstd-wasm.js').then((module) => module.loadWasmZstdDecoder()));

async function decodeBatch({ id, type, input, pieces, clusterBytes }: DecodeBatchRequest): Promise<DecodeBatchReply> {
  const count = pieces.length / 2;
  const compressed = new Uint8Array(input);
  const output = new Uint8Array(count * clusterBytes);
  const decoded = new Uint8Array(count);
  await Promise.all(Array.from({ length: count }, async (_, i) => {
    const start = pieces[2 * i];
    const end = pieces[2 * i + 1];
    if (end === start) return;
    try {
      await decodeCluster(type, compressed.subarray(start, end), output.subarray(i * clusterBytes, (i + 1) * clusterBytes), start);
      decoded[i] = 1;
    } catch {
      // Left to the page, which decodes it again and reports the error with the cluster's host offset.
    }
  }));
  return { id, output: output.buffer, decoded };
}

const scope = self as unknown as {
  onmessage: ((event: MessageEvent<DecodeBatchRequest>) => void) | null;
  postMessage(message: DecodeBatchReply, transfer: Transferable[]): void;
};
scope.onmessage = (event) => {
  void decodeBatch(event.data).then((reply) => scope.postMessage(reply, [reply.output, reply.decoded.buffer]));
};
