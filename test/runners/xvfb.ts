// SPDX-License-Identifier: MIT
// WebKitGTK's MiniBrowser on a private X server (Xvfb; the GTK MiniBrowser has no headless mode):
// what the inspector-driven launcher (webkit-inspector.ts) and the vitest provider share.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The MiniBrowser of Debian's libwebkit2gtk-4.1-0; WEBKIT_BROWSER_PATH overrides. */
export const WEBKIT_BROWSER_PATH = process.env.WEBKIT_BROWSER_PATH ?? '/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser';
/** The X server (package xvfb); XVFB_PATH overrides. */
export const XVFB_PATH = process.env.XVFB_PATH ?? '/usr/bin/Xvfb';

/**
 * WebKitGTK 2.50 leaves the Storage API, OPFS and its writable streams off by default; they are
 * turned on as Safari 26 has them. (Its OPFS has no sync access handles: createSyncAccessHandle
 * rejects with NotSupportedError on every platform but Apple's.)
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

/** Options of spawnMiniBrowser. */
export interface MiniBrowserOptions {
  /** The X display (startXvfb). */
  display: string;
  /** Where MiniBrowser keeps website data, cache and settings (a fresh temporary directory when omitted). */
  dataDir?: string;
  /** host:port for the inspector's HTTP server (WEBKIT_INSPECTOR_HTTP_SERVER); none when omitted. */
  inspectorAddress?: string;
  /** Private browsing (MiniBrowser --private): website data in an ephemeral store. */
  privateBrowsing?: boolean;
}

/** A running MiniBrowser. */
export interface RunningMiniBrowser {
  /** Ends it (SIGTERM, waiting for it to exit) and removes a temporary data directory; idempotent. */
  close(): Promise<void>;
  /** What it printed so far. */
  log(): string;
}

/**
 * Starts a plain MiniBrowser (not in automation mode, so website data persists as in a normal
 * window) at `url`, with the Storage API and OPFS turned on (WEBKIT_FEATURES), its website data
 * below `options.dataDir`.
 */
export function spawnMiniBrowser(url: string, options: MiniBrowserOptions): RunningMiniBrowser {
  const temporary = options.dataDir === undefined ? mkdtempSync(join(tmpdir(), 'qcow2-wasm-webkit-')) : undefined;
  const home = options.dataDir ?? temporary!;
  const args = [`--features=${WEBKIT_FEATURES}`, ...(options.privateBrowsing === true ? ['--private'] : [])];
  const env: NodeJS.ProcessEnv = {
    ...process.env, DISPLAY: options.display, XDG_DATA_HOME: join(home, 'data'), XDG_CACHE_HOME: join(home, 'cache'), XDG_CONFIG_HOME: join(home, 'config'),
  };
  if (options.inspectorAddress !== undefined) {
    args.push('--enable-developer-extras=true', '--javascript-can-open-windows-automatically=true');
    env.WEBKIT_INSPECTOR_HTTP_SERVER = options.inspectorAddress;
  }
  const browser = spawn(WEBKIT_BROWSER_PATH, [...args, url], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let output = '';
  browser.stdout!.on('data', (chunk: Buffer) => { output = (output + chunk.toString('utf8')).slice(-20_000); });
  browser.stderr!.on('data', (chunk: Buffer) => { output = (output + chunk.toString('utf8')).slice(-20_000); });
  let closing: Promise<void> | undefined;
  return {
    close() {
      closing ??= (async () => {
        await stop(browser);
        if (temporary !== undefined) rmSync(temporary, { recursive: true, force: true });
      })();
      return closing;
    },
    log: () => output,
  };
}

/**
 * Opens `url` in a plain MiniBrowser on its own Xvfb with a temporary data directory. Resolves
 * with close(), which ends both and removes the directory.
 */
export async function openInMiniBrowser(url: string): Promise<{ close(): Promise<void> }> {
  const xvfb = await startXvfb();
  const browser = spawnMiniBrowser(url, { display: xvfb.display });
  let closing: Promise<void> | undefined;
  return {
    close() {
      closing ??= (async () => {
        await browser.close();
        await stop(xvfb.child);
      })();
      return closing;
    },
  };
}
