// SPDX-License-Identifier: MIT
// The OPFS benchmark page: starts the worker and exposes `window.opfsBench.run(request)`, which
// bench/opfs.bench.ts calls through Playwright, one run at a time.

import type { BenchRequest } from './opfs-worker.js';

const worker = new Worker(new URL('./opfs-worker.ts', import.meta.url), { type: 'module' });

function run(request: BenchRequest): Promise<unknown> {
  return new Promise((resolve, reject) => {
    worker.onmessage = (event: MessageEvent<{ ok: boolean; result?: unknown; error?: string }>) => {
      if (event.data.ok) resolve(event.data.result);
      else reject(new Error(event.data.error));
    };
    worker.onerror = (event) => reject(new Error(`worker failed: ${event.message}`));
    worker.postMessage(request);
  });
}

(window as unknown as { opfsBench: unknown }).opfsBench = { run };
