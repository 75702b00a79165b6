// SPDX-License-Identifier: MIT
// The storage backend contract and the small helpers built on it. Backends move
// bytes at positions of one file-like object; they know nothing of image formats.

import { BackendError, exactNumber } from '../base/errors.js';

/** What a backend can do; the image and the conformance suite choose behaviour from this. */
export interface BackendCapabilities {
  /** pwritev/truncate/discard work; when false they reject with BACKEND_READ_ONLY. */
  readonly writable: boolean;
  /** truncate() works (it may exist and reject with BACKEND_READ_ONLY when this is false). */
  readonly truncate: boolean;
  /** discard() works (it stays advisory: contents of a discarded range are undefined). */
  readonly discard: boolean;
  /** flush() makes completed writes survive a power cut (false: flush is a no-op barrier). */
  readonly durableFlush: boolean;
}

/**
 * Sizes of one platform call. Merged writes stay within them; larger calls still work (the
 * backend splits them), but not as one platform call.
 */
export interface BackendLimits {
  /** Most buffers one platform call takes. */
  readonly maxIov: number;
  /** Most bytes one platform call moves. */
  readonly maxTransfer: number;
}

/**
 * Positional, vectored, promise-based storage.
 *
 * Contract (tested by test/backend-suite.ts for every backend):
 * 1. `preadv(position, buffers)` fills `buffers` in order from the contiguous file range starting
 *    at `position`; `pwritev` gathers the same way. There is no cursor.
 * 2. No short transfers: a call resolves only when every byte moved. Reads past end-of-file
 *    give zeros; writes past it grow the file, and bytes between the old end and the write read
 *    as zeros (qcow2 relies on this: fresh clusters appended past the end need no zero-fill).
 * 3. Any number of concurrent calls on non-overlapping ranges. Ordering overlapping calls is the
 *    caller's job.
 * 4. `flush()` is a durability barrier for every write that completed before it was called.
 * 5. A read-only backend rejects pwritev/truncate/discard with BACKEND_READ_ONLY.
 * 6. A backend keeps no reference to a buffer after its promise settles.
 * 7. Failures reject with a BackendError whose `cause` is the platform error.
 * 8. `close()` is idempotent and lets calls already running finish; any call after it rejects
 *    with BACKEND_CLOSED (before any other check).
 */
export interface Backend {
  /** A short name of the implementation, e.g. "node-file", "memory". */
  readonly kind: string;
  /** What the backend can do (write, truncate, discard, durable flush); fixed for its lifetime. */
  readonly capabilities: BackendCapabilities;
  /** The largest platform call (buffers and bytes); merged writes are cut to fit. */
  readonly limits: BackendLimits;
  /** Current size of the file in bytes. */
  getSize(): Promise<number>;
  /** Reads the range [position, position + total length) into `buffers`, in order. */
  preadv(position: number, buffers: readonly Uint8Array[]): Promise<void>;
  /** Writes `buffers`, in order, to the range starting at `position`; grows the file as needed. */
  pwritev(position: number, buffers: readonly Uint8Array[]): Promise<void>;
  /** Durability barrier: every write completed before the call is durable when it resolves. */
  flush(): Promise<void>;
  /** Sets the file size (present when capabilities.truncate). */
  truncate?(size: number): Promise<void>;
  /** Advisory: the range's contents become undefined (present when capabilities.discard). */
  discard?(position: number, length: number): Promise<void>;
  /** Releases the underlying object; idempotent. */
  close(): Promise<void>;
}

/**
 * An already settled promise a backend may return from a call that finished before returning
 * (e.g. a synchronous syscall that moved every byte). Callers may compare a call's result with it
 * to skip the bookkeeping of work in flight; any other promise means nothing either way.
 */
export const COMPLETED: Promise<void> = Promise.resolve();

/** Reads one buffer at `position` (a convenience over preadv). */
export function pread(backend: Backend, position: number, target: Uint8Array): Promise<void> {
  return backend.preadv(position, [target]);
}

/** Writes one buffer at `position` (a convenience over pwritev). */
export function pwrite(backend: Backend, position: number, data: Uint8Array): Promise<void> {
  return backend.pwritev(position, [data]);
}

/** Total byte length of a buffer list. */
export function totalLength(buffers: readonly Uint8Array[]): number {
  let total = 0;
  for (const b of buffers) total += b.byteLength;
  return total;
}

/**
 * Validates a (position, length) pair given to a backend: both must be non-negative integers
 * whose sum stays exact in a double (<= 2^53). Throws a BackendError with code INVALID_ARGUMENT.
 */
export function checkRange(position: number, length: number): void {
  if (!Number.isSafeInteger(position) || position < 0 || !Number.isSafeInteger(length) || length < 0 ||
      position + length > Number.MAX_SAFE_INTEGER) {
    throw new BackendError('INVALID_ARGUMENT', `invalid range: position ${exactNumber(position)}, length ${exactNumber(length)} (both must be integers, their sum at most 2^53)`);
  }
}

/**
 * Wraps a file platform error (kept as the cause) as BACKEND_IO_ERROR: what was being done, the
 * path, the errno code and the platform's description, each once. Node and Deno put the code
 * and the call and path into their own messages ("ENOENT: no such file or directory, open
 * '/x'"); those repeats are dropped. A BackendError passes through unchanged.
 */
export function fileIoError(what: string, path: string, err: unknown): BackendError {
  if (err instanceof BackendError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  let detail = err instanceof Error ? err.message : String(err);
  if (typeof code === 'string' && detail.startsWith(`${code}: `)) detail = detail.slice(code.length + 2);
  const quotedPath = /[,:] [a-z_]+ '([^']*)'$/.exec(detail);
  const errPath = (err as { path?: unknown } | null)?.path;
  if (quotedPath && (quotedPath[1] === path || quotedPath[1] === errPath)) detail = detail.slice(0, quotedPath.index);
  const prefix = typeof code === 'string' && code !== detail ? `${code}: ` : '';
  return new BackendError('BACKEND_IO_ERROR', `${what} ${path}: ${prefix}${detail}`, { cause: err });
}

/**
 * The life cycle file backends share (contract clauses 7 and 8): run() runs an operation unless
 * the backend is closed (then BACKEND_CLOSED), wrapping a platform failure with `wrapError`;
 * close() is idempotent, refuses new operations at once, lets running ones settle, then calls
 * `release` once.
 */
export class OperationGate {
  private closing: Promise<void> | undefined;
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly path: string, private readonly wrapError: (what: string, path: string, err: unknown) => Error) {}

  /** True once close() was called: run() and runSync() refuse new operations. */
  get closed(): boolean {
    return this.closing !== undefined;
  }

  /** Runs `op` for the operation named `what`. */
  run<T>(what: string, op: () => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(new BackendError('BACKEND_CLOSED', `${what} ${this.path}: backend is closed`));
    const promise = (async () => {
      try {
        return await op();
      } catch (err) {
        throw this.wrapError(what, this.path, err);
      }
    })();
    this.inFlight.add(promise);
    const forget = () => { this.inFlight.delete(promise); };
    promise.then(forget, forget);
    return promise;
  }

  /**
   * Runs the synchronous `op` for the operation named `what` at once: COMPLETED when it returned,
   * a rejection with its failure wrapped as run() wraps it when it threw. Nothing stays in flight,
   * so close() need not wait.
   */
  runSync(what: string, op: () => void): Promise<void> {
    if (this.closing) return Promise.reject(new BackendError('BACKEND_CLOSED', `${what} ${this.path}: backend is closed`));
    try {
      op();
      return COMPLETED;
    } catch (err) {
      return Promise.reject(this.wrapError(what, this.path, err));
    }
  }

  /** Closes once: new operations are refused, running ones settle, then `release` runs. */
  close(release: () => Promise<void>): Promise<void> {
    this.closing ??= (async () => {
      await Promise.allSettled([...this.inFlight]);
      await release();
    })();
    return this.closing;
  }
}
