// SPDX-License-Identifier: MIT
// The loss window in a browser, end to end in headless Chromium driven from Node with Playwright:
// a page writes qcow2 images in OPFS with multiwrite (from a worker with sync access, and from
// the page with async OPFS) and leaves them open: no flush(), no close(). 2 s after the last
// write resolved the page is closed (the tab goes away, its worker with it). A new page reopens
// the images and compares every byte with the model; the files are exported for qemu-img check
// and compare.

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright';
import { createServer, type ViteDevServer } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qemuImg, requireQemu } from './helpers/qemu.js';
import { reloadModel } from './browser/pages/workload.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SEED = 0x0c105e;
const IMAGES = { worker: 'unclean-test/worker.qcow2', page: 'unclean-test/page.qcow2' } as const;
/** How long after the last write resolved the page is closed. */
const CLOSE_AFTER_MS = 2000;

function isCi(): boolean {
  const ci = process.env.CI;
  return ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false';
}

/** describe() when Chromium exists; otherwise a loud skip, or a failure where CI is set. */
function describeWithChromium(name: string, body: () => void): void {
  if (existsSync(CHROMIUM)) {
    describe(name, body);
  } else if (isCi()) {
    describe(name, () => {
      it('has Chromium (required where CI is set)', () => {
        throw new Error(`${name}: ${CHROMIUM} not found (apt-get install chromium, or set CHROMIUM_PATH)`);
      });
    });
  } else {
    console.warn(`\n*** SKIPPING ${name}: ${CHROMIUM} not found. Install chromium (or set CHROMIUM_PATH) to run it. ***\n`);
    describe.skip(name, body);
  }
}

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
    server = await createServer({
      root: resolve(import.meta.dirname, '..'),
      configFile: false,
      cacheDir: join(profile, 'vite-cache'),
      logLevel: 'error',
      server: { host: '127.0.0.1', port: 0, hmr: false },
      optimizeDeps: { noDiscovery: true, include: ['@assemblyscript/loader', 'fflate', 'fzstd'] },
    });
    await server.listen();
    const address = server.httpServer!.address();
    if (address === null || typeof address === 'string') throw new Error('the test server has no port');
    pageUrl = `http://127.0.0.1:${address.port}/test/browser/pages/unclean.html`;
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
      if (!requireQemu('OPFS unclean-close test: qemu-img check and compare of the exported images')) return;
      const raw = join(profile, 'model.raw');
      writeFileSync(raw, reloadModel(SEED));
      for (const where of ['worker', 'page'] as const) {
        const base64 = await reader.evaluate(
          (path) => (window as unknown as { qcow2Unclean: UncleanApi }).qcow2Unclean.exportFile(path), IMAGES[where]);
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
