// SPDX-License-Identifier: MIT
// A vitest browser provider that runs the browser test project in Firefox (over WebDriver BiDi)
// or WebKitGTK (a plain MiniBrowser: an automation session would make OPFS unusable), where
// Playwright's own builds of those engines are not available. It opens vitest's test page and
// lets it run; the page reports to vitest itself.

import { defineBrowserProvider } from '@vitest/browser';
import type { DrivenBrowser } from './driven-browser.js';
import { launchFirefox } from './firefox-bidi.js';
import { openInMiniBrowser } from './xvfb.js';

type Engine = Exclude<DrivenBrowser['engine'], 'chromium'>;

class DrivenBrowserProvider {
  readonly name: string;
  readonly supportsParallelism = false;
  private readonly open: Array<Promise<{ close(): Promise<void> }>> = [];
  private firefox: Promise<DrivenBrowser> | undefined;

  constructor(private readonly engine: Engine) {
    this.name = `driven-${engine}`;
  }

  getCommandsContext(): Record<string, unknown> {
    return {};
  }

  async openPage(_sessionId: string, url: string): Promise<void> {
    if (this.engine === 'webkit') {
      const opened = openInMiniBrowser(url);
      this.open.push(opened);
      await opened;
      return;
    }
    if (this.firefox === undefined) {
      this.firefox = launchFirefox();
      this.open.push(this.firefox);
    }
    await (await this.firefox).openPage(url);
  }

  async close(): Promise<void> {
    const open = this.open.splice(0);
    this.firefox = undefined;
    await Promise.all(open.map(async (browser) => (await browser).close()));
  }
}

/** The provider for `engine`: use as `browser.provider` with `instances: [{ browser: engine }]`. */
export function drivenBrowser(engine: Engine) {
  return defineBrowserProvider({
    name: `driven-${engine}`,
    supportedBrowser: [engine],
    options: {},
    providerFactory: () => new DrivenBrowserProvider(engine),
  });
}
