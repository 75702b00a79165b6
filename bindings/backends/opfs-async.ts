// SPDX-License-Identifier: MIT
// The OPFS backend for the main thread (and any context without sync access handles): reads
// through File snapshots, writes through writable streams, writes serialized against all calls.

import { checkRange, totalLength, type Backend, type BackendCapabilities } from './backend.js';
import { BackendError } from '../base/errors.js';
import { BLOB_LIMITS, readBlobInto } from './blob.js';

/** How long after the last write an open writable stream is committed without a flush or read. */
const IDLE_COMMIT_MS = 100;

/**
 * Wraps an OPFS file handle as a Backend (kind "opfs-async"). `path` only names the file in
 * messages.
 *
 * Reads use `getFile()` snapshots and run concurrently with each other. Writes (pwritev,
 * truncate) run one at a time, each after every call made before it, into one writable stream
 * (`createWritable({ keepExistingData: true })`) that stays open across consecutive writes and is
 * committed (`close()`, which the browser applies atomically) by the next read, getSize, flush or
 * close, or 100 ms after the last write. So the file always holds a prefix of the writes, in
 * order, and a read sees every write made before it. The cost: Chromium implements
 * keepExistingData by copying the whole file into a swap file, once per stream, i.e. once per
 * run of writes between reads; with reads interleaved every write pays for it. Fine for small
 * images and write bursts; for emulators use the worker backend (sync access handles), where a
 * write costs what it writes.
 *
 * flush() commits and is an ordering barrier (durableFlush false: the browser promises nothing
 * about power cuts). A failed commit loses the writes it held: it rejects the read that triggered
 * it, and every later flush and close reject with it too (reopen the file to go on).
 */
export function asyncOpfsBackend(file: FileSystemFileHandle, path: string, writable: boolean): Backend {
  let closed = false;
  /** Settles after the last exclusive call (a write or a commit) settles. */
  let lastExclusive: Promise<unknown> = Promise.resolve();
  /** Shared calls (reads) started since the last exclusive call. */
  let shared = new Set<Promise<unknown>>();
  /** The File snapshot reads use; dropped when a stream opens. */
  let snapshot: Promise<File> | undefined;
  /** The writable stream holding writes not yet committed. */
  let stream: FileSystemWritableFileStream | undefined;
  /** Writes queued so far, and how many of them the commits queued so far cover. */
  let writesQueued = 0;
  let writesCoveredByCommit = 0;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  /** The first failed commit's error; every later commit reports it. */
  let commitFailure: unknown;

  const capabilities: BackendCapabilities = Object.freeze({ writable, truncate: writable, discard: false, durableFlush: false });

  const wrap = (what: string, err: unknown): BackendError => {
    if (err instanceof BackendError) return err;
    const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    return new BackendError('BACKEND_IO_ERROR', `${what} ${path}: ${detail}`, { cause: err });
  };

  const checkOpen = (what: string): void => {
    if (closed) throw new BackendError('BACKEND_CLOSED', `${what} ${path}: backend is closed`);
  };

  /** Runs an operation that may share the file with others like it (a read of committed data). */
  const runShared = <T>(what: string, op: () => Promise<T>): Promise<T> => {
    const promise = lastExclusive.then(op).catch((err: unknown) => {
      throw wrap(what, err);
    });
    shared.add(promise);
    const forget = (): void => {
      shared.delete(promise);
    };
    promise.then(forget, forget);
    return promise;
  };

  /** Runs an operation after every call before it, alone. */
  const runExclusive = <T>(what: string, op: () => Promise<T>): Promise<T> => {
    const before = Promise.allSettled([lastExclusive, ...shared]);
    const promise = before.then(op).catch((err: unknown) => {
      throw wrap(what, err);
    });
    lastExclusive = promise.then(() => undefined, () => undefined);
    shared = new Set();
    return promise;
  };

  /** Commits the open stream, if any (inside an exclusive operation). */
  const commitNow = async (): Promise<void> => {
    if (idleTimer !== undefined) clearTimeout(idleTimer);
    idleTimer = undefined;
    const open = stream;
    stream = undefined;
    if (open !== undefined) {
      try {
        await open.close();
      } catch (err) {
        commitFailure ??= err;
      }
    }
    if (commitFailure !== undefined) throw commitFailure;
  };

  /** Queues a commit of every write queued so far. */
  const queueCommit = (what: string): Promise<void> => {
    writesCoveredByCommit = writesQueued;
    return runExclusive(what, commitNow);
  };

  /** Runs a read of committed data: after a commit when writes are pending, else alongside reads. */
  const runRead = <T>(what: string, op: () => Promise<T>): Promise<T> => {
    try {
      checkOpen(what);
    } catch (err) {
      return Promise.reject(err);
    }
    if (writesQueued === writesCoveredByCommit) return runShared(what, op);
    writesCoveredByCommit = writesQueued;
    return runExclusive(what, async () => {
      await commitNow();
      return op();
    });
  };

  /** Runs a write into the open stream (opening one if needed). */
  const runWrite = (what: string, op: (open: FileSystemWritableFileStream) => Promise<void>): Promise<void> => {
    try {
      checkOpen(what);
      if (!writable) throw new BackendError('BACKEND_READ_ONLY', `${what} ${path}: backend is read-only`);
    } catch (err) {
      return Promise.reject(err);
    }
    writesQueued++;
    return runExclusive(what, async () => {
      if (stream === undefined) {
        snapshot = undefined;
        stream = await file.createWritable({ keepExistingData: true });
      }
      await op(stream);
      if (idleTimer !== undefined) clearTimeout(idleTimer);
      idleTimer = setTimeout(() => {
        idleTimer = undefined;
        if (closed || stream === undefined) return;
        queueCommit('commit').catch(() => undefined); // kept in commitFailure
      }, IDLE_COMMIT_MS);
    });
  };

  const currentFile = (): Promise<File> => (snapshot ??= file.getFile());

  return {
    kind: 'opfs-async',
    capabilities,
    limits: BLOB_LIMITS,

    getSize: () => runRead('getSize', async () => (await currentFile()).size),

    preadv(position, buffers) {
      return runRead('preadv', async () => {
        checkRange(position, totalLength(buffers));
        await readBlobInto(await currentFile(), position, buffers.slice());
      });
    },

    pwritev(position, buffers) {
      return runWrite('pwritev', async (open) => {
        const length = totalLength(buffers);
        checkRange(position, length);
        if (length === 0) return;
        // The Blob copies the bytes now, so the caller's buffers are free once this resolves.
        await open.write({ type: 'write', position, data: new Blob(buffers as Uint8Array<ArrayBuffer>[]) });
      });
    },

    flush() {
      try {
        checkOpen('flush');
      } catch (err) {
        return Promise.reject(err);
      }
      return queueCommit('flush');
    },

    truncate(size) {
      return runWrite('truncate', async (open) => {
        checkRange(size, 0);
        await open.truncate(size);
      });
    },

    async close(): Promise<void> {
      if (closed) return lastExclusive.then(() => undefined);
      const committing = queueCommit('close');
      closed = true;
      await Promise.allSettled([...shared]);
      await committing;
    },
  };
}
