// SPDX-License-Identifier: MIT
// The reload test page: exposes `window.qcow2Reload`, which the Node side (the Chromium, Firefox
// and WebKit drivers) calls to run a phase in the page itself (async OPFS, IndexedDB) or in a
// worker (OPFS mode 'auto': sync access where the engine has it), to export an OPFS file's bytes
// for qemu-img, to fail an overlay's write with a quota error and reopen it after a reload
// (quota-phase.ts), and to hold and try images for the two-tab tests (tabs.ts).
import { exportOpfsFile, phaseInWorker } from './page-tools.js';
import { failWithQuota, reopenAfterQuota } from './quota-phase.js';
import { readPhase, writePhase } from './roundtrip.js';
import { tabs } from './tabs.js';

(window as unknown as { qcow2Reload: unknown }).qcow2Reload = {
  run(phase: 'write' | 'read', where: 'page' | 'worker' | 'indexeddb', path: string, seed: number): Promise<unknown> {
    if (where === 'worker') return phaseInWorker({ phase, path, seed });
    const store = where === 'page' ? 'async' : 'indexeddb';
    return phase === 'write' ? writePhase(path, store, seed) : readPhase(path, store, seed);
  },
  exportFile: exportOpfsFile,
  failWithQuota,
  reopenAfterQuota,
  ...tabs,
};
