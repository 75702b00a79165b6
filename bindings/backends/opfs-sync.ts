// SPDX-License-Identifier: MIT
// The OPFS backend for dedicated workers: a FileSystemSyncAccessHandle driven with positional
// reads and writes, vectors gathered into one platform call.

import { checkRange, totalLength, type Backend, type BackendCapabilities, type BackendLimits } from './backend.js';
import { BackendError } from '../base/errors.js';
import { gatherInto, scatterFrom } from './vector-copy.js';
import { splitVector } from '../base/iovec.js';

/**
 * The part of FileSystemSyncAccessHandle this backend uses (TypeScript's DOM library does not
 * declare it; it lives in the worker library). Reads and writes are positional (`at`).
 */
export interface SyncAccessHandle {
  read(buffer: Uint8Array, options: { at: number }): number;
  write(buffer: Uint8Array, options: { at: number }): number;
  truncate(size: number): void;
  getSize(): number;
  flush(): void;
  close(): void;
}

/**
 * Most bytes one platform read or write moves. A vector of several buffers is gathered into (or
 * scattered from) one staging buffer of at most this size, so a merged write of 32 x 4 KiB is one
 * 128 KiB platform write instead of 32 small ones (small OPFS writes are what costs).
 */
const STAGING_BYTES = 4 * 1024 * 1024;

const LIMITS: BackendLimits = Object.freeze({ maxIov: 1024, maxTransfer: STAGING_BYTES });

/**
 * Wraps an open sync access handle as a Backend (kind "opfs-sync"). `path` only names the file in
 * messages. The handle must have been opened in a mode matching `writable`; close() flushes (when
 * writable) and closes it, which releases the browser's lock on the file.
 *
 * Every call runs synchronously inside the call and reports through its promise, so calls never
 * interleave and close() has nothing to wait for.
 */
export function syncAccessBackend(access: SyncAccessHandle, path: string, writable: boolean): Backend {
  let closed = false;
  let staging = new Uint8Array(0);
  const capabilities: BackendCapabilities = Object.freeze({ writable, truncate: writable, discard: false, durableFlush: true });

  const stagingOf = (length: number): Uint8Array => {
    if (staging.byteLength < length) staging = new Uint8Array(Math.min(STAGING_BYTES, Math.max(length, 2 * staging.byteLength)));
    return staging.subarray(0, length);
  };

  /** Reads `target` at `at`; a read of 0 bytes is end-of-file and zero-fills the rest. */
  const readFully = (target: Uint8Array, at: number): void => {
    let done = 0;
    while (done < target.byteLength) {
      const moved = access.read(done === 0 ? target : target.subarray(done), { at: at + done });
      if (moved <= 0) {
        target.fill(0, done);
        return;
      }
      done += moved;
    }
  };

  const writeFully = (source: Uint8Array, at: number): void => {
    let done = 0;
    while (done < source.byteLength) {
      const moved = access.write(done === 0 ? source : source.subarray(done), { at: at + done });
      if (!(moved > 0)) throw new Error(`the write at ${at + done} moved ${moved} of ${source.byteLength - done} bytes`);
      done += moved;
    }
  };

  /** Runs one operation: rejects after close, wraps platform errors with what, where and the path. */
  const run = async <T>(what: string, op: () => T): Promise<T> => {
    if (closed) throw new BackendError('BACKEND_CLOSED', `${what} ${path}: backend is closed`);
    try {
      return op();
    } catch (err) {
      if (err instanceof BackendError) throw err;
      const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      throw new BackendError('BACKEND_IO_ERROR', `${what} ${path}: ${detail}`, { cause: err });
    }
  };

  const readOnly = (what: string): BackendError => new BackendError('BACKEND_READ_ONLY', `${what} ${path}: backend is read-only`);

  return {
    kind: 'opfs-sync',
    capabilities,
    limits: LIMITS,

    getSize: () => run('getSize', () => access.getSize()),

    preadv: (position, buffers) => run('preadv', () => {
      checkRange(position, totalLength(buffers));
      for (const [delta, piece] of splitVector(buffers.slice(), LIMITS.maxIov, LIMITS.maxTransfer)) {
        if (piece.length === 1) {
          readFully(piece[0]!, position + delta);
          continue;
        }
        const gathered = stagingOf(totalLength(piece));
        readFully(gathered, position + delta);
        scatterFrom(gathered, piece);
      }
    }),

    pwritev: (position, buffers) => run('pwritev', () => {
      if (!writable) throw readOnly('pwritev');
      checkRange(position, totalLength(buffers));
      for (const [delta, piece] of splitVector(buffers.slice(), LIMITS.maxIov, LIMITS.maxTransfer)) {
        if (piece.length === 1) {
          writeFully(piece[0]!, position + delta);
          continue;
        }
        const gathered = stagingOf(totalLength(piece));
        gatherInto(piece, gathered);
        writeFully(gathered, position + delta);
      }
    }),

    flush: () => run('flush', () => {
      if (writable) access.flush();
    }),

    truncate: (size) => run('truncate', () => {
      if (!writable) throw readOnly('truncate');
      checkRange(size, 0);
      access.truncate(size);
    }),

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      try {
        try {
          if (writable) access.flush();
        } finally {
          access.close();
        }
      } catch (err) {
        const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
        throw new BackendError('BACKEND_IO_ERROR', `close ${path}: ${detail}`, { cause: err });
      }
    },
  };
}
