// SPDX-License-Identifier: MIT
// A write-only backend over one FileSystemWritableFileStream: the target of an export into a file
// the user picked (showSaveFilePicker) or an OPFS file, written in one stream and committed once.

import { checkRange, totalLength, type Backend, type BackendCapabilities, type BackendLimits } from './backend.js';
import { BackendError } from '../base/errors.js';

/** A Backend that writes into a writable file stream; `abort` drops the writes instead of committing them. */
export interface WritableStreamBackend extends Backend {
  /**
   * Aborts the stream: the file keeps what it held before the stream was opened (in Chromium and
   * Firefox the writes went to a swap file). Use it when the export failed; close() commits.
   */
  abort(reason?: unknown): Promise<void>;
}

const CAPABILITIES: BackendCapabilities = Object.freeze({ writable: true, truncate: true, discard: false, durableFlush: false });
const LIMITS: BackendLimits = Object.freeze({ maxIov: 1024, maxTransfer: 64 * 1024 * 1024 });

/**
 * Wraps `stream` (from `FileSystemFileHandle.createWritable()`, without keepExistingData: the file
 * starts empty) as a write-only Backend (kind "writable-stream"), for writers that only write and
 * truncate, such as convertToQcow2. `name` names the file in messages.
 *
 * pwritev and truncate run one at a time, in call order, as positioned stream writes; each resolves
 * once the stream has taken its bytes (the caller's buffers are free again). The browser keeps the
 * bytes in a swap file, not in memory, and the file holds them only once close() resolves: close()
 * commits, abort() discards. getSize() is the end of the furthest write or the last truncate.
 * flush() waits for the writes before it (durableFlush false: nothing is committed until close).
 * preadv rejects with BACKEND_NOT_SUPPORTED. A failed stream call rejects with BACKEND_IO_ERROR
 * (e.g. a QuotaExceededError as cause); every later call rejects with the same error, and close()
 * then aborts the stream instead of committing it.
 */
export function createWritableStreamBackend(stream: FileSystemWritableFileStream, name: string): WritableStreamBackend {
  let sizeBytes = 0;
  let closed = false;
  let failure: BackendError | undefined;
  /** Settles after the last queued stream call. */
  let queue: Promise<void> = Promise.resolve();

  const wrap = (what: string, err: unknown): BackendError => {
    const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    return new BackendError('BACKEND_IO_ERROR', `${what} ${name}: ${detail}`, { cause: err });
  };

  const run = (what: string, op: () => Promise<void>): Promise<void> => {
    if (closed) return Promise.reject(new BackendError('BACKEND_CLOSED', `${what} ${name}: backend is closed`));
    const call = queue.then(async () => {
      if (failure !== undefined) throw failure;
      try {
        await op();
      } catch (err) {
        failure = wrap(what, err);
        throw failure;
      }
    });
    queue = call.catch(() => undefined);
    return call;
  };

  /** Ends the stream after every queued call: commits (close) unless a call failed, else aborts. */
  const end = (commit: boolean, reason?: unknown): Promise<void> => {
    if (closed) return queue;
    closed = true;
    const ending = queue.then(async () => {
      if (commit && failure === undefined) {
        try {
          await stream.close();
        } catch (err) {
          failure = wrap('close', err);
        }
      } else {
        await stream.abort(reason ?? failure).catch(() => undefined);
      }
      if (commit && failure !== undefined) throw failure;
    });
    queue = ending.catch(() => undefined);
    return ending;
  };

  return {
    kind: 'writable-stream',
    capabilities: CAPABILITIES,
    limits: LIMITS,

    getSize: async () => sizeBytes,

    preadv: async () => {
      throw new BackendError('BACKEND_NOT_SUPPORTED', `preadv ${name}: the backend only writes (a file being saved)`);
    },

    pwritev(position, buffers) {
      const length = totalLength(buffers);
      try {
        checkRange(position, length);
      } catch (err) {
        return Promise.reject(err);
      }
      return run('pwritev', async () => {
        let at = position;
        for (const data of buffers) {
          if (data.byteLength === 0) continue;
          // WebKit writes a view's whole ArrayBuffer: hand it a view that is its buffer (a copy
          // where it is not). Not a Blob: its bytes lie outside the JS heap, so the garbage
          // collector would not hurry to free a large export's worth of them.
          const whole = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data : data.slice();
          await stream.write({ type: 'write', position: at, data: whole as Uint8Array<ArrayBuffer> });
          at += data.byteLength;
        }
        sizeBytes = Math.max(sizeBytes, position + length);
      });
    },

    truncate(size) {
      try {
        checkRange(size, 0);
      } catch (err) {
        return Promise.reject(err);
      }
      return run('truncate', async () => {
        await stream.truncate(size);
        sizeBytes = size;
      });
    },

    flush: () => run('flush', async () => {}),

    close: () => end(true),

    abort: (reason?: unknown) => end(false, reason),
  };
}
