// SPDX-License-Identifier: MIT
// A test page of test/browser/pages/ for the end-to-end tests that drive browsers from Node
// (test/runners/): served by a Vite dev server for the test file's duration, opened in a new tab,
// ready once the page has set up its API object on `window`.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ViteDevServer } from 'vite';
import { afterAll, beforeAll } from 'vitest';
import { waitUntil, type DrivenBrowser, type DrivenPage } from '../runners/driven-browser.js';
import { startPageServer } from './chromium-pages.js';

/** The served page: open it in a browser, wait for its API after a reload, and a scratch folder. */
export interface DrivenTestPage {
  /** Opens the page in a new tab of `browser` and resolves once its API is there. */
  open(browser: DrivenBrowser): Promise<DrivenPage>;
  /** Resolves once `page` (after a load or reload) has set up its API. */
  ready(page: DrivenPage): Promise<void>;
  /** A temporary folder of the test file (removed after it). */
  scratch(): string;
}

/**
 * Serves test/browser/pages/`file` from beforeAll to afterAll of the calling test file; the page
 * sets up `window[api]` when it is ready.
 */
export function serveDrivenTestPage(file: string, api: string): DrivenTestPage {
  let server: ViteDevServer | undefined;
  let pageUrl = '';
  let scratch = '';
  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'qcow2-wasm-pages-'));
    ({ server, pageUrl } = await startPageServer(scratch, file));
  }, 120_000);
  afterAll(async () => {
    await server?.close();
    if (scratch !== '') rmSync(scratch, { recursive: true, force: true });
  });
  const ready = (page: DrivenPage): Promise<void> =>
    waitUntil(`the test page to set up window.${api}`, () => page.evaluate<boolean>(`${JSON.stringify(api)} in window`), 60_000);
  return {
    async open(browser) {
      const page = await browser.openPage(pageUrl);
      await ready(page);
      return page;
    },
    ready,
    scratch: () => scratch,
  };
}
