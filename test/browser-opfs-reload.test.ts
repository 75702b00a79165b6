// SPDX-License-Identifier: MIT
// End to end in headless Chromium, driven from Node with Playwright (vitest's browser mode cannot
// reload its own page): a page creates qcow2 images in OPFS and writes them with multiwrite, from
// a worker (sync access) and from the page (async); the page is reloaded, and then the whole
// browser restarted on the same profile, and each time the images are reopened and every byte
// compared with the model. The image file is then exported for qemu-img check and compare.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright';
import type { ViteDevServer } from 'vite';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CHROMIUM, CHROMIUM_ARGS, describeWithChromium, startPageServer } from './helpers/chromium-pages.js';
import { qemuImg, requireQemu } from './helpers/qemu.js';
import { reloadModel } from './browser/pages/workload.js';

const SEED = 0x7e10ad;
const IMAGES = { worker: 'reload-test/worker.qcow2', page: 'reload-test/page.qcow2' } as const;

type Where = 'worker' | 'page';
interface ReloadApi {
  run(phase: 'write' | 'read', where: Where, path: string, seed: number): Promise<unknown>;
  exportFile(path: string): Promise<string>;
}

describeWithChromium('OPFS images survive a page reload and a browser restart (Chromium)', () => {
  let server: ViteDevServer;
  let profile: string;
  let pageUrl: string;

  beforeAll(async () => {
    profile = mkdtempSync(join(tmpdir(), 'qcow2-wasm-reload-'));
    ({ server, pageUrl } = await startPageServer(profile, 'reload.html'));
  });

  afterAll(async () => {
    await server?.close();
    if (profile !== undefined) rmSync(profile, { recursive: true, force: true });
  });

  const launch = (): Promise<BrowserContext> =>
    chromium.launchPersistentContext(join(profile, 'chromium'), { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });

  const openPage = async (context: BrowserContext): Promise<Page> => {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (err) => console.error(`page error: ${err.message}`));
    await page.goto(pageUrl);
    await page.waitForFunction(() => 'qcow2Reload' in window, undefined, { timeout: 60_000 });
    return page;
  };

  const run = (page: Page, phase: 'write' | 'read', where: Where): Promise<unknown> =>
    page.evaluate(
      ([p, w, path, seed]) => (window as unknown as { qcow2Reload: ReloadApi }).qcow2Reload.run(p, w, path, seed),
      [phase, where, IMAGES[where], SEED] as const,
    );

  const expectIntact = async (page: Page, when: string): Promise<void> => {
    for (const where of ['worker', 'page'] as const) {
      expect(await run(page, 'read', where), `${where} image ${when}`).toEqual({
        kind: where === 'worker' ? 'opfs-sync' : 'opfs-async',
        firstMismatch: -1,
      });
    }
  };

  it(`writes with multiwrite, reloads, restarts and reads back (seed ${SEED})`, async () => {
    let context = await launch();
    try {
      const page = await openPage(context);
      for (const where of ['worker', 'page'] as const) {
        const report = (await run(page, 'write', where)) as { kind: string; guestWriteRequests: number; hostWriteCalls: number };
        expect(report.kind).toBe(where === 'worker' ? 'opfs-sync' : 'opfs-async');
        expect(report.guestWriteRequests).toBe(64 + 48 + 32);
      }
      await page.reload();
      await page.waitForFunction(() => 'qcow2Reload' in window, undefined, { timeout: 60_000 });
      await expectIntact(page, 'after a reload');
    } finally {
      await context.close();
    }

    context = await launch();
    try {
      const page = await openPage(context);
      await expectIntact(page, 'after a browser restart');
      if (!requireQemu('OPFS reload test: qemu-img check and compare of the exported images')) return;
      const raw = join(profile, 'model.raw');
      writeFileSync(raw, reloadModel(SEED));
      for (const where of ['worker', 'page'] as const) {
        const base64 = (await page.evaluate(
          (path) => (window as unknown as { qcow2Reload: ReloadApi }).qcow2Reload.exportFile(path),
          IMAGES[where],
        )) as string;
        const file = join(profile, `${where}.qcow2`);
        writeFileSync(file, Buffer.from(base64, 'base64'));
        const check = qemuImg(['check', file]);
        expect(check.code, `qemu-img check of the ${where} image: ${check.stdout}${check.stderr}`).toBe(0);
        const compare = qemuImg(['compare', '-f', 'qcow2', '-F', 'raw', file, raw]);
        expect(compare.code, `qemu-img compare of the ${where} image with the model: ${compare.stdout}${compare.stderr}`).toBe(0);
      }
    } finally {
      await context.close();
    }
  }, 240_000);
});
