// SPDX-License-Identifier: MIT
// WebKit (Debian's WebKitGTK MiniBrowser) driven over classic WebDriver by WebKitWebDriver, on a
// private X server (xvfb.ts).

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { startXvfb, stop, WEBKIT_BROWSER_PATH, WEBKIT_FEATURES } from './xvfb.js';
import { jsonExpression, waitUntil, type DrivenBrowser, type DrivenPage, type LaunchOptions } from './driven-browser.js';

/** Debian's WebKitWebDriver (package webkit2gtk-driver); WEBKIT_DRIVER_PATH overrides. */
export const WEBKIT_DRIVER_PATH = process.env.WEBKIT_DRIVER_PATH ?? '/usr/bin/WebKitWebDriver';

/** A free TCP port on 127.0.0.1. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (address !== null && typeof address === 'object' ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * Launches MiniBrowser under WebKitWebDriver on a private Xvfb. `profileDir` is ignored: an
 * automation session keeps website data in an ephemeral store, as a private window does, where
 * OPFS is unusable (getDirectory rejects with UnknownError) and IndexedDB lives in memory. Tests
 * that need OPFS open MiniBrowser directly (openInMiniBrowser in xvfb.ts).
 */
export async function launchWebKit(_options: LaunchOptions = {}): Promise<DrivenBrowser> {
  const xvfb = await startXvfb();
  const port = await freePort();
  const driver = spawn(WEBKIT_DRIVER_PATH, [`--port=${port}`, '--host=127.0.0.1'], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DISPLAY: xvfb.display },
  });
  let log = '';
  driver.stdout!.on('data', (c: Buffer) => { log += c.toString('utf8'); });
  driver.stderr!.on('data', (c: Buffer) => { log += c.toString('utf8'); });
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitUntil('WebKitWebDriver to listen', async () => fetch(`${base}/status`).then((r) => r.ok, () => false), 30_000);
  } catch (err) {
    await stop(driver);
    await stop(xvfb.child);
    throw new Error(`${(err as Error).message}\n${log.slice(-2000)}`);
  }

  const call = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const response = await fetch(`${base}${path}`, {
      method, headers: { 'Content-Type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const reply = (await response.json()) as { value: T & { error?: string; message?: string } };
    if (!response.ok) throw new Error(`WebDriver ${method} ${path}: ${reply.value?.error}: ${reply.value?.message}`);
    return reply.value;
  };

  const session = await call<{ sessionId: string }>('POST', '/session', {
    capabilities: { alwaysMatch: { 'webkitgtk:browserOptions': { binary: WEBKIT_BROWSER_PATH, args: ['--automation', `--features=${WEBKIT_FEATURES}`] } } },
  });
  const root = `/session/${session.sessionId}`;
  let current = await call<string>('GET', `${root}/window`);
  let firstWindow: string | undefined = current;
  const focus = async (handle: string): Promise<void> => {
    if (current !== handle) await call('POST', `${root}/window`, { handle });
    current = handle;
  };
  // WebDriver calls on one session run one at a time; pages share the session.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(op: () => Promise<T>): Promise<T> => {
    const result = queue.then(op, op);
    queue = result.catch(() => undefined);
    return result;
  };

  const page = (handle: string): DrivenPage => ({
    goto: (url) => serial(async () => { await focus(handle); await call('POST', `${root}/url`, { url }); }),
    reload: () => serial(async () => { await focus(handle); await call('POST', `${root}/refresh`, {}); }),
    evaluate: <T>(expression: string) => serial(async () => {
      await focus(handle);
      const script = `const done = arguments[arguments.length - 1];
        ${jsonExpression(expression)}.then((json) => done({ json }), (error) => done({ error: String(error && error.stack || error) }));`;
      const reply = await call<{ json?: string; error?: string }>('POST', `${root}/execute/async`, { script, args: [] });
      if (reply.error !== undefined) throw new Error(`in WebKit: ${reply.error}`);
      return JSON.parse(reply.json ?? 'null') as T;
    }),
  });

  let closing: Promise<void> | undefined;
  return {
    engine: 'webkit',
    async openPage(url) {
      let handle = firstWindow;
      firstWindow = undefined;
      handle ??= (await serial(() => call<{ handle: string }>('POST', `${root}/window/new`, { type: 'tab' }))).handle;
      const opened = page(handle);
      await serial(() => call('POST', `${root}/timeouts`, { script: 600_000, pageLoad: 300_000 }));
      await opened.goto(url);
      return opened;
    },
    close() {
      closing ??= (async () => {
        await Promise.race([call('DELETE', root).catch(() => undefined), new Promise((r) => setTimeout(r, 5000))]);
        await stop(driver);
        await stop(xvfb.child);
      })();
      return closing;
    },
  };
}
