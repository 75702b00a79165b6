// SPDX-License-Identifier: MIT
// OPFS on a main thread that cannot write files itself (no createWritable, as in Safari before
// 26): a dedicated worker holds a sync access handle and the page's Backend calls go to it.

import { OperationGate, checkRange, totalLength, type Backend } from './backend.js';
import { BackendError, ImageError, type ErrorCode } from '../base/errors.js';
import type { LockedPolicy } from './image-lock.js';
import type { WorkerBackendDescription, WorkerBackendRequest, WorkerBackendResponse } from './opfs-worker-protocol.js';
import { gatherInto, scatterFrom } from './vector-copy.js';

/** A request without its id (the host numbers them). */
type Call = WorkerBackendRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

/**
 * Opens the OPFS file `path` through a new dedicated worker (kind "opfs-worker"): the worker
 * opens it in 'sync-access' mode (holding the image lock and the handle's exclusivity there)
 * and runs every call; vectors are gathered into one transferred buffer per call. Capabilities
 * and limits are the worker backend's (durableFlush true). close() closes the file and ends the
 * worker. Errors keep the worker's codes (e.g. IMAGE_LOCKED, BACKEND_IO_ERROR); `cause` is a
 * DOMException-like Error named as the platform error was. Without Worker support:
 * BACKEND_NOT_SUPPORTED.
 */
export async function openOpfsViaWorker(path: string, options: { create: boolean; writable: boolean; whenLocked: LockedPolicy }): Promise<Backend> {
  if (typeof Worker !== 'function') {
    throw new BackendError('BACKEND_NOT_SUPPORTED', `open ${path}: this main thread cannot write OPFS files itself and has no Worker to do it`);
  }
  const worker = new Worker(new URL('./opfs-worker-entry.js', import.meta.url), { type: 'module' });
  const waiting = new Map<number, { resolve: (value: unknown) => void; reject: (err: unknown) => void }>();
  let nextId = 1;
  let broken: BackendError | undefined;
  const failAll = (err: BackendError) => {
    broken = err;
    for (const waiter of waiting.values()) waiter.reject(err);
    waiting.clear();
  };
  worker.onmessage = (event: MessageEvent<WorkerBackendResponse>) => {
    const reply = event.data;
    const waiter = waiting.get(reply.id);
    waiting.delete(reply.id);
    if (reply.ok) {
      waiter?.resolve(reply.value);
      return;
    }
    const cause = reply.error.causeName === undefined ? undefined : Object.assign(new Error(reply.error.message), { name: reply.error.causeName });
    const code = (reply.error.code ?? 'BACKEND_IO_ERROR') as ErrorCode;
    const ErrorClass = code.startsWith('IMAGE_') ? ImageError : BackendError;
    waiter?.reject(new ErrorClass(code, reply.error.message, cause === undefined ? undefined : { cause }));
  };
  worker.onerror = (event) => {
    event.preventDefault();
    failAll(new BackendError('BACKEND_IO_ERROR', `opfs worker for ${path}: the worker failed: ${event.message || 'it could not be loaded'}`));
  };
  const call = (request: Call, transfer: Transferable[] = []): Promise<unknown> => {
    if (broken) return Promise.reject(broken);
    const id = nextId++;
    return new Promise((resolve, reject) => {
      waiting.set(id, { resolve, reject });
      worker.postMessage({ ...request, id }, transfer);
    });
  };

  let description: WorkerBackendDescription;
  try {
    description = (await call({ op: 'open', path, options })) as WorkerBackendDescription;
  } catch (err) {
    worker.terminate();
    throw err;
  }
  // The worker's errors arrive typed; nothing to wrap.
  const gate = new OperationGate(path, (_what, _path, err) => err as Error);
  const readOnly = (what: string) => new BackendError('BACKEND_READ_ONLY', `${what} ${path}: backend is read-only`);
  const { writable } = description.capabilities;

  const backend: Backend = {
    kind: 'opfs-worker',
    capabilities: Object.freeze({ ...description.capabilities }),
    limits: Object.freeze({ ...description.limits }),
    getSize: () => gate.run('getSize', async () => (await call({ op: 'getSize' })) as number),
    preadv: (position, buffers) => gate.run('preadv', async () => {
      const length = totalLength(buffers);
      checkRange(position, length);
      if (length === 0) return;
      scatterFrom((await call({ op: 'preadv', position, length })) as Uint8Array, buffers);
    }),
    pwritev: (position, buffers) => gate.run('pwritev', async () => {
      if (!writable) throw readOnly('pwritev');
      const length = totalLength(buffers);
      checkRange(position, length);
      if (length === 0) return;
      const data = new Uint8Array(length);
      gatherInto(buffers, data);
      await call({ op: 'pwritev', position, data }, [data.buffer]);
    }),
    flush: () => gate.run('flush', async () => { await call({ op: 'flush' }); }),
    close: () => gate.close(async () => {
      try {
        await call({ op: 'close' });
      } finally {
        worker.terminate();
      }
    }),
  };
  if (writable) {
    backend.truncate = (size) => gate.run('truncate', async () => {
      checkRange(size, 0);
      await call({ op: 'truncate', size });
    });
  } else {
    backend.truncate = () => gate.run('truncate', async () => { throw readOnly('truncate'); });
  }
  return backend;
}
