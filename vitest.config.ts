// SPDX-License-Identifier: MIT
// Test runner settings. Projects: "node" (everything under test/ but test/browser/), and the
// browser test suite (test/browser/) three times: "browser" in headless Chromium through
// Playwright, "firefox" in Debian's Firefox ESR over WebDriver BiDi, "webkit" in WebKitGTK's
// MiniBrowser over WebKitWebDriver (test/runners/). Timeouts are generous because the machines
// are shared and noisy (no test asserts timing).
import { defineConfig, type TestProjectInlineConfiguration } from 'vitest/config';
import { playwright } from '@vitest/browser-playwright';
import { rangeServer } from './test/browser/range-server.js';
import { drivenBrowser } from './test/runners/vitest-provider.js';

/** Debian's Chromium (CI installs it); CHROMIUM_PATH overrides. */
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Flags this workplace needs: no sandbox as root, no background network on a closed network. */
const chromiumArgs = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** The browser test suite as project `name`, run by `provider` in `browser`. */
function browserProject(name: string, browser: string, provider: ReturnType<typeof playwright> | ReturnType<typeof drivenBrowser>): TestProjectInlineConfiguration {
  return {
    extends: true,
    // The HTTP Range resources the browser tests read (same origin as the test page).
    plugins: [rangeServer()],
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
      browserProject('firefox', 'firefox', drivenBrowser('firefox')),
      browserProject('webkit', 'webkit', drivenBrowser('webkit')),
    ],
  },
});
