// SPDX-License-Identifier: MIT
// Driving Debian's Chromium from Node with Playwright for end-to-end page tests: where it is, the
// flags this workplace needs, a describe() that skips loudly (or fails in CI) without it, and a
// Vite dev server for the test pages under test/browser/pages/.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createServer, type Plugin, type ViteDevServer } from 'vite';
import { describeRequiring } from './describe-requiring.js';

/** Debian's Chromium; CHROMIUM_PATH overrides. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Flags for running as root on a closed network. */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Why Chromium cannot run here (and how to fix it), or undefined when it can. */
export function missingChromium(): string | undefined {
  return existsSync(CHROMIUM) ? undefined : `${CHROMIUM} not found (apt-get install chromium, or set CHROMIUM_PATH)`;
}

/** describe() when Chromium exists; otherwise a loud skip, or a failure where CI is set. */
export function describeWithChromium(name: string, body: () => void): void {
  describeRequiring(name, missingChromium(), body);
}

/** Options of startPageServer. */
export interface PageServerOptions {
  /** Vite plugins, e.g. test/browser/range-server.ts for resources the page fetches. */
  plugins?: Plugin[];
  /** Dependencies the page imports besides the library's (pre-bundled before the page loads). */
  dependencies?: string[];
}

/**
 * Starts a Vite dev server over the repository (its cache in `scratchDir`) and resolves with it
 * and the URL of test/browser/pages/`page`. The library's dependencies are pre-bundled up front:
 * discovering them while a page runs would make Vite reload the page in the middle of a phase.
 */
export async function startPageServer(scratchDir: string, page: string, options: PageServerOptions = {}): Promise<{ server: ViteDevServer; pageUrl: string }> {
  const server = await createServer({
    root: resolve(import.meta.dirname, '..', '..'),
    configFile: false,
    cacheDir: join(scratchDir, 'vite-cache'),
    logLevel: 'error',
    plugins: options.plugins ?? [],
    server: { host: '127.0.0.1', port: 0, hmr: false },
    optimizeDeps: { noDiscovery: true, include: ['@assemblyscript/loader', 'fflate', 'fzstd', ...(options.dependencies ?? [])] },
  });
  await server.listen();
  const address = server.httpServer!.address();
  if (address === null || typeof address === 'string') throw new Error('the test server has no port');
  return { server, pageUrl: `http://127.0.0.1:${address.port}/test/browser/pages/${page}` };
}
