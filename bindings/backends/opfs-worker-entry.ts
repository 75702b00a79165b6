// SPDX-License-Identifier: MIT
// The dedicated worker behind the 'worker' OPFS mode (opfs-worker-host.ts): it opens one OPFS
// file with a sync access handle and runs each Backend call the page sends, answering with the
// result or the error's name, code and message. Loaded by URL; exports nothing.

import type { Backend } from './backend.js';
import { openOpfsBackend } from './opfs.js';
import type { WorkerBackendRequest, WorkerBackendResponse } from './opfs-worker-protocol.js';

let backend: Backend | undefined;

async function serve(request: WorkerBackendRequest): Promise<{ value: unknown; transfer: Transferable[] }> {
  if (request.op === 'open') {
    backend = await openOpfsBackend(request.path, { ...request.options, mode: 'sync-access' });
    return { value: { capabilities: backend.capabilities, limits: backend.limits }, transfer: [] };
  }
  const open = backend!;
  switch (request.op) {
    case 'getSize':
      return { value: await open.getSize(), transfer: [] };
    case 'flush':
      return { value: await open.flush(), transfer: [] };
    case 'close':
      return { value: await open.close(), transfer: [] };
    case 'preadv': {
      const target = new Uint8Array(request.length);
      await open.preadv(request.position, [target]);
      return { value: target, transfer: [target.buffer] };
    }
    case 'pwritev':
      return { value: await open.pwritev(request.position, [request.data]), transfer: [] };
    case 'truncate':
      return { value: await open.truncate!(request.size), transfer: [] };
  }
}

const scope = self as unknown as {
  onmessage: ((event: MessageEvent<WorkerBackendRequest>) => void) | null;
  postMessage(message: WorkerBackendResponse, transfer: Transferable[]): void;
};
scope.onmessage = (event) => {
  const request = event.data;
  serve(request).then(
    ({ value, transfer }) => scope.postMessage({ id: request.id, ok: true, value }, transfer),
    (err: unknown) => {
      const e = err as { name?: string; code?: string; message?: string; cause?: { name?: string } };
      scope.postMessage({ id: request.id, ok: false, error: { code: e?.code, message: e?.message ?? String(err), causeName: e?.cause?.name } }, []);
    },
  );
};
