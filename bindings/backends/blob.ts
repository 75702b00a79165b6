// SPDX-License-Identifier: MIT
// The read-only Blob backend (a `File` from an <input>, a drag and drop, or any Blob), and the
// Blob range reader the OPFS main-thread backend shares with it.

import { checkRange, totalLength, type Backend, type BackendCapabilities, type BackendLimits } from './backend.js';
import { BackendError } from '../base/errors.js';

/** Most bytes one Blob slice read moves; longer reads are cut into slices of this size. */
const BLOB_READ_BYTES = 16 * 1024 * 1024;

/** The limits of Blob-backed reads: many buffers per call, 16 MiB per slice. */
export const BLOB_LIMITS: BackendLimits = Object.freeze({ maxIov: 1024, maxTransfer: BLOB_READ_BYTES });

/**
 * Fills `buffers`, in order, from `blob` starting at byte `position`; bytes past the end of the
 * blob read as zeros. Reads at most BLOB_READ_BYTES per `slice().arrayBuffer()` and scatters the
 * result, so a call with many small buffers costs one platform read, not one per buffer.
 * Rejects with whatever the platform read rejects with (the caller wraps it).
 */
export async function readBlobInto(blob: Blob, position: number, buffers: readonly Uint8Array[]): Promise<void> {
  const length = totalLength(buffers);
  const dataEnd = Math.min(position + length, blob.size);
  let index = 0; // the buffer being filled
  let offset = 0; // bytes of buffers[index] already filled
  const scatter = (source: Uint8Array): void => {
    let from = 0;
    while (from < source.byteLength) {
      const target = buffers[index]!;
      const take = Math.min(target.byteLength - offset, source.byteLength - from);
      target.set(source.subarray(from, from + take), offset);
      from += take;
      offset += take;
      if (offset === target.byteLength) {
        index++;
        offset = 0;
      }
    }
  };
  for (let at = position; at < dataEnd; at += BLOB_READ_BYTES) {
    const end = Math.min(dataEnd, at + BLOB_READ_BYTES);
    const bytes = new Uint8Array(await blob.slice(at, end).arrayBuffer());
    if (bytes.byteLength !== end - at) {
      throw new Error(`a Blob slice of ${end - at} bytes gave ${bytes.byteLength}`);
    }
    scatter(bytes);
  }
  // Past the end of the blob: zeros.
  while (index < buffers.length) {
    buffers[index]!.fill(0, offset);
    index++;
    offset = 0;
  }
}

/**
 * Creates a read-only backend over `blob` (kind "blob"), e.g. a `File` the user picked; pair it
 * with a writable overlay image (a qcow2 whose backing file it is) to run a disk from it.
 *
 * Capabilities: { writable: false, truncate: false, discard: false, durableFlush: false };
 * limits: { maxIov: 1024, maxTransfer: 16 MiB }. Reads are `blob.slice(...).arrayBuffer()`, any
 * number at once; reads past the end give zeros. pwritev rejects with BACKEND_READ_ONLY, flush()
 * resolves at once. A platform read failure (e.g. the user's file changed on disk, which makes
 * Chromium fail reads of the old File with NotReadableError) rejects with BACKEND_IO_ERROR, the
 * platform error as `cause`. close() lets running reads finish; later calls reject with
 * BACKEND_CLOSED.
 */
export function createBlobBackend(blob: Blob): Backend {
  let closed = false;
  const capabilities: BackendCapabilities = Object.freeze({ writable: false, truncate: false, discard: false, durableFlush: false });

  const ensureOpen = (what: string): void => {
    if (closed) throw new BackendError('BACKEND_CLOSED', `blob backend: ${what} after close()`);
  };

  return {
    kind: 'blob',
    capabilities,
    limits: BLOB_LIMITS,

    async getSize(): Promise<number> {
      ensureOpen('getSize');
      return blob.size;
    },

    async preadv(position: number, buffers: readonly Uint8Array[]): Promise<void> {
      ensureOpen('preadv');
      checkRange(position, totalLength(buffers));
      try {
        await readBlobInto(blob, position, buffers.slice());
      } catch (err) {
        const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
        throw new BackendError('BACKEND_IO_ERROR', `blob backend: preadv at ${position}: ${detail}`, { cause: err });
      }
    },

    async pwritev(): Promise<void> {
      ensureOpen('pwritev');
      throw new BackendError('BACKEND_READ_ONLY', 'blob backend: pwritev on a read-only backend');
    },

    async flush(): Promise<void> {
      ensureOpen('flush');
    },

    async close(): Promise<void> {
      closed = true;
    },
  };
}
