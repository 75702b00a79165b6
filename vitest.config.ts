// SPDX-License-Identifier: MIT
// Test runner settings. Projects: "node" (everything under test/ but test/browser/), and the
// browser test suite (test/browser/) three times: "browser" in headless Chromium through
// Playwright, "firefox" in Debian's Firefox ESR over WebDriver BiDi, "webkit" in WebKitGTK's
// MiniBrowser on a private X server (test/runners/). Timeouts are generous because the machines
// are shared and noisy (no test asserts timing).
import { defineConfig, type TestProjectInlineConfiguration } from 'vitest/config';
import { playwright } from '@vitest/browser-playwright';
import { rangeServer } from './test/browser/range-server.js';
import { qemuImageServer } from './test/browser/qemu-image-server.js';
import { existsSync } from 'node:fs';
import { drivenBrowser } from './test/runners/vitest-provider.js';
import { FIREFOX_PATH } from './test/runners/firefox-bidi.js';
import { WEBKIT_BROWSER_PATH, XVFB_PATH } from './test/runners/xvfb.js';

/** Debian's Chromium (CI installs it); CHROMIUM_PATH overrides. */
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Flags this workplace needs: no sandbox as root, no background network on a closed network. */
const chromiumArgs = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** The browser test suite as project `name`, run by `provider` in `browser`. */
function browserProject(name: string, browser: string, provider: ReturnType<typeof playwright> | ReturnType<typeof drivenBrowser>): TestProjectInlineConfiguration {
  return {
    extends: true,
    // The HTTP Range resources the browser tests read and the images qemu-img makes for them (same origin as the test page).
    plugins: [rangeServer(), qemuImageServer()],
    test: {
      name,
      include: ['test/browser/**/*.test.ts'],
      browser: {
        enabled: true,
        headless: true,
        screenshotFailures: false,
        provider,
        instances: [{ browser }],
      },
    },
  };
}

const ci = process.env.CI !== undefined && !['', '0', 'false'].includes(process.env.CI.toLowerCase());

/**
 * The project when its engine is installed, or where CI is set (a missing engine then fails the
 * run); otherwise none, said loudly.
 */
function ifInstalled(project: TestProjectInlineConfiguration, binaries: string[], install: string): TestProjectInlineConfiguration[] {
  const missing = binaries.filter((path) => !existsSync(path));
  if (missing.length === 0 || ci) return [project];
  console.warn(`\n*** SKIPPING the ${project.test?.name} browser project: ${missing.join(', ')} not found (${install}). ***\n`);
  return [];
}

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: {
          name: 'node',
          include: ['test/**/*.test.ts'],
          exclude: ['test/browser/**', 'test/deno/**', '**/node_modules/**'],
        },
      },
      browserProject('browser', 'chromium', playwright({ launchOptions: { executablePath: chromiumPath, args: chromiumArgs } })),
      ...ifInstalled(browserProject('firefox', 'firefox', drivenBrowser('firefox')), [FIREFOX_PATH], 'apt-get install firefox-esr'),
      ...ifInstalled(browserProject('webkit', 'webkit', drivenBrowser('webkit')), [WEBKIT_BROWSER_PATH, XVFB_PATH], 'apt-get install libwebkit2gtk-4.1-0 xvfb'),
    ],
  },
});
