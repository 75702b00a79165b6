// SPDX-License-Identifier: MIT
// WebKitGTK's MiniBrowser on a private X server (Xvfb; the GTK MiniBrowser has no headless mode):
// what the WebDriver launcher and the plain launcher share.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The MiniBrowser of Debian's libwebkit2gtk-4.1 (webkit2gtk-driver pulls it in); WEBKIT_BROWSER_PATH overrides. */
export const WEBKIT_BROWSER_PATH = process.env.WEBKIT_BROWSER_PATH ?? '/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser';
/** The X server (package xvfb); XVFB_PATH overrides. */
export const XVFB_PATH = process.env.XVFB_PATH ?? '/usr/bin/Xvfb';

/**
 * WebKitGTK leaves the Storage API and OPFS off by default; they are turned on as Safari has them.
 * File System writable streams (createWritable) stay off, as in Safari before 26, so the tests
 * meet a main thread without them.
 */
export const WEBKIT_FEATURES = '+StorageAPI,+StorageAPIEstimate,+FileSystem,+AccessHandle,+FileSystemWritableStream';

/** Starts Xvfb on a free display; resolves with the process and its DISPLAY value. */
export async function startXvfb(): Promise<{ child: ChildProcess; display: string }> {
  const child = spawn(XVFB_PATH, ['-displayfd', '1', '-screen', '0', '1280x1024x24', '-nolisten', 'tcp'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let output = '';
  const display = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('Xvfb reported no display within 30 s')), 30_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
      const match = /^(\d+)\s*$/m.exec(output);
      if (match) { clearTimeout(timer); resolve(`:${match[1]}`); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`Xvfb exited (${code})`)); });
  });
  return { child, display };
}

/** Ends `child` (SIGTERM, then SIGKILL after 5 s) and waits for it. */
export async function stop(child: ChildProcess): Promise<void> {
  const ended = () => (child.exitCode !== null || child.signalCode !== null);
  if (ended()) return;
  const exit = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  await Promise.race([exit, new Promise((r) => setTimeout(r, 5000))]);
  if (!ended()) {
    child.kill('SIGKILL');
    await exit;
  }
}

/**
 * Opens `url` in a plain MiniBrowser (no automation, so website data persists as in a normal
 * window) on its own Xvfb, keeping website data below `dataDir` (a fresh temporary directory
 * when omitted). Resolves with close(), which ends both and removes a temporary directory.
 */
export async function openInMiniBrowser(url: string, dataDir?: string): Promise<{ close(): Promise<void> }> {
  const temporary = dataDir === undefined ? mkdtempSync(join(tmpdir(), 'qcow2-wasm-webkit-')) : undefined;
  const home = dataDir ?? temporary!;
  const xvfb = await startXvfb();
  const browser = spawn(WEBKIT_BROWSER_PATH, [`--features=${WEBKIT_FEATURES}`, url], {
    stdio: 'ignore',
    env: { ...process.env, DISPLAY: xvfb.display, XDG_DATA_HOME: join(home, 'data'), XDG_CACHE_HOME: join(home, 'cache'), XDG_CONFIG_HOME: join(home, 'config') },
  });
  let closing: Promise<void> | undefined;
  return {
    close() {
      closing ??= (async () => {
        await stop(browser);
        await stop(xvfb.child);
        if (temporary !== undefined) rmSync(temporary, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}
