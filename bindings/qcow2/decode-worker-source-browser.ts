// SPDX-License-Identifier: MIT
// The script of a browser worker that decodes batches of zlib-compressed qcow2 clusters with the
// engine's DecompressionStream (decode-workers-browser.ts starts it from a Blob): built from the
// source text of functions that refer to nothing outside themselves, so it needs no file of its
// own and works however the page was bundled.

import { DEFLATE_FIRST_PUSH_BYTES } from './decompress.js';
import { inflateWithStream, POSTED_READS, PROBE_STREAM } from './inflate-stream.js';
import type { DecodeBatchReply, DecodeBatchRequest } from './decode-workers-browser.js';

/** The part of a dedicated worker's global scope the script uses. */
interface DecodeWorkerScope {
  onmessage: ((event: MessageEvent<DecodeBatchRequest>) => void) | null;
  postMessage(message: DecodeBatchReply, transfer: Transferable[]): void;
}

// The worker's code: answers every batch, in order, with the pieces `inflate` decoded to a whole cluster
// (the rest are left to the page, which decodes them again and reports what is wrong). When the
// engine drops a stream's output at trailing bytes (found out once with `probe`, a stream of
// "qcow" followed by a byte), it declines every batch. Refers to nothing outside itself.
function serveDecodeBatches(scope: DecodeWorkerScope, inflate: typeof inflateWithStream, firstPushBytes: number, postedReads: number, probe: number[]): void {
  const usable = inflate(new Uint8Array(probe), 4, firstPushBytes, postedReads)
    .then((output) => output !== undefined && String.fromCharCode(...output) === 'qcow');
  const decodeBatch = async ({ id, input, pieces, clusterBytes }: DecodeBatchRequest): Promise<DecodeBatchReply> => {
    const count = pieces.length / 2;
    const output = new Uint8Array(count * clusterBytes);
    const decoded = new Uint8Array(count);
    if (!(await usable)) return { id, output: output.buffer, decoded, declined: true };
    const compressed = new Uint8Array(input);
    await Promise.all(Array.from({ length: count }, async (_, i) => {
      const start = pieces[2 * i];
      const end = pieces[2 * i + 1];
      if (end === start) return;
      const cluster = await inflate(compressed.subarray(start, end), clusterBytes, firstPushBytes, postedReads);
      if (cluster === undefined) return;
      output.set(cluster, i * clusterBytes);
      decoded[i] = 1;
    }));
    return { id, output: output.buffer, decoded };
  };
  // One batch at a time, in the order they came: the first is usually the one a guest waits for
  // (its neighbours and read-ahead follow), and interleaving would make it wait for them all.
  // A batch that fails as a whole (e.g. no memory for its output) is answered with no cluster decoded.
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
 * The worker's script: it decodes the zlib batches of DecodeBatchRequest messages with
 * inflateWithStream and answers each with a DecodeBatchReply (`declined` in an engine whose
 * DecompressionStream drops the output before trailing bytes).
 */
export function decodeWorkerSource(): string {
  return `(${serveDecodeBatches.toString()})(self, ${inflateWithStream.toString()}, ${DEFLATE_FIRST_PUSH_BYTES}, ${POSTED_READS}, [${PROBE_STREAM.join(',')}]);\n`;
}
