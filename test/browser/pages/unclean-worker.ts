// SPDX-License-Identifier: MIT
// The worker of the unclean-close test page: writes the reload workload into a new OPFS qcow2
// image (OPFS mode 'auto': sync access where the engine has working sync access handles),
// reports, and keeps the image open (no flush, no close) until the page that owns the worker is
// closed.

import { openOpfsBackend, Qcow2Image } from '../../../bindings/browser.js';
import { RELOAD_VIRTUAL_BYTES, reloadWorkload } from './workload.js';

const scope = self as unknown as { onmessage: ((event: MessageEvent<{ path: string; seed: number }>) => void) | null; postMessage(message: unknown): void };
let image: Qcow2Image | undefined;
scope.onmessage = (event) => {
  const { path, seed } = event.data;
  (async () => {
    const backend = await openOpfsBackend(path, { create: true, writable: true, mode: 'auto' });
    await backend.truncate!(0);
    image = await Qcow2Image.create(backend, { virtualSize: RELOAD_VIRTUAL_BYTES });
    for (const batch of reloadWorkload(seed)) await Promise.all(image.multiwrite(batch));
    return backend.kind;
  })().then(
    (kind) => scope.postMessage({ ok: true, kind }),
    (err: unknown) => scope.postMessage({ ok: false, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) }),
  );
};
