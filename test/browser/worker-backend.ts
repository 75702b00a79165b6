// SPDX-License-Identifier: MIT
// The page side of opfs-worker.ts: a Backend whose every call is forwarded to a real OPFS
// sync-access backend in a dedicated worker. Arguments cross by structured clone (copies, with
// the caller's buffer boundaries kept), results are copied back into the caller's buffers, and
// errors come back as BackendErrors with the worker's code. Calls reach the worker in call order.

import type { Backend } from '../../bindings/backends/backend.js';
import { BackendError, type ErrorCode, type OpfsBackendOptions } from '../../bindings/browser.js';
import type { OpenedBackend, WorkerRequest, WorkerResponse } from './opfs-worker.js';
import { workerErrorText } from './pages/page-tools.js';

type Body<R> = R extends unknown ? Omit<R, 'id'> : never;

/** A connection to one opfs-worker.ts worker. */
export class OpfsWorker {
  private readonly worker = new Worker(new URL('./opfs-worker.ts', import.meta.url), { type: 'module' });
  private readonly waiting = new Map<number, { resolve: (value: unknown) => void; reject: (err: unknown) => void }>();
  private nextId = 1;

  constructor() {
    this.worker.onmessage = (event: MessageEvent<WorkerResponse>) => {
      const answer = event.data;
      const waiter = this.waiting.get(answer.id);
      if (waiter === undefined) return;
      this.waiting.delete(answer.id);
      if (answer.ok) waiter.resolve(answer.value);
      else if (answer.error.code !== undefined) waiter.reject(new BackendError(answer.error.code as ErrorCode, `[worker] ${answer.error.message}`));
      else waiter.reject(new Error(`[worker] ${answer.error.name}: ${answer.error.message}`));
    };
    this.worker.onerror = (event) => {
      for (const waiter of this.waiting.values()) waiter.reject(new Error(workerErrorText(event)));
      this.waiting.clear();
    };
  }

  /** Sends one request; resolves with the worker's answer. */
  call<T>(request: Body<WorkerRequest>): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.worker.postMessage({ ...request, id });
    });
  }

  /**
   * Opens `path` with openOpfsBackend in the worker (after writing `initial` there, if given,
   * replacing the contents) and returns the page-side Backend forwarding to it.
   */
  async open(path: string, options: OpfsBackendOptions, initial?: Uint8Array): Promise<Backend> {
    const opened = await this.call<OpenedBackend>({ op: 'open', path, options, initial });
    const handle = opened.handle;
    const backend: Backend = {
      kind: opened.kind,
      capabilities: opened.capabilities,
      limits: opened.limits,
      getSize: () => this.call<number>({ op: 'getSize', handle }),
      preadv: async (position, buffers) => {
        const got = await this.call<Uint8Array[]>({ op: 'preadv', handle, position, lengths: buffers.map((b) => b.byteLength) });
        got.forEach((bytes, i) => buffers[i]!.set(bytes));
      },
      pwritev: (position, buffers) => this.call<void>({ op: 'pwritev', handle, position, buffers: [...buffers] }),
      flush: () => this.call<void>({ op: 'flush', handle }),
      close: () => this.call<void>({ op: 'close', handle }),
    };
    if (opened.methods.includes('truncate')) backend.truncate = (size) => this.call<void>({ op: 'truncate', handle, size });
    if (opened.methods.includes('discard')) backend.discard = (position, length) => this.call<void>({ op: 'discard', handle, position, length });
    return backend;
  }

  /** Stops the worker (its open backends are closed by the browser with it). */
  terminate(): void {
    this.worker.terminate();
  }
}
