// SPDX-License-Identifier: MIT
// Driven from Node in each engine (Chromium through Playwright, Firefox over WebDriver BiDi,
// WebKitGTK's MiniBrowser over its remote inspector; test/runners/): two tabs of one browser
// contend for one image in OPFS and in IndexedDB (the second gets IMAGE_LOCKED, or a read-only
// open when it asks, and the image once the first lets go); an overlay in OPFS and in IndexedDB
// whose write fails with an (injected) quota error fails typed and opens intact after a reload;
// and images written with multiwrite (OPFS from the page, OPFS from a worker in mode 'auto', IndexedDB) survive a reload and a
// restart on the same profile; the OPFS files then pass qemu-img check and compare against the
// model. In WebKitGTK the worker's OPFS image is written without sync access handles (the engine
// has none that work), through the async backend; and a private WebKit window, which has no
// usable OPFS, gets BACKEND_NOT_SUPPORTED from it and keeps the image in IndexedDB instead.
// Every call into a browser has its own time limit (test/runners/bounded.ts); each engine shows
// that a page call that never settles fails at it, named, and leaves the browser usable.

import { existsSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DrivenPage } from './runners/driven-browser.js';
import { ENGINES, type Engine } from './runners/engines.js';
import { launchWebKit } from './runners/webkit-inspector.js';
import { expectImagesMatchReloadModel } from './helpers/reload-images.js';
import { serveDrivenTestPage } from './helpers/driven-test-page.js';
import { describeRequiring, isCi } from './helpers/describe-requiring.js';
import { ENGINE_LABELS, step, withBrowser } from './runners/bounded.js';

const SEED = 0x7ab5;
/**
 * The budget of one case: every call into the browser has its own, shorter limit
 * (test/runners/bounded.ts), so a hang fails at that call, naming it and the step.
 */
const CASE_MS = 300_000;

/** Where the reload test keeps its images: OPFS from the page, OPFS from a worker, IndexedDB. */
const STORES = ['page', 'worker', 'indexeddb'] as const;

const testPage = serveDrivenTestPage('reload.html', 'qcow2Reload');

const api = (call: string) => `window.qcow2Reload.${call}`;

/**
 * Writes images with multiwrite into OPFS from the page, OPFS from a worker and IndexedDB, reads
 * them back after a reload and after a restart on the same profile, and hands the OPFS images to
 * qemu-img check and compare.
 */
async function reloadAndRestart(engine: Engine): Promise<void> {
  const profileDir = mkdtempSync(join(testPage.scratch(), `${engine.name}-profile-`));
  const path = (where: string) => `engines-${engine.name}/${where}-${SEED}.qcow2`;
  const kind = { page: 'opfs-async', worker: engine.workerKind, indexeddb: 'indexeddb' } as const;
  const run = (page: DrivenPage, phase: 'write' | 'read', where: string) =>
    page.evaluate<{ kind: string; firstMismatch?: number; guestWriteRequests?: number }>(api(`run(${JSON.stringify(phase)}, ${JSON.stringify(where)}, ${JSON.stringify(path(where))}, ${SEED})`));
  const expectIntact = async (page: DrivenPage, when: string) => {
    for (const where of STORES) await step(`read ${where} ${when}`, async () => expect(await run(page, 'read', where), `${where} ${when}`).toEqual({ kind: kind[where], firstMismatch: -1 }));
  };
  await withBrowser('before the restart', () => engine.launch({ profileDir }), async (browser) => {
    const page = await step('open the page', () => testPage.open(browser));
    for (const where of STORES) await step(`write ${where}`, async () => expect(await run(page, 'write', where), where).toMatchObject({ kind: kind[where], guestWriteRequests: 64 + 48 + 32 }));
    await step('reload', async () => {
      await page.reload();
      await testPage.ready(page);
    });
    await expectIntact(page, 'after a reload');
  });
  await withBrowser('after the restart', () => engine.launch({ profileDir }), async (browser) => {
    const page = await step('open the page after the restart', () => testPage.open(browser));
    await expectIntact(page, 'after a restart');
    await step('export for qemu-img', () => expectImagesMatchReloadModel(`${engine.name} reload test`, ['page', 'worker'],
      (where) => page.evaluate<string>(api(`exportFile(${JSON.stringify(path(where))})`)), SEED, profileDir));
  });
}

for (const engine of ENGINES) {
  const present = existsSync(engine.binary);
  if (!present && !isCi()) console.warn(`\n*** SKIPPING the ${engine.name} engine tests: ${engine.binary} not found (${engine.install}). ***\n`);
  const block = present || isCi() ? describe : describe.skip;
  block(`${engine.name}: driven tabs`, () => {
    it(`${engine.name}: a page call that never settles fails at its limit, naming the engine, the call and the step; the page still answers and the browser closes`, { timeout: CASE_MS }, async () => {
      if (!present) throw new Error(`${engine.binary} not found (${engine.install}); required where CI is set`);
      await withBrowser('a stuck call', () => engine.launch({ callLimitsMs: { evaluate: 3000 } }), async (browser) => {
        const page = await step('open the page', () => testPage.open(browser));
        await expect(step('wait for a promise that never settles', () => page.evaluate('new Promise(() => {})')))
          .rejects.toThrow(`${ENGINE_LABELS[engine.name]}: page.evaluate(new Promise(() => {})) did not finish within 3 s (step: wait for a promise that never settles)`);
        expect(await page.evaluate('6 * 7')).toBe(42);
      });
    });

    it(`${engine.name}: a second tab gets IMAGE_LOCKED for an image the first holds, read-only when it asks, and the image once released`, { timeout: CASE_MS }, async () => {
      if (!present) throw new Error(`${engine.binary} not found (${engine.install}); required where CI is set`);
      await withBrowser('two tabs', () => engine.launch(), async (browser) => {
        const first = await step('open the first tab', () => testPage.open(browser));
        const second = await step('open the second tab', () => testPage.open(browser));
        for (const store of ['opfs', 'indexeddb'] as const) {
          const name = `tabs-${engine.name}-${store}-${Date.now()}`;
          await step(`${store}: hold in the first tab`, async () =>
            expect(await first.evaluate(api(`hold(${JSON.stringify(store)}, ${JSON.stringify(name)})`)), `${store}: the first tab holds it`).toMatchObject({ writable: true }));
          await step(`${store}: try from the second tab`, async () => {
            expect(await second.evaluate(api(`tryOpen(${JSON.stringify(store)}, ${JSON.stringify(name)}, 'fail')`)), store).toEqual({ code: 'IMAGE_LOCKED' });
            expect(await second.evaluate(api(`tryOpen(${JSON.stringify(store)}, ${JSON.stringify(name)}, 'read-only')`)), store).toMatchObject({ writable: false, firstByte: 0x42 });
          });
          await step(`${store}: release in the first tab, open in the second`, async () => {
            await first.evaluate(api('release()'));
            expect(await second.evaluate(api(`tryOpen(${JSON.stringify(store)}, ${JSON.stringify(name)}, 'fail')`)), `${store} after release`).toMatchObject({ writable: true, firstByte: 0x42 });
          });
        }
      });
    });

    it(`${engine.name}: a quota error fails an overlay's write typed; after a reload the overlay opens intact (OPFS, IndexedDB)`, { timeout: CASE_MS }, async () => {
      if (!present) throw new Error(`${engine.binary} not found (${engine.install}); required where CI is set`);
      await withBrowser('quota', () => engine.launch(), async (browser) => {
        const page = await step('open the page', () => testPage.open(browser));
        const prefix = (store: string) => `engines-${engine.name}/quota-${store}-${Date.now()}`;
        const prefixes = { opfs: prefix('opfs'), indexeddb: prefix('indexeddb') };
        for (const store of ['opfs', 'indexeddb'] as const) {
          await step(`${store}: write into a full quota`, async () => {
            const failed = await page.evaluate<{ code: string; causedByQuota: boolean; closeCode: string }>(api(`failWithQuota(${JSON.stringify(store)}, ${JSON.stringify(prefixes[store])}, ${SEED})`));
            expect(failed.code, `${store}: the write or the flush after it failed typed`).toMatch(/^[A-Z][A-Z_]+$/);
            expect(failed.causedByQuota, `${store}: caused by QuotaExceededError`).toBe(true);
            expect(failed.closeCode, `${store}: close() closes or fails typed`).toMatch(/^([A-Z][A-Z_]+)?$/);
          });
        }
        await step('reload', async () => {
          await page.reload();
          await testPage.ready(page);
        });
        for (const store of ['opfs', 'indexeddb'] as const) {
          await step(`${store}: reopen after the reload`, async () =>
            expect(await page.evaluate(api(`reopenAfterQuota(${JSON.stringify(store)}, ${JSON.stringify(prefixes[store])}, ${SEED})`)), `${store} after a reload`)
              .toEqual({ corruptions: 0, flushedIntact: true, baseIntact: true }));
        }
      });
    });

    // Firefox (ESR 153) now and then never answers an OPFS call of the worker that reads an
    // image back after the reload or the restart: the open stays pending in the path lookup
    // (getDirectory, getDirectoryHandle, getFileHandle: calls that take no lock, so not an image
    // left locked) or in the sync-access probe, about 1 run in 10 on a loaded machine. A second
    // attempt, on a fresh profile, shows whether the images survive; the first attempt's error
    // is printed (a passing retry would hide it); a second failure fails the test.
    it(`${engine.name}: images written with multiwrite survive a reload and a restart (seed ${SEED})`, { timeout: CASE_MS, retry: 1 }, async () => {
      if (!present) throw new Error(`${engine.binary} not found (${engine.install}); required where CI is set`);
      await reloadAndRestart(engine).catch((err: unknown) => {
        console.error(`${engine.name} reload-and-restart attempt failed: ${err instanceof Error ? err.message : String(err)}`);
        throw err;
      });
    });
  });
}

const webkit = ENGINES.find((engine) => engine.name === 'webkit')!;
describeRequiring('webkit: a private window', existsSync(webkit.binary) ? undefined : `${webkit.binary} not found (${webkit.install})`, () => {
  it('webkit: in a private window (ephemeral website data) OPFS fails with BACKEND_NOT_SUPPORTED and IndexedDB takes the image', { timeout: CASE_MS }, async () => {
    await withBrowser('private window', () => launchWebKit({ privateBrowsing: true }), async (browser) => {
      const page = await step('open the page', () => testPage.open(browser));
      const name = `private-${Date.now()}`;
      await step('open in OPFS', async () => {
        const opfs = await page.evaluate<{ code?: string; message?: string }>(`${api(`hold('opfs', ${JSON.stringify(name)})`)}.then(() => ({}), (e) => ({ code: e.code, message: e.message }))`);
        expect(opfs.code, opfs.message).toBe('BACKEND_NOT_SUPPORTED');
        expect(opfs.message).toMatch(/getDirectory: UnknownError/);
      });
      await step('open in IndexedDB', async () => {
        expect(await page.evaluate(api(`hold('indexeddb', ${JSON.stringify(name)})`))).toEqual({ kind: 'indexeddb', writable: true });
        await page.evaluate(api('release()'));
      });
    });
  });
});
