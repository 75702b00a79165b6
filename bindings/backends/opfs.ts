// SPDX-License-Identifier: MIT
// Opening files of the Origin Private File System (OPFS) as backends: path resolution and the
// choice between the worker backend (sync access handles) and the main-thread one.

import type { Backend } from './backend.js';
import { BackendError, ImageError } from '../base/errors.js';
import { acquireImageLock, type ImageLock, type LockedPolicy } from './image-lock.js';
import { asyncOpfsBackend } from './opfs-async.js';
import { openOpfsViaWorker } from './opfs-worker-host.js';
import { syncAccessBackend, type SyncAccessHandle } from './opfs-sync.js';
import { syncAccessWorks } from './opfs-sync-support.js';

/** How openOpfsBackend moves data. */
export type OpfsMode = 'auto' | 'sync-access' | 'async' | 'worker';

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
   * main thread but copy the whole file once per run of writes between reads. 'worker': a
   * dedicated worker of this library holds a sync access handle and runs the calls (for main
   * threads without createWritable, e.g. Safari before 26). 'auto' (default): sync-access where
   * the platform offers it and it works; else, for a writable open where createWritable is missing, worker;
   * else async.
   */
  mode?: OpfsMode;
  /**
   * What a writable open does while another tab or worker of the origin has the file open for
   * writing: 'fail' (default) rejects with IMAGE_LOCKED; 'read-only' opens it read-only.
   */
  whenLocked?: LockedPolicy;
}

/** True where FileSystemFileHandle has createWritable (Safari before 26 has not). */
const hasCreateWritable = (): boolean =>
  typeof FileSystemFileHandle !== 'undefined' && typeof (FileSystemFileHandle.prototype as { createWritable?: unknown }).createWritable === 'function';

/** Closes `backend`, then releases `lock`. */
function releasingOnClose(backend: Backend, lock: ImageLock): Backend {
  const close = backend.close.bind(backend);
  let closing: Promise<void> | undefined;
  backend.close = () => {
    closing ??= close().finally(() => lock.release());
    return closing;
  };
  return backend;
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
  let directory: FileSystemDirectoryHandle;
  try {
    directory = await navigator.storage.getDirectory();
  } catch (err) {
    // A private window of WebKit refuses the root (UnknownError): its website data store has no folder.
    throw new BackendError('BACKEND_NOT_SUPPORTED', `open ${path}: this window has no usable Origin Private File System (getDirectory: ${describe(err)}), as in private browsing; use openIndexedDbBackend`, { cause: err });
  }
  try {
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
 *   IMAGE_LOCKED meanwhile. A read-only open takes a shared read-only handle. Capabilities: { writable, truncate: writable, discard: false,
 *   durableFlush: true }; flush() is the handle's flush(), close() flushes and closes.
 * - mode 'async' (kind "opfs-async"): anywhere, including the main thread. Writes are
 *   committed in order by the next read, flush or close (or 100 ms after the last write), and
 *   each run of writes between reads copies the whole file (see asyncOpfsBackend);
 *   durableFlush false.
 * - mode 'worker' (kind "opfs-worker"): anywhere a module Worker can be started; a worker of
 *   this library opens the file in 'sync-access' mode and runs every call (see openOpfsViaWorker).
 * - mode 'auto' (default): 'sync-access' where `createSyncAccessHandle` exists and works; else
 *   'worker' for a writable open on a thread where createWritable is missing; else 'async'.
 *
 * Where the platform offers sync access, whether it works is found once per realm on an empty
 * file of its own, `.qcow2-wasm/sync-access-probe` in the OPFS root (see syncAccessWorks):
 * WebKitGTK offers it, refuses, and keeps a refused file locked for the rest of the session.
 *
 * One writer per file: a writable open takes the file's Web Lock (acquireImageLock) and holds it
 * until close(). While another tab or worker holds it, the open rejects with IMAGE_LOCKED (an
 * ImageError), or, with `whenLocked: 'read-only'`, opens the file read-only (mode 'async'
 * reads of the file as last committed).
 *
 * Fails with INVALID_ARGUMENT for an empty path, '.' or '..' in it, or create without writable;
 * BACKEND_NOT_SUPPORTED without OPFS, where the window cannot use it (navigator.storage.getDirectory()
 * rejects, as in private browsing), or without sync access where a mode needs it; BACKEND_IO_ERROR with
 * the platform error as `cause` otherwise (e.g. NotFoundError for a missing file).
 */
export async function openOpfsBackend(path: string, options: OpfsBackendOptions = {}): Promise<Backend> {
  const writable = options.writable ?? false;
  const create = options.create ?? false;
  const mode = options.mode ?? 'auto';
  if (create && !writable) throw new BackendError('INVALID_ARGUMENT', `open ${path}: create requires writable`);
  if (mode !== 'auto' && mode !== 'sync-access' && mode !== 'async' && mode !== 'worker') {
    throw new BackendError('INVALID_ARGUMENT', `open ${path}: unknown mode ${JSON.stringify(mode)}`);
  }
  const whenLocked = options.whenLocked ?? 'fail';
  const file = await resolveFile(path, create);
  const factory = file as unknown as Partial<SyncAccessFactory>;
  const canSync = typeof factory.createSyncAccessHandle === 'function';
  if (mode === 'sync-access' && !canSync) {
    throw new BackendError('BACKEND_NOT_SUPPORTED', `open ${path}: FileSystemSyncAccessHandle exists only in dedicated workers`);
  }
  if (mode === 'worker' || (mode === 'auto' && !canSync && writable && !hasCreateWritable() && typeof Worker === 'function')) {
    return openOpfsViaWorker(path, { create, writable, whenLocked });
  }
  const lock = await acquireImageLock(`opfs:${path}`, writable, whenLocked);
  const lockedOut = writable && !lock.writable;
  if (mode === 'async' || !canSync || lockedOut) return releasingOnClose(asyncOpfsBackend(file, path, lock.writable), lock);
  /** Where the engine's sync access handles do not work: async for 'auto' where it can write, else BACKEND_NOT_SUPPORTED. */
  const withoutSyncAccess = async (why: string, cause?: unknown): Promise<Backend> => {
    if (mode === 'auto' && (!writable || hasCreateWritable())) return releasingOnClose(asyncOpfsBackend(file, path, writable), lock);
    await lock.release();
    throw new BackendError('BACKEND_NOT_SUPPORTED', `open ${path}: this browser's OPFS has no working sync access handles (${why}); use mode 'async' or openIndexedDbBackend`, { cause });
  };
  if (!(await syncAccessWorks())) return withoutSyncAccess('createSyncAccessHandle rejects with NotSupportedError');
  let access: SyncAccessHandle;
  try {
    access = await factory.createSyncAccessHandle!({ mode: writable ? 'readwrite' : 'read-only' });
  } catch (err) {
    if (err instanceof Error && err.name === 'NotSupportedError') return withoutSyncAccess(describe(err), err);
    await lock.release();
    // The handle's own exclusivity: a writer elsewhere that does not take the Web Lock.
    if (writable && err instanceof Error && err.name === 'NoModificationAllowedError') {
      if (whenLocked === 'read-only') return asyncOpfsBackend(file, path, false);
      throw new ImageError('IMAGE_LOCKED', `open ${path}: the file is open for writing elsewhere (${describe(err)}); close it there, or open it read-only`, { cause: err });
    }
    throw new BackendError('BACKEND_IO_ERROR', `open ${path}: ${describe(err)}`, { cause: err });
  }
  return releasingOnClose(syncAccessBackend(access, path, writable), lock);
}
