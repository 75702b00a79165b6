// SPDX-License-Identifier: MIT
// Driving Debian's Chromium from Node with Playwright for end-to-end page tests: where it is, the
// flags this workplace needs, a describe() that skips loudly (or fails in CI) without it, and a
// Vite dev server for the test pages under test/browser/pages/.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createServer, type ViteDevServer } from 'vite';
import { describe, it } from 'vitest';

/** Debian's Chromium; CHROMIUM_PATH overrides. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Flags for running as root on a closed network. */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function isCi(): boolean {
  const ci = process.env.CI;
  return ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false';
}

/** describe() when Chromium exists; otherwise a loud skip, or a failure where CI is set. */
export function describeWithChromium(name: string, body: () => void): void {
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

/**
 * Starts a Vite dev server over the repository (its cache in `scratchDir`) and resolves with it
 * and the URL of test/browser/pages/`page`. The library's dependencies are pre-bundled up front:
 * discovering them while a page runs would make Vite reload the page in the middle of a phase.
 */
export async function startPageServer(scratchDir: string, page: string): Promise<{ server: ViteDevServer; pageUrl: string }> {
  const server = await createServer({
    root: resolve(import.meta.dirname, '..', '..'),
    configFile: false,
    cacheDir: join(scratchDir, 'vite-cache'),
    logLevel: 'error',
    server: { host: '127.0.0.1', port: 0, hmr: false },
    optimizeDeps: { noDiscovery: true, include: ['@assemblyscript/loader', 'fflate', 'fzstd'] },
  });
  await server.listen();
  const address = server.httpServer!.address();
  if (address === null || typeof address === 'string') throw new Error('the test server has no port');
  return { server, pageUrl: `http://127.0.0.1:${address.port}/test/browser/pages/${page}` };
}
