// SPDX-License-Identifier: MIT
// The in-memory backend: a sparse, paged byte store behind the Backend contract. Only pages that
// were written hold memory, so a logical size of 2^52 bytes costs nothing until it is used.

import { checkRange, totalLength, type Backend, type BackendCapabilities, type BackendLimits } from './backend.js';
import { BackendError } from '../base/errors.js';

/** Bytes per page. Pages are allocated on first write and never on read. */
const PAGE_BYTES = 65536;

/** Options of createMemoryBackend. */
export interface MemoryBackendOptions {
  /**
   * False gives a read-only backend over `initial` (pwritev/truncate/discard reject with
   * BACKEND_READ_ONLY). Default true.
   */
  writable?: boolean;
}

/**
 * Creates an in-memory backend.
 *
 * `initial` is either the initial size in bytes (all zeros; no memory is allocated for it) or the
 * initial contents, which are copied (the caller may reuse its array afterwards). Omitted: empty.
 *
 * Capabilities: writable (unless `options.writable` is false), truncate, discard and durableFlush.
 * "Durable" here means the bytes live as long as this object does; flush() is a no-op barrier
 * because every completed write is already as durable as it will ever be. discard() zero-fills the
 * range (dropping whole pages), and truncate() both shrinks (bytes beyond the new size are
 * dropped, so growing again reads zeros) and grows. close() releases every page.
 *
 * All operations complete synchronously within the call and report through the returned promise;
 * invalid ranges reject with INVALID_ARGUMENT and calls after close() with BACKEND_CLOSED.
 */
export function createMemoryBackend(initial?: number | Uint8Array, options?: MemoryBackendOptions): Backend {
  const writable = options?.writable ?? true;
  // Invariant: every byte at or beyond `size` is zero (or its page is absent). Reads clamp to
  // `size` anyway; truncate() keeps the invariant so a later grow never resurrects old bytes.
  const pages = new Map<number, Uint8Array>();
  let size = 0;
  let closed = false;

  const writeAt = (position: number, source: Uint8Array): void => {
    const length = source.byteLength;
    let done = 0;
    while (done < length) {
      const at = position + done;
      const index = Math.floor(at / PAGE_BYTES);
      const offset = at - index * PAGE_BYTES;
      const take = Math.min(PAGE_BYTES - offset, length - done);
      let page = pages.get(index);
      if (page === undefined) {
        page = new Uint8Array(PAGE_BYTES);
        pages.set(index, page);
      }
      page.set(take === length ? source : source.subarray(done, done + take), offset);
      done += take;
    }
  };

  const readAt = (position: number, target: Uint8Array): void => {
    const length = target.byteLength;
    let done = 0;
    while (done < length) {
      const at = position + done;
      if (at >= size) {
        target.fill(0, done);
        return;
      }
      const index = Math.floor(at / PAGE_BYTES);
      const offset = at - index * PAGE_BYTES;
      const take = Math.min(PAGE_BYTES - offset, length - done, size - at);
      const page = pages.get(index);
      if (page === undefined) target.fill(0, done, done + take);
      else target.set(page.subarray(offset, offset + take), done);
      done += take;
    }
  };

  /** Zeroes [start, end): drops the pages it covers whole, zero-fills the partial ones. */
  const zeroRange = (start: number, end: number): void => {
    if (start >= end || pages.size === 0) return;
    const first = Math.floor(start / PAGE_BYTES);
    const last = Math.floor((end - 1) / PAGE_BYTES);
    const visit = (index: number, page: Uint8Array): void => {
      const pageStart = index * PAGE_BYTES;
      const from = Math.max(start, pageStart) - pageStart;
      const to = Math.min(end, pageStart + PAGE_BYTES) - pageStart;
      if (from === 0 && to === PAGE_BYTES) pages.delete(index);
      else page.fill(0, from, to);
    };
    if (last - first < pages.size) {
      for (let index = first; index <= last; index++) {
        const page = pages.get(index);
        if (page !== undefined) visit(index, page);
      }
    } else {
      // A huge range over few pages: walk the pages instead (deleting while iterating a Map is safe).
      for (const [index, page] of pages) {
        if (index >= first && index <= last) visit(index, page);
      }
    }
  };

  const ensureOpen = (): void => {
    if (closed) throw new BackendError('BACKEND_CLOSED', 'memory backend: used after close()');
  };
  const ensureWritable = (what: string): void => {
    if (!writable) throw new BackendError('BACKEND_READ_ONLY', `memory backend: ${what} on a read-only backend`);
  };

  if (typeof initial === 'number') {
    checkRange(initial, 0);
    size = initial;
  } else if (initial !== undefined) {
    writeAt(0, initial);
    size = initial.byteLength;
  }

  const capabilities: BackendCapabilities = Object.freeze({
    writable,
    truncate: writable,
    discard: writable,
    durableFlush: true,
  });
  const limits: BackendLimits = Object.freeze({ maxIov: 1024, maxTransfer: 2 ** 31 - 4096 });

  const backend: Backend = {
    kind: 'memory',
    capabilities,
    limits,

    async getSize(): Promise<number> {
      ensureOpen();
      return size;
    },

    async preadv(position: number, buffers: readonly Uint8Array[]): Promise<void> {
      ensureOpen();
      checkRange(position, totalLength(buffers));
      let at = position;
      for (const target of buffers) {
        if (target.byteLength === 0) continue;
        readAt(at, target);
        at += target.byteLength;
      }
    },

    async pwritev(position: number, buffers: readonly Uint8Array[]): Promise<void> {
      ensureOpen();
      ensureWritable('pwritev');
      const length = totalLength(buffers);
      checkRange(position, length);
      if (length === 0) return; // a zero-length write never grows the file
      let at = position;
      for (const source of buffers) {
        if (source.byteLength === 0) continue;
        writeAt(at, source);
        at += source.byteLength;
      }
      if (at > size) size = at;
    },

    async flush(): Promise<void> {
      ensureOpen();
    },

    async truncate(newSize: number): Promise<void> {
      ensureOpen();
      ensureWritable('truncate');
      checkRange(newSize, 0);
      if (newSize < size) {
        // Everything at or beyond `size` is already zero, so zero up to the end of its page: this
        // drops the pages past the new end instead of zero-filling them.
        zeroRange(newSize, Math.ceil(size / PAGE_BYTES) * PAGE_BYTES);
      }
      size = newSize;
    },

    async discard(position: number, length: number): Promise<void> {
      ensureOpen();
      ensureWritable('discard');
      checkRange(position, length);
      zeroRange(position, Math.min(position + length, size));
    },

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      pages.clear();
    },
  };
  return backend;
}
