// SPDX-License-Identifier: MIT
// Reads an HTTP response body piece by piece into the caller's buffers, without ever holding the
// whole body: where the platform lets a reader fill a given buffer (a BYOB reader, e.g. Chromium
// and Firefox), through a few reused scratch buffers, so a long download allocates nothing per
// response; elsewhere through the platform's own chunks, each dropped once copied.

/** Bytes of one scratch buffer a BYOB read fills. */
const SCRATCH_BYTES = 256 * 1024;
/** Scratch buffers kept for reuse (one per concurrent body read; more are made and dropped). */
const SCRATCH_KEPT = 8;

/** Reused scratch buffers for BYOB body reads; one pool per backend. */
export class ScratchPool {
  private readonly free: Uint8Array[] = [];

  /** A scratch buffer to read into (a kept one when there is one). */
  take(): Uint8Array {
    return this.free.pop() ?? new Uint8Array(SCRATCH_BYTES);
  }

  /** Gives `buffer` back for the next read (a BYOB read hands back a new view of the same memory). */
  give(buffer: Uint8Array): void {
    if (this.free.length < SCRATCH_KEPT && buffer.byteLength === SCRATCH_BYTES) this.free.push(buffer);
  }
}

/**
 * Streams `body` (expected to be exactly `expectedBytes` long) into `deliver`, called with each
 * piece in order and the piece's offset in the body; the piece is only valid during the call.
 * Returns the body's length; stops reading (and cancels the body) once it is past
 * `expectedBytes`, so the caller can report a long body without buffering it. Rejects with what
 * the body's reader rejects with.
 */
export async function readBodyInto(body: ReadableStream<Uint8Array> | null, expectedBytes: number, scratch: ScratchPool,
  deliver: (piece: Uint8Array, bodyOffset: number) => void): Promise<number> {
  if (body === null) return 0;
  let reader: ReadableStreamBYOBReader | undefined;
  try {
    reader = body.getReader({ mode: 'byob' });
  } catch {
    reader = undefined; // not a byte stream here: read the platform's chunks
  }
  let received = 0;
  if (reader === undefined) {
    const chunks = body.getReader();
    for (;;) {
      const { value, done } = await chunks.read();
      if (done) return received;
      deliver(value, received);
      received += value.byteLength;
      if (received > expectedBytes) {
        await chunks.cancel();
        return received;
      }
    }
  }
  let buffer = scratch.take();
  try {
    for (;;) {
      // One byte more than is left, so a body longer than expected shows up without a read past it.
      const room = Math.min(buffer.byteLength, expectedBytes - received + 1);
      const { value, done } = await reader.read(buffer.subarray(0, room));
      if (value !== undefined) buffer = new Uint8Array(value.buffer);
      if (done) return received;
      deliver(value, received);
      received += value.byteLength;
      if (received > expectedBytes) {
        await reader.cancel();
        return received;
      }
    }
  } finally {
    scratch.give(buffer);
  }
}
