// SPDX-License-Identifier: MIT
// A dedicated worker that holds real OPFS sync-access backends for the page: it opens them
// (FileSystemSyncAccessHandle exists only in workers) and runs each Backend call the page sends
// (worker-backend.ts), answering with the result or the error's name, code and message.

import { openOpfsBackend, type Backend, type OpfsBackendOptions } from '../../bindings/browser.js';

/** A request from worker-backend.ts. */
export type WorkerRequest =
  | { id: number; op: 'open'; path: string; options: OpfsBackendOptions; initial?: Uint8Array }
  | { id: number; op: 'getSize' | 'flush' | 'close'; handle: number }
  | { id: number; op: 'preadv'; handle: number; position: number; lengths: number[] }
  | { id: number; op: 'pwritev'; handle: number; position: number; buffers: Uint8Array[] }
  | { id: number; op: 'truncate'; handle: number; size: number }
  | { id: number; op: 'discard'; handle: number; position: number; length: number };

/** What open() answers: the backend's self-description. */
export interface OpenedBackend {
  handle: number;
  kind: string;
  capabilities: Backend['capabilities'];
  limits: Backend['limits'];
  methods: string[];
}

/** The answer to one request. */
export type WorkerResponse =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { name: string; code?: string; message: string } };

const backends = new Map<number, Backend>();
let nextHandle = 1;

const backendOf = (handle: number): Backend => {
  const backend = backends.get(handle);
  if (backend === undefined) throw new Error(`no backend ${handle}`);
  return backend;
};

async function serve(request: WorkerRequest): Promise<unknown> {
  switch (request.op) {
    case 'open': {
      const backend = await openOpfsBackend(request.path, request.options);
      if (request.initial !== undefined) {
        await backend.truncate!(0);
        await backend.pwritev(0, [request.initial]);
        await backend.flush();
      }
      const handle = nextHandle++;
      backends.set(handle, backend);
      const methods = ['truncate', 'discard'].filter((name) => typeof (backend as unknown as Record<string, unknown>)[name] === 'function');
      const opened: OpenedBackend = { handle, kind: backend.kind, capabilities: backend.capabilities, limits: backend.limits, methods };
      return opened;
    }
    case 'getSize':
      return backendOf(request.handle).getSize();
    case 'flush':
      return backendOf(request.handle).flush();
    case 'close':
      return backendOf(request.handle).close();
    case 'preadv': {
      const targets = request.lengths.map((length) => new Uint8Array(length));
      await backendOf(request.handle).preadv(request.position, targets);
      return targets;
    }
    case 'pwritev':
      return backendOf(request.handle).pwritev(request.position, request.buffers);
    case 'truncate':
      return backendOf(request.handle).truncate!(request.size);
    case 'discard':
      return backendOf(request.handle).discard!(request.position, request.length);
  }
}

const scope = self as unknown as { onmessage: ((event: MessageEvent<WorkerRequest>) => void) | null; postMessage(message: WorkerResponse): void };
scope.onmessage = (event) => {
  const request = event.data;
  serve(request).then(
    (value) => scope.postMessage({ id: request.id, ok: true, value }),
    (err: unknown) => {
      const e = err as { name?: string; code?: string; message?: string };
      scope.postMessage({ id: request.id, ok: false, error: { name: e?.name ?? 'Error', code: e?.code, message: e?.message ?? String(err) } });
    },
  );
};
