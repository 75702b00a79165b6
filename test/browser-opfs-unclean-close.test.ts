// SPDX-License-Identifier: MIT
// The loss window in a browser, end to end in headless Chromium driven from Node with Playwright:
// a page writes qcow2 images in OPFS with multiwrite (from a worker with sync access, and from
// the page with async OPFS) and leaves them open: no flush(), no close(). 2 s after the last
// write resolved the page is closed (the tab goes away, its worker with it). A new page reopens
// the images and compares every byte with the model; the files are exported for qemu-img check
// and compare.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright';
import type { ViteDevServer } from 'vite';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CHROMIUM, CHROMIUM_ARGS, describeWithChromium, startPageServer } from './helpers/chromium-pages.js';
import { expectImagesMatchReloadModel } from './helpers/reload-images.js';

const SEED = 0x0c105e;
const IMAGES = { worker: 'unclean-test/worker.qcow2', page: 'unclean-test/page.qcow2' } as const;
/** How long after the last write resolved the page is closed. */
const CLOSE_AFTER_MS = 2000;

type Where = 'worker' | 'page';
interface UncleanApi {
  write(where: Where, path: string, seed: number): Promise<string>;
  read(where: Where, path: string, seed: number): Promise<{ kind: string; firstMismatch: number }>;
  exportFile(path: string): Promise<string>;
}

describeWithChromium('OPFS images survive closing the page without close() (Chromium)', () => {
  let server: ViteDevServer;
  let profile: string;
  let pageUrl: string;

  beforeAll(async () => {
    profile = mkdtempSync(join(tmpdir(), 'qcow2-wasm-unclean-'));
    ({ server, pageUrl } = await startPageServer(profile, 'unclean.html'));
  });

  afterAll(async () => {
    await server?.close();
    if (profile !== undefined) rmSync(profile, { recursive: true, force: true });
  });

  const openPage = async (context: BrowserContext): Promise<Page> => {
    const page = await context.newPage();
    page.on('pageerror', (err) => console.error(`page error: ${err.message}`));
    await page.goto(pageUrl);
    await page.waitForFunction(() => 'qcow2Unclean' in window, undefined, { timeout: 60_000 });
    return page;
  };

  const writeIn = (page: Page, where: Where): Promise<string> =>
    page.evaluate(([w, path, seed]) => (window as unknown as { qcow2Unclean: UncleanApi }).qcow2Unclean.write(w, path, seed),
      [where, IMAGES[where], SEED] as const);
  const readIn = (page: Page, where: Where): Promise<{ kind: string; firstMismatch: number }> =>
    page.evaluate(([w, path, seed]) => (window as unknown as { qcow2Unclean: UncleanApi }).qcow2Unclean.read(w, path, seed),
      [where, IMAGES[where], SEED] as const);

  it(`writes, closes the page 2 s later without close(), reopens intact (seed ${SEED})`, async () => {
    const context = await chromium.launchPersistentContext(join(profile, 'chromium'), { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    try {
      const writer = await openPage(context);
      expect(await writeIn(writer, 'worker')).toBe('opfs-sync');
      expect(await writeIn(writer, 'page')).toBe('opfs-async');
      await new Promise((resolve) => setTimeout(resolve, CLOSE_AFTER_MS));
      await writer.close({ runBeforeUnload: false });

      const reader = await openPage(context);
      for (const where of ['worker', 'page'] as const) {
        expect(await readIn(reader, where), `${where} image after the page was closed`).toEqual({
          kind: where === 'worker' ? 'opfs-sync' : 'opfs-async',
          firstMismatch: -1,
        });
      }
      await expectImagesMatchReloadModel('OPFS unclean-close test', ['worker', 'page'],
        (where) => reader.evaluate((path) => (window as unknown as { qcow2Unclean: UncleanApi }).qcow2Unclean.exportFile(path), IMAGES[where as Where]), SEED, profile);
    } finally {
      await context.close();
    }
  }, 240_000);
});
