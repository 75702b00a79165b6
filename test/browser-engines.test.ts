// SPDX-License-Identifier: MIT
// Driven from Node in each engine (Chromium through Playwright, Firefox over WebDriver BiDi,
// WebKitGTK over WebKitWebDriver; test/runners/): two tabs of one browser contend for one image
// (the second gets IMAGE_LOCKED, or a read-only open when it asks, and the image once the first
// lets go), and images written with multiwrite survive a reload (Firefox also a restart on the
// same profile: OPFS from the page and from a worker, IndexedDB; the OPFS files then pass
// qemu-img check and compare against the model). WebKit's automation session
// keeps website data in an ephemeral store, as a private window does, where OPFS is unusable, so
// there the images live in IndexedDB; its OPFS backends run in the webkit test project instead.

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright';
import type { ViteDevServer } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonExpression, type DrivenBrowser, type DrivenPage, type LaunchOptions } from './runners/driven-browser.js';
import { FIREFOX_PATH, launchFirefox } from './runners/firefox-bidi.js';
import { launchWebKit, WEBKIT_DRIVER_PATH } from './runners/webkit-webdriver.js';
import { qemuImg, requireQemu } from './helpers/qemu.js';
import { CHROMIUM, CHROMIUM_ARGS, startPageServer } from './helpers/chromium-pages.js';
import { isCi } from './helpers/describe-requiring.js';
import { reloadModel } from './browser/pages/workload.js';

const SEED = 0x7ab5;

/** Chromium through Playwright, as a DrivenBrowser. */
async function launchChromium(options: LaunchOptions = {}): Promise<DrivenBrowser> {
  const profile = options.profileDir ?? mkdtempSync(join(tmpdir(), 'qcow2-wasm-chromium-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  let first = context.pages()[0];
  return {
    engine: 'chromium' as DrivenBrowser['engine'],
    async openPage(url): Promise<DrivenPage> {
      const page = first ?? (await context.newPage());
      first = undefined;
      const driven: DrivenPage = {
        goto: async (to) => { await page.goto(to); },
        reload: async () => { await page.reload(); },
        evaluate: async <T>(expression: string) => JSON.parse(await page.evaluate(jsonExpression(expression)) as string) as T,
      };
      await driven.goto(url);
      return driven;
    },
    async close() {
      await context.close();
      if (options.profileDir === undefined) rmSync(profile, { recursive: true, force: true });
    },
  };
}

interface Engine {
  name: 'chromium' | 'firefox' | 'webkit';
  binary: string;
  install: string;
  launch: (options?: LaunchOptions) => Promise<DrivenBrowser>;
  /** Stores whose images outlive a reload in this engine's driven session. */
  reloadStores: Array<'page' | 'worker' | 'indexeddb'>;
  /** Whether a restart on the same profile keeps website data. */
  restarts: boolean;
  /** Stores the two-tab test contends for. */
  tabStores: Array<'opfs' | 'indexeddb'>;
}

const ENGINES: Engine[] = [
  { name: 'chromium', binary: CHROMIUM, install: 'apt-get install chromium', launch: launchChromium, reloadStores: ['indexeddb'], restarts: true, tabStores: ['opfs', 'indexeddb'] },
  { name: 'firefox', binary: FIREFOX_PATH, install: 'apt-get install firefox-esr', launch: launchFirefox, reloadStores: ['page', 'worker', 'indexeddb'], restarts: true, tabStores: ['opfs', 'indexeddb'] },
  { name: 'webkit', binary: WEBKIT_DRIVER_PATH, install: 'apt-get install webkit2gtk-driver xvfb', launch: launchWebKit, reloadStores: ['indexeddb'], restarts: false, tabStores: ['indexeddb'] },
];

let server: ViteDevServer | undefined;
let pageUrl = '';
let scratch = '';

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'qcow2-wasm-engines-'));
  ({ server, pageUrl } = await startPageServer(scratch, 'reload.html'));
}, 120_000);

afterAll(async () => {
  await server?.close();
  if (scratch !== '') rmSync(scratch, { recursive: true, force: true });
});

/** Opens the test page in a new tab and waits for its API. */
async function openTestPage(browser: DrivenBrowser): Promise<DrivenPage> {
  const page = await browser.openPage(pageUrl);
  await waitForApi(page);
  return page;
}

async function waitForApi(page: DrivenPage): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!(await page.evaluate<boolean>(`'qcow2Reload' in window`))) {
    if (Date.now() > deadline) throw new Error('the test page did not load its API within 60 s');
    await new Promise((r) => setTimeout(r, 200));
  }
}

const api = (call: string) => `window.qcow2Reload.${call}`;

for (const engine of ENGINES) {
  const present = existsSync(engine.binary);
  if (!present && !isCi()) console.warn(`\n*** SKIPPING the ${engine.name} engine tests: ${engine.binary} not found (${engine.install}). ***\n`);
  const block = present || isCi() ? describe : describe.skip;
  block(`${engine.name}: driven tabs`, () => {
    it(`${engine.name}: a second tab gets IMAGE_LOCKED for an image the first holds, read-only when it asks, and the image once released`, async () => {
      if (!present) throw new Error(`${engine.binary} not found (${engine.install}); required where CI is set`);
      const browser = await engine.launch();
      try {
        const first = await openTestPage(browser);
        const second = await openTestPage(browser);
        for (const store of engine.tabStores) {
          const name = `tabs-${engine.name}-${store}-${Date.now()}`;
          expect(await first.evaluate(api(`hold(${JSON.stringify(store)}, ${JSON.stringify(name)})`)), `${store}: the first tab holds it`).toMatchObject({ writable: true });
          expect(await second.evaluate(api(`tryOpen(${JSON.stringify(store)}, ${JSON.stringify(name)}, 'fail')`)), store).toEqual({ code: 'IMAGE_LOCKED' });
          expect(await second.evaluate(api(`tryOpen(${JSON.stringify(store)}, ${JSON.stringify(name)}, 'read-only')`)), store).toMatchObject({ writable: false, firstByte: 0x42 });
          await first.evaluate(api('release()'));
          expect(await second.evaluate(api(`tryOpen(${JSON.stringify(store)}, ${JSON.stringify(name)}, 'fail')`)), `${store} after release`).toMatchObject({ writable: true, firstByte: 0x42 });
        }
      } finally {
        await browser.close();
      }
    }, 240_000);

    it(`${engine.name}: images written with multiwrite survive a reload${engine.restarts ? ' and a restart' : ''} (seed ${SEED})`, async () => {
      if (!present) throw new Error(`${engine.binary} not found (${engine.install}); required where CI is set`);
      const profileDir = mkdtempSync(join(scratch, `${engine.name}-profile-`));
      const path = (where: string) => `engines-${engine.name}/${where}-${SEED}.qcow2`;
      const run = (page: DrivenPage, phase: 'write' | 'read', where: string) =>
        page.evaluate<{ kind: string; firstMismatch?: number; guestWriteRequests?: number }>(api(`run(${JSON.stringify(phase)}, ${JSON.stringify(where)}, ${JSON.stringify(path(where))}, ${SEED})`));
      const expectIntact = async (page: DrivenPage, when: string) => {
        for (const where of engine.reloadStores) expect(await run(page, 'read', where), `${where} ${when}`).toMatchObject({ firstMismatch: -1 });
      };
      let browser = await engine.launch({ profileDir });
      try {
        const page = await openTestPage(browser);
        for (const where of engine.reloadStores) expect(await run(page, 'write', where), where).toMatchObject({ guestWriteRequests: 64 + 48 + 32 });
        await page.reload();
        await waitForApi(page);
        await expectIntact(page, 'after a reload');
      } finally {
        await browser.close();
      }
      if (!engine.restarts) return;
      browser = await engine.launch({ profileDir });
      try {
        const page = await openTestPage(browser);
        await expectIntact(page, 'after a restart');
        const opfsStores = engine.reloadStores.filter((where) => where !== 'indexeddb');
        if (opfsStores.length === 0 || !requireQemu(`${engine.name} reload test: qemu-img check and compare of the exported images`)) return;
        const raw = join(profileDir, 'model.raw');
        writeFileSync(raw, reloadModel(SEED));
        for (const where of opfsStores) {
          const file = join(profileDir, `${where}.qcow2`);
          writeFileSync(file, Buffer.from(await page.evaluate<string>(api(`exportFile(${JSON.stringify(path(where))})`)), 'base64'));
          const check = qemuImg(['check', file]);
          expect(check.code, `qemu-img check of the ${where} image: ${check.stdout}${check.stderr}`).toBe(0);
          const compare = qemuImg(['compare', '-f', 'qcow2', '-F', 'raw', file, raw]);
          expect(compare.code, `qemu-img compare of the ${where} image with the model: ${compare.stdout}${compare.stderr}`).toBe(0);
        }
      } finally {
        await browser.close();
      }
    }, 300_000);
  });
}
