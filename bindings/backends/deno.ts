// SPDX-License-Identifier: MIT
// The Deno file backend. Deno.FsFile has a cursor and no positional or vectored I/O, so each call
// leases one of a few handles of the same file for its whole seek-then-transfer sequence: calls
// never share a cursor, and up to `handles` of them run in parallel. The transfers themselves
// (seek, whole reads and writes, staging of short buffers) are in deno-file-io.ts.

import { OperationGate, checkRange, fileIoError, totalLength, type Backend, type BackendCapabilities, type BackendLimits } from './backend.js';
import { BackendError, ImageError } from '../base/errors.js';
import { MAX_TRANSFER, readRuns, STAGING_BYTES, transferSync, writeRuns, type DenoFileLike, type Slot } from './deno-file-io.js';

export type { DenoFileLike } from './deno-file-io.js';

/** The part of the Deno namespace this backend uses. */
interface DenoApi {
  open(path: string, options: { read: boolean; write: boolean; create: boolean }): Promise<DenoFileLike>;
}

/** Options of openDenoBackend. */
export interface DenoBackendOptions {
  /** Open for reading and writing. Default false: read-only, and every write rejects BACKEND_READ_ONLY. */
  writable?: boolean;
  /**
   * Create the file if it is missing (mode 0o666 less the umask). An existing file is never
   * truncated. Only valid together with `writable`; otherwise INVALID_ARGUMENT.
   */
  create?: boolean;
  /**
   * How many handles of the file to open, 1 to 64 (default 4): at most this many reads and
   * writes run at once, the rest wait their turn in call order. 1 serialises every transfer.
   */
  handles?: number;
  /**
   * An advisory lock on the file, held until close: 'exclusive' (one holder) or 'shared' (many
   * shared holders, no exclusive one). Taken without waiting: when another open file, in this
   * process or another, holds a conflicting lock, the open rejects with IMAGE_LOCKED. Default
   * 'none'. Only processes that lock too are kept out (qemu locks differently and ignores it).
   */
  lock?: 'exclusive' | 'shared' | 'none';
  /**
   * How data moves. `'auto'` (the default): on a regular file, reads and writes of at most
   * `syncMaxBytes` use Deno's synchronous seek and read/write calls (a few microseconds each when
   * the page cache has the data, blocking the event loop for that long, or for one device access
   * on a cache miss; Deno's asynchronous file calls cost ~40-200 µs each here), larger ones go
   * through Deno's asynchronous calls (never blocking). Deno cannot tell a network file system
   * apart: on one, pass `false`. `true`: every transfer is synchronous (for a disk running in a
   * worker), but for vectored ones over 1 MiB. `false`: every transfer is asynchronous. stat, flush, truncate and close are always
   * asynchronous.
   */
  sync?: boolean | 'auto';
  /** With `sync: 'auto'`: the largest transfer moved synchronously, in bytes. Default 131072 (128 KiB). */
  syncMaxBytes?: number;
}

/** Default of DenoBackendOptions.syncMaxBytes. */
export const DEFAULT_SYNC_MAX_BYTES = 128 * 1024;

/** The default number of handles: enough to overlap I/O, few enough to keep descriptors cheap. */
const DEFAULT_HANDLES = 4;
const MAX_HANDLES = 64;
/** No platform iovec limit applies (calls are staged); this many buffers keep one call's staging cheap. */
const MAX_IOV = 1024;

/**
 * A Backend (kind "deno-file") over already opened handles of one file: each read or write leases
 * one handle for its seek and transfers, so no two calls ever move one cursor; calls beyond the
 * number of handles wait in call order. getSize, flush and truncate use the first handle and no
 * lease (they do not touch a cursor). close() waits for calls already started (including those
 * waiting for a handle), then closes every handle. Used by openDenoBackend; exported for tests,
 * which drive it with fake files. `files` must be non-empty and refer to the file at `path`.
 * Transfers of at most `syncLimitBytes` (default -1: none) run synchronously on an idle handle
 * when the files have the synchronous calls; with every handle busy they wait their turn.
 */
export function denoFileBackend(path: string, files: readonly DenoFileLike[], writable: boolean, syncLimitBytes = -1): Backend {
  if (files.length === 0) throw new BackendError('INVALID_ARGUMENT', `${path}: no file handles`);
  const first = files[0]!;
  const idle: Slot[] = files.map((file) => ({ file, staging: new Uint8Array(0) }));
  const waiting: Array<(slot: Slot) => void> = [];

  /** Runs `op` with a handle of its own; the handle goes to the longest-waiting call next. */
  const withSlot = async <T>(op: (slot: Slot) => Promise<T>): Promise<T> => {
    const slot = idle.pop() ?? (await new Promise<Slot>((resolve) => waiting.push(resolve)));
    try {
      return await op(slot);
    } finally {
      const next = waiting.shift();
      if (next !== undefined) next(slot);
      else idle.push(slot);
    }
  };

  const gate = new OperationGate(path, fileIoError);
  const canSync = syncLimitBytes >= 0 &&
    files.every((file) => typeof file.seekSync === 'function' && typeof file.readSync === 'function' && typeof file.writeSync === 'function');

  // A small transfer done at once on an idle handle (no other call can move its cursor before it
  // returns): its settled result, or undefined when it is not for the synchronous path.
  const syncTransfer = (what: 'preadv' | 'pwritev', position: number, buffers: readonly Uint8Array[]): Promise<void> | undefined => {
    const slot = idle[idle.length - 1];
    if (!canSync || slot === undefined || !Array.isArray(buffers)) return undefined;
    let length = 0;
    for (const buffer of buffers) {
      if (!(buffer instanceof Uint8Array)) return undefined;
      length += buffer.byteLength;
    }
    if (length === 0 || length > syncLimitBytes || (buffers.length > 1 && length > STAGING_BYTES)) return undefined;
    return gate.runSync(what, () => {
      checkRange(position, length);
      transferSync(slot, what === 'preadv' ? 'read' : 'write', position, buffers, length);
    });
  };

  const run = <T>(what: string, op: () => Promise<T>): Promise<T> => gate.run(what, op);

  const readOnly = (what: string): BackendError =>
    new BackendError('BACKEND_READ_ONLY', `${what} ${path}: backend is read-only`);

  const capabilities: BackendCapabilities = Object.freeze({ writable, truncate: writable, discard: false, durableFlush: true });
  const limits: BackendLimits = Object.freeze({ maxIov: MAX_IOV, maxTransfer: MAX_TRANSFER });

  return {
    kind: 'deno-file',
    capabilities,
    limits,

    getSize(): Promise<number> {
      return run('stat', async () => (await first.stat()).size);
    },

    preadv(position: number, buffers: readonly Uint8Array[]): Promise<void> {
      const done = syncTransfer('preadv', position, buffers);
      if (done) return done;
      return run('preadv', async () => {
        // A snapshot of the list: the transfer reads it across awaits, the caller may reuse its array.
        const list = buffers.slice();
        const length = totalLength(list);
        checkRange(position, length);
        if (length === 0) return;
        await withSlot((slot) => readRuns(slot, position, list));
      });
    },

    pwritev(position: number, buffers: readonly Uint8Array[]): Promise<void> {
      const done = writable ? syncTransfer('pwritev', position, buffers) : undefined;
      if (done) return done;
      return run('pwritev', async () => {
        if (!writable) throw readOnly('pwritev');
        const list = buffers.slice();
        const length = totalLength(list);
        checkRange(position, length);
        if (length === 0) return;
        await withSlot((slot) => writeRuns(slot, position, list));
      });
    },

    flush(): Promise<void> {
      return run('fdatasync', async () => {
        if (writable) await first.syncData();
      });
    },

    truncate(size: number): Promise<void> {
      return run('truncate', async () => {
        if (!writable) throw readOnly('truncate');
        checkRange(size, 0);
        await first.truncate(size);
      });
    },

    close(): Promise<void> {
      return gate.close(async () => {
        let failure: unknown;
        for (const file of files) {
          try {
            file.close();
          } catch (err) {
            failure ??= err;
          }
        }
        if (failure !== undefined) throw fileIoError('close', path, failure);
      });
    },
  };
}

/** The Deno namespace, or a BACKEND_NOT_SUPPORTED error outside Deno. */
function denoApi(path: string): DenoApi {
  const deno = (globalThis as { Deno?: DenoApi }).Deno;
  if (deno === undefined || typeof deno.open !== 'function') {
    throw new BackendError('BACKEND_NOT_SUPPORTED', `open ${path}: the Deno file backend needs the Deno runtime`);
  }
  return deno;
}

/**
 * Opens the file at `path` as a Backend (kind "deno-file") in Deno.
 *
 * Read-only unless `o.writable`; `o.create` (with writable) creates a missing file and never
 * truncates an existing one. Opens `o.handles` (default 4) handles of the file; every read and
 * write holds one handle from its seek to its last byte, so calls are positional and any number
 * of them may run concurrently (up to `handles` at once, the rest queue in call order). The
 * handles are checked to be one file (same device and inode where the platform reports them).
 * Capabilities: { writable, truncate: writable, discard: false, durableFlush: true }; limits:
 * { maxIov: 1024, maxTransfer: 0x7ffff000 }. Buffers shorter than 64 KiB are staged together
 * (1 MiB per platform call); longer ones move in place. `o.sync` chooses between synchronous
 * calls and asynchronous ones (by default synchronous for transfers up to 128 KiB on regular
 * files: see the option).
 *
 * flush() is fdatasync (a no-op on a read-only backend). A read-only backend rejects pwritev and
 * truncate with BACKEND_READ_ONLY. Every platform failure, including NotFound on open and a
 * missing permission, rejects with BACKEND_IO_ERROR whose message names the path and errno code
 * and whose `cause` is the Deno error. Outside Deno it rejects with BACKEND_NOT_SUPPORTED.
 * close() waits for calls already started, then closes the handles; it is idempotent, and other
 * calls after it reject with BACKEND_CLOSED. `o.lock` takes an advisory lock on the first handle
 * (IMAGE_LOCKED when it conflicts), released when the handles close.
 */
export async function openDenoBackend(path: string, o?: DenoBackendOptions): Promise<Backend> {
  const writable = o?.writable ?? false;
  const create = o?.create ?? false;
  const handles = o?.handles ?? DEFAULT_HANDLES;
  if (create && !writable) {
    throw new BackendError('INVALID_ARGUMENT', `open ${path}: create requires writable`);
  }
  if (!Number.isSafeInteger(handles) || handles < 1 || handles > MAX_HANDLES) {
    throw new BackendError('INVALID_ARGUMENT', `open ${path}: handles must be an integer from 1 to ${MAX_HANDLES}, not ${handles}`);
  }
  const sync = o?.sync ?? 'auto';
  if (sync !== true && sync !== false && sync !== 'auto') {
    throw new BackendError('INVALID_ARGUMENT', `open ${path}: sync must be true, false or 'auto', not ${String(sync)}`);
  }
  const syncMaxBytes = o?.syncMaxBytes ?? DEFAULT_SYNC_MAX_BYTES;
  if (!Number.isSafeInteger(syncMaxBytes) || syncMaxBytes < 0) {
    throw new BackendError('INVALID_ARGUMENT', `open ${path}: syncMaxBytes must be a non-negative integer, not ${syncMaxBytes}`);
  }
  const lock = o?.lock ?? 'none';
  if (lock !== 'exclusive' && lock !== 'shared' && lock !== 'none') {
    throw new BackendError('INVALID_ARGUMENT', `open ${path}: lock must be 'exclusive', 'shared' or 'none', not ${String(lock)}`);
  }
  const deno = denoApi(path);
  const files: DenoFileLike[] = [];
  try {
    files.push(await deno.open(path, { read: true, write: writable, create }));
    if (lock !== 'none' && !(await files[0]!.tryLock(lock === 'exclusive'))) {
      throw new ImageError('IMAGE_LOCKED', `${path}: the file is locked by another open (another process, or this one): ` +
        `close that first${lock === 'shared' ? ', or open read-only without a lock to read beside it' : ''}`);
    }
    for (let i = 1; i < handles; i++) files.push(await deno.open(path, { read: true, write: writable, create: false }));
    if (files.length > 1) {
      const ids = await Promise.all(files.map((file) => file.stat()));
      const { dev, ino } = ids[0]!;
      if (ino !== null && ids.some((id) => id.dev !== dev || id.ino !== ino)) {
        const cause = Object.assign(new Error('the path was replaced while its handles were opened'), { code: 'ESTALE' });
        throw new BackendError('BACKEND_IO_ERROR', `open ${path}: the handles refer to different files`, { cause });
      }
    }
  } catch (err) {
    for (const file of files) {
      try {
        file.close();
      } catch {
        // Already failing with the open error; a second one would hide it.
      }
    }
    throw err instanceof ImageError ? err : fileIoError('open', path, err);
  }
  const syncLimitBytes = sync === true ? MAX_TRANSFER : sync === false ? -1
    : (await files[0]!.stat().then((info) => info.isFile === true, () => false)) ? syncMaxBytes : -1;
  return denoFileBackend(path, files, writable, syncLimitBytes);
}
