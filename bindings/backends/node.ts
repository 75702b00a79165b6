// SPDX-License-Identifier: MIT
// The Node.js file backend: a FileHandle driven with positional readv/writev, split to the
// platform's iovec and byte limits and looped until every byte moved.

import { constants, readSync as readOneSync, readvSync, writeSync as writeOneSync, writevSync } from 'node:fs';
import { open, statfs, type FileHandle } from 'node:fs/promises';
import { COMPLETED, OperationGate, checkRange, fileIoError, totalLength, type Backend, type BackendCapabilities, type BackendLimits } from './backend.js';
import { BackendError } from '../base/errors.js';

/** Linux's IOV_MAX: the most buffers one readv/writev syscall takes. */
const MAX_IOV = 1024;
/** Linux moves at most this many bytes per read/write syscall (2 GiB less one page). */
const MAX_TRANSFER = 0x7ffff000;

/** Options of openNodeBackend. */
export interface NodeBackendOptions {
  /** Open for writing (O_RDWR). Default false: O_RDONLY, and every write rejects BACKEND_READ_ONLY. */
  writable?: boolean;
  /**
   * Create the file if it is missing (O_CREAT, mode 0o666 less the umask). An existing file is
   * never truncated. Only valid together with `writable`; otherwise INVALID_ARGUMENT.
   */
  create?: boolean;
  /**
   * How data moves. `'auto'` (the default): transfers of at most `syncMaxBytes` on a regular file
   * of a local file system use synchronous positional syscalls (a few microseconds per call when
   * the page cache has the data, blocking the event loop for that long, or for one device access
   * on a cache miss), larger ones and every other file (network and FUSE file systems, devices)
   * go through libuv's thread pool (~40 µs a call, never blocking). `true`: every transfer is
   * synchronous (for a disk running in a worker thread). `false`: every transfer uses the thread
   * pool. flush (fdatasync), stat, truncate and close always use the thread pool.
   */
  sync?: boolean | 'auto';
  /** With `sync: 'auto'`: the largest transfer moved synchronously, in bytes. Default 131072 (128 KiB). */
  syncMaxBytes?: number;
}

/** Default of NodeBackendOptions.syncMaxBytes. */
export const DEFAULT_SYNC_MAX_BYTES = 128 * 1024;

/**
 * statfs type numbers of file systems whose calls may wait on a network or a user-space daemon
 * (NFS, SMB/CIFS, SMB2, FUSE, Ceph, 9P, AFS): 'auto' keeps them on the thread pool.
 */
const REMOTE_FILE_SYSTEMS: ReadonlySet<number> = new Set([0x6969, 0x517b, 0xff534d42, 0xfe534d42, 0x65735546, 0x00c36400, 0x01021997, 0x5346414f]);

/**
 * Whether `path` (open as `handle`) is a regular file on a local file system, so short synchronous
 * calls cannot stall. Both questions go to the thread pool at once (one round trip, not two).
 */
async function isLocalRegularFile(path: string, handle: FileHandle): Promise<boolean> {
  try {
    const [stats, fileSystem] = await Promise.all([handle.stat(), statfs(path)]);
    return stats.isFile() && !REMOTE_FILE_SYSTEMS.has(fileSystem.type);
  } catch {
    return false;
  }
}

// One synchronous positional syscall: pread/pwrite for one buffer (Node checks a vector's
// buffers one by one, a tenth of a microsecond a call), preadv/pwritev for several.
function preadvSync(fd: number, buffers: readonly Uint8Array[], position: number): number {
  if (buffers.length !== 1) return readvSync(fd, buffers as Uint8Array[], position);
  const buffer = buffers[0];
  return readOneSync(fd, buffer, 0, buffer.byteLength, position);
}

function pwritevSync(fd: number, buffers: readonly Uint8Array[], position: number): number {
  if (buffers.length !== 1) return writevSync(fd, buffers as Uint8Array[], position);
  const buffer = buffers[0];
  return writeOneSync(fd, buffer, 0, buffer.byteLength, position);
}

/**
 * One positional vectored syscall as the transfer loop sees it: moves up to the total length of
 * `buffers` at `position` and resolves with the number of bytes moved (0 for a read means EOF).
 */
export type VectoredCall = (buffers: Uint8Array[], position: number) => Promise<number>;

/**
 * Moves every byte of `buffers` at `position` through `call`, issuing as many calls as needed:
 * each call gets at most `limits.maxIov` non-empty buffers and `limits.maxTransfer` bytes (a buffer
 * that straddles a limit is passed as a subarray), and short transfers resume where they stopped.
 * For a read (`mode` "read") a call moving 0 bytes is end-of-file: the rest of the buffers is
 * zero-filled. For a write it rejects with BACKEND_IO_ERROR (a write that makes no progress would
 * loop forever). Zero-length input issues no call. Used by openNodeBackend; exported for tests.
 */
export async function transferAll(
  call: VectoredCall,
  mode: 'read' | 'write',
  position: number,
  buffers: readonly Uint8Array[],
  limits: BackendLimits,
): Promise<void> {
  let index = 0; // first buffer with bytes left
  let offset = 0; // bytes of buffers[index] already moved
  let at = position;
  for (;;) {
    while (index < buffers.length && offset >= buffers[index]!.byteLength) {
      index++;
      offset = 0;
    }
    if (index >= buffers.length) return;

    const iov: Uint8Array[] = [];
    let bytes = 0;
    for (let i = index, skip = offset; i < buffers.length && iov.length < limits.maxIov && bytes < limits.maxTransfer; i++, skip = 0) {
      const buffer = buffers[i]!;
      const left = buffer.byteLength - skip;
      if (left <= 0) continue;
      const take = Math.min(left, limits.maxTransfer - bytes);
      iov.push(skip === 0 && take === buffer.byteLength ? buffer : buffer.subarray(skip, skip + take));
      bytes += take;
    }

    const moved = await call(iov, at);
    if (moved === 0) {
      if (mode === 'write') {
        const cause = Object.assign(new Error('write made no progress'), { code: 'EIO' });
        throw new BackendError('BACKEND_IO_ERROR', `pwritev at ${at}: the write moved 0 of ${bytes} bytes`, { cause });
      }
      buffers[index]!.fill(0, offset);
      for (let i = index + 1; i < buffers.length; i++) buffers[i]!.fill(0);
      return;
    }
    if (!(moved > 0 && moved <= bytes)) {
      throw new BackendError('BACKEND_IO_ERROR', `${mode} at ${at}: the platform reported ${moved} bytes moved of ${bytes}`);
    }
    at += moved;
    let left = moved;
    while (left > 0) {
      const available = buffers[index]!.byteLength - offset;
      if (left >= available) {
        left -= available;
        index++;
        offset = 0;
      } else {
        offset += left;
        left = 0;
      }
    }
  }
}


/**
 * Opens the file at `path` as a Backend (kind "node-file").
 *
 * Read-only unless `o.writable`; `o.create` (with writable) creates a missing file and never
 * truncates an existing one; `o.sync` chooses between synchronous syscalls and the thread pool
 * (by default synchronous for transfers up to 128 KiB on local regular files: see the option). Capabilities: { writable, truncate: writable, discard: false,
 * durableFlush: true }; limits: { maxIov: 1024, maxTransfer: 0x7ffff000 }. Calls with more buffers
 * or bytes than that are split into several syscalls, so they work too, just not atomically.
 *
 * flush() is fdatasync (a no-op on a read-only backend). A read-only backend rejects pwritev and
 * truncate with BACKEND_READ_ONLY without touching the file. Every platform failure, including
 * ENOENT on open, rejects with BACKEND_IO_ERROR whose message names the path and errno code and
 * whose `cause` is the Node error. close() waits for calls already started, then closes the
 * handle; it is idempotent, and other calls after it reject with BACKEND_CLOSED.
 */
export async function openNodeBackend(path: string, o?: NodeBackendOptions): Promise<Backend> {
  const writable = o?.writable ?? false;
  const create = o?.create ?? false;
  if (create && !writable) {
    throw new BackendError('INVALID_ARGUMENT', `open ${path}: create requires writable`);
  }
  const flags = writable ? constants.O_RDWR | (create ? constants.O_CREAT : 0) : constants.O_RDONLY;
  let handle: FileHandle;
  try {
    handle = await open(path, flags, 0o666);
  } catch (err) {
    throw fileIoError('open', path, err);
  }

  const limits: BackendLimits = Object.freeze({ maxIov: MAX_IOV, maxTransfer: MAX_TRANSFER });
  const capabilities: BackendCapabilities = Object.freeze({
    writable,
    truncate: writable,
    discard: false,
    durableFlush: true,
  });

  const gate = new OperationGate(path, fileIoError);

  const mode = o?.sync ?? 'auto';
  const syncMaxBytes = o?.syncMaxBytes ?? DEFAULT_SYNC_MAX_BYTES;
  if (!Number.isSafeInteger(syncMaxBytes) || syncMaxBytes < 0) {
    await handle.close();
    throw new BackendError('INVALID_ARGUMENT', `open ${path}: syncMaxBytes must be a non-negative integer, not ${syncMaxBytes}`);
  }
  /** Transfers of at most this many bytes are synchronous (-1: none, Infinity: all). */
  const syncLimitBytes = mode === true ? Infinity
    : mode === false ? -1
      : (await isLocalRegularFile(path, handle)) ? syncMaxBytes : -1;

  const readSync: VectoredCall = async (iov, at) => readvSync(handle.fd, iov, at);
  const readAsync: VectoredCall = async (iov, at) => (await handle.readv(iov, at)).bytesRead;
  const writeSync: VectoredCall = async (iov, at) => writevSync(handle.fd, iov, at);
  const writeAsync: VectoredCall = async (iov, at) => (await handle.writev(iov, at)).bytesWritten;

  const run = <T>(what: string, op: () => Promise<T>): Promise<T> => gate.run(what, op);

  // Every transfer the synchronous fast path does not finish: thread pool or synchronous by size.
  const readAll = (position: number, buffers: readonly Uint8Array[]): Promise<void> => {
    return run('preadv', async () => {
      const length = totalLength(buffers);
      checkRange(position, length);
      if (length === 0) return;
      // A snapshot of the list: the loop reads it across awaits, the caller may reuse its array.
      await transferAll(length <= syncLimitBytes ? readSync : readAsync, 'read', position, buffers.slice(), limits);
    });
  };
  const writeAll = (position: number, buffers: readonly Uint8Array[]): Promise<void> => {
    return run('pwritev', async () => {
      if (!writable) throw readOnly('pwritev');
      const length = totalLength(buffers);
      checkRange(position, length);
      if (length === 0) return;
      await transferAll(length <= syncLimitBytes ? writeSync : writeAsync, 'write', position, buffers.slice(), limits);
    });
  };

  // The common small transfer in one synchronous syscall, with no promise layer of its own:
  // COMPLETED when that syscall moved every byte, a rejection when it failed, the general path's
  // promise when it came up short (the general path redoes it whole, which is safe: no other call
  // overlaps it), undefined when the transfer is not for the synchronous path (or the backend is
  // closed: the general path reports that).
  const oneSyncCall = (what: 'preadv' | 'pwritev', position: number, buffers: readonly Uint8Array[],
                       call: (fd: number, iov: readonly Uint8Array[], at: number) => number,
                       general: (position: number, buffers: readonly Uint8Array[]) => Promise<void>): Promise<void> | undefined => {
    if (syncLimitBytes < 0 || !Array.isArray(buffers) || buffers.length === 0 || buffers.length > MAX_IOV) return undefined;
    let length = 0;
    for (const buffer of buffers) {
      if (!(buffer instanceof Uint8Array)) return undefined;
      length += buffer.byteLength;
    }
    if (length === 0 || length > syncLimitBytes || !Number.isSafeInteger(position) || position < 0 ||
        position + length > Number.MAX_SAFE_INTEGER || gate.closed) return undefined;
    let moved: number;
    try {
      moved = call(handle.fd, buffers, position);
    } catch (err) {
      return Promise.reject(fileIoError(what, path, err));
    }
    return moved === length ? COMPLETED : general(position, buffers);
  };

  const readOnly = (what: string): BackendError =>
    new BackendError('BACKEND_READ_ONLY', `${what} ${path}: backend is read-only`);

  const backend: Backend = {
    kind: 'node-file',
    capabilities,
    limits,

    getSize(): Promise<number> {
      return run('stat', async () => (await handle.stat()).size);
    },

    preadv(position: number, buffers: readonly Uint8Array[]): Promise<void> {
      return oneSyncCall('preadv', position, buffers, preadvSync, readAll) ?? readAll(position, buffers);
    },

    pwritev(position: number, buffers: readonly Uint8Array[]): Promise<void> {
      return (writable ? oneSyncCall('pwritev', position, buffers, pwritevSync, writeAll) : undefined) ?? writeAll(position, buffers);
    },

    flush(): Promise<void> {
      return run('fdatasync', async () => {
        if (writable) await handle.datasync();
      });
    },

    truncate(size: number): Promise<void> {
      return run('truncate', async () => {
        if (!writable) throw readOnly('truncate');
        checkRange(size, 0);
        await handle.truncate(size);
      });
    },

    close(): Promise<void> {
      return gate.close(async () => {
        try {
          await handle.close();
        } catch (err) {
          throw fileIoError('close', path, err);
        }
      });
    },
  };
  return backend;
}
