// SPDX-License-Identifier: MIT
// Opening files of the Origin Private File System (OPFS) as backends: path resolution and the
// choice between the worker backend (sync access handles) and the main-thread one.

import type { Backend } from '../backend.js';
import { BackendError } from '../errors.js';
import { asyncOpfsBackend } from './opfs-async.js';
import { syncAccessBackend, type SyncAccessHandle } from './opfs-sync.js';

/** How openOpfsBackend moves data. */
export type OpfsMode = 'auto' | 'sync-access' | 'async';

/** Options of openOpfsBackend. */
export interface OpfsBackendOptions {
  /**
   * Create the file, and the directories on its path, if they are missing. An existing file is
   * never truncated. Only valid together with `writable`; otherwise INVALID_ARGUMENT.
   */
  create?: boolean;
  /** Open for writing. Default false: every write rejects with BACKEND_READ_ONLY. */
  writable?: boolean;
  /**
   * 'sync-access': a FileSystemSyncAccessHandle (dedicated workers only; elsewhere
   * BACKEND_NOT_SUPPORTED). 'async': File reads and writable-stream writes, which work on the
   * main thread but copy the whole file once per run of writes between reads. 'auto' (default):
   * sync-access where the platform offers it, else async.
   */
  mode?: OpfsMode;
}

/** The sync-access factory of FileSystemFileHandle (dedicated workers only; not in TS's DOM lib). */
interface SyncAccessFactory {
  createSyncAccessHandle(options?: { mode?: 'readwrite' | 'read-only' }): Promise<SyncAccessHandle>;
}

const describe = (err: unknown): string => (err instanceof Error ? `${err.name}: ${err.message}` : String(err));

/** Resolves `path` ('/'-separated, relative to the OPFS root) to a file handle. */
async function resolveFile(path: string, create: boolean): Promise<FileSystemFileHandle> {
  const parts = path.split('/').filter((part) => part !== '');
  if (parts.length === 0 || parts.some((part) => part === '.' || part === '..')) {
    throw new BackendError('INVALID_ARGUMENT', `open ${JSON.stringify(path)}: an OPFS path names a file by '/'-separated names, without '.' or '..'`);
  }
  if (typeof navigator === 'undefined' || typeof navigator.storage?.getDirectory !== 'function') {
    throw new BackendError('BACKEND_NOT_SUPPORTED', `open ${path}: this platform has no Origin Private File System`);
  }
  try {
    let directory = await navigator.storage.getDirectory();
    for (const name of parts.slice(0, -1)) directory = await directory.getDirectoryHandle(name, { create });
    return await directory.getFileHandle(parts[parts.length - 1]!, { create });
  } catch (err) {
    throw new BackendError('BACKEND_IO_ERROR', `open ${path}: ${describe(err)}`, { cause: err });
  }
}

/**
 * Opens the OPFS file at `path` (relative to the origin's OPFS root, '/'-separated; with
 * `create`, missing directories and the file are created) as a Backend.
 *
 * - mode 'sync-access' (kind "opfs-sync"): in a dedicated Worker. Positional reads and writes
 *   that cost what they move; a vector of buffers goes out as one platform call (limits
 *   { maxIov: 1024, maxTransfer: 4 MiB }). A writable handle holds the browser's exclusive lock
 *   on the file until close(): a second open of the same file, from any tab or worker, fails with
 *   BACKEND_IO_ERROR (NoModificationAllowedError) meanwhile. A read-only open takes a shared
 *   read-only handle. Capabilities: { writable, truncate: writable, discard: false,
 *   durableFlush: true }; flush() is the handle's flush(), close() flushes and closes.
 * - mode 'async' (kind "opfs-async"): anywhere, including the main thread. Writes are
 *   committed in order by the next read, flush or close (or 100 ms after the last write), and
 *   each run of writes between reads copies the whole file (see asyncOpfsBackend);
 *   durableFlush false.
 * - mode 'auto' (default): 'sync-access' where `createSyncAccessHandle` exists, else 'async'.
 *
 * Fails with INVALID_ARGUMENT for an empty path, '.' or '..' in it, or create without writable;
 * BACKEND_NOT_SUPPORTED without OPFS (or sync access where it is missing); BACKEND_IO_ERROR with
 * the platform error as `cause` otherwise (e.g. NotFoundError for a missing file).
 */
export async function openOpfsBackend(path: string, options: OpfsBackendOptions = {}): Promise<Backend> {
  const writable = options.writable ?? false;
  const create = options.create ?? false;
  const mode = options.mode ?? 'auto';
  if (create && !writable) throw new BackendError('INVALID_ARGUMENT', `open ${path}: create requires writable`);
  if (mode !== 'auto' && mode !== 'sync-access' && mode !== 'async') {
    throw new BackendError('INVALID_ARGUMENT', `open ${path}: unknown mode ${JSON.stringify(mode)}`);
  }
  const file = await resolveFile(path, create);
  const factory = file as unknown as Partial<SyncAccessFactory>;
  const canSync = typeof factory.createSyncAccessHandle === 'function';
  if (mode === 'sync-access' && !canSync) {
    throw new BackendError('BACKEND_NOT_SUPPORTED', `open ${path}: FileSystemSyncAccessHandle exists only in dedicated workers`);
  }
  if (mode === 'async' || !canSync) return asyncOpfsBackend(file, path, writable);
  let access: SyncAccessHandle;
  try {
    access = await factory.createSyncAccessHandle!({ mode: writable ? 'readwrite' : 'read-only' });
  } catch (err) {
    const hint = err instanceof Error && err.name === 'NoModificationAllowedError' ? ' (the file is open elsewhere)' : '';
    throw new BackendError('BACKEND_IO_ERROR', `open ${path}: ${describe(err)}${hint}`, { cause: err });
  }
  return syncAccessBackend(access, path, writable);
}
