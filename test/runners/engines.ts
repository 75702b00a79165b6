// SPDX-License-Identifier: MIT
// The three engines the end-to-end page tests drive from Node, as DrivenBrowsers: Chromium
// through Playwright, Firefox over WebDriver BiDi, WebKitGTK's MiniBrowser over its inspector.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright';
import { CHROMIUM, CHROMIUM_ARGS } from '../helpers/chromium-pages.js';
import { boundedBrowser, CALL_LIMITS_MS } from './bounded.js';
import { jsonExpression, type DrivenBrowser, type DrivenPage, type LaunchOptions } from './driven-browser.js';
import { FIREFOX_PATH, launchFirefox } from './firefox-bidi.js';
import { launchWebKit } from './webkit-inspector.js';
import { WEBKIT_BROWSER_PATH } from './xvfb.js';

/**
 * Chromium through Playwright (headless, on a persistent profile), as a DrivenBrowser whose calls
 * are bounded (bounded.ts).
 */
export async function launchChromium(options: LaunchOptions = {}): Promise<DrivenBrowser> {
  const profile = options.profileDir ?? mkdtempSync(join(tmpdir(), 'qcow2-wasm-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: options.callLimitsMs?.launch ?? CALL_LIMITS_MS.launch,
  });
  return boundedBrowser({
    engine: 'chromium',
    async openPage(url): Promise<DrivenPage> {
      const page = await context.newPage();
      page.on('pageerror', (err) => console.error(`page error: ${err.message}`));
      const driven: DrivenPage = {
        goto: async (to) => { await page.goto(to, { timeout: CALL_LIMITS_MS.navigate }); },
        reload: async () => { await page.reload({ timeout: CALL_LIMITS_MS.navigate }); },
        evaluate: async <T>(expression: string) => JSON.parse(await page.evaluate(jsonExpression(expression)) as string) as T,
        close: () => page.close({ runBeforeUnload: false }),
      };
      await driven.goto(url);
      return driven;
    },
    async close() {
      await context.close();
      if (options.profileDir === undefined) rmSync(profile, { recursive: true, force: true });
    },
  }, options.callLimitsMs);
}

/** One engine of the end-to-end tests. */
export interface Engine {
  name: DrivenBrowser['engine'];
  /** The file whose presence says the engine is installed. */
  binary: string;
  /** How to install it (Debian). */
  install: string;
  launch: (options?: LaunchOptions) => Promise<DrivenBrowser>;
  /**
   * The backend kind an OPFS image opened in a worker gets (mode 'auto'): WebKitGTK's OPFS has
   * no working sync access handles, so its workers use the async backend.
   */
  workerKind: 'opfs-sync' | 'opfs-async';
}

export const ENGINES: readonly Engine[] = [
  { name: 'chromium', binary: CHROMIUM, install: 'apt-get install chromium', launch: launchChromium, workerKind: 'opfs-sync' },
  { name: 'firefox', binary: FIREFOX_PATH, install: 'apt-get install firefox-esr', launch: launchFirefox, workerKind: 'opfs-sync' },
  { name: 'webkit', binary: WEBKIT_BROWSER_PATH, install: 'apt-get install libwebkit2gtk-4.1-0 xvfb', launch: launchWebKit, workerKind: 'opfs-async' },
];
