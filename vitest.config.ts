// SPDX-License-Identifier: MIT
// Test runner settings. Two projects: "node" (everything under test/ but test/browser/) and
// "browser" (test/browser/, run inside headless Chromium through Playwright). Timeouts are
// generous because the machines are shared and noisy (no test asserts timing).
import { defineConfig } from 'vitest/config';
import { playwright } from '@vitest/browser-playwright';
import { rangeServer } from './test/browser/range-server.js';

/** Debian's Chromium (CI installs it); CHROMIUM_PATH overrides. */
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Flags this workplace needs: no sandbox as root, no background network on a closed network. */
const chromiumArgs = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

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
      {
        extends: true,
        // The HTTP Range resources the browser tests read (same origin as the test page).
        plugins: [rangeServer()],
        test: {
          name: 'browser',
          include: ['test/browser/**/*.test.ts'],
          browser: {
            enabled: true,
            headless: true,
            screenshotFailures: false,
            provider: playwright({ launchOptions: { executablePath: chromiumPath, args: chromiumArgs } }),
            instances: [{ browser: 'chromium' }],
          },
        },
      },
    ],
  },
});
