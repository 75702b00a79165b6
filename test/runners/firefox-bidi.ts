// SPDX-License-Identifier: MIT
// Firefox (Debian's firefox-esr) driven over WebDriver BiDi, straight from its remote agent: no
// geckodriver. The browser runs headless on a profile with automation preferences.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { boundedBrowser, CALL_LIMITS_MS, within } from './bounded.js';
import { jsonExpression, type DrivenBrowser, type DrivenPage, type LaunchOptions } from './driven-browser.js';

/** Debian's Firefox ESR; FIREFOX_PATH overrides. */
export const FIREFOX_PATH = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr';

/** Preferences of the test profile: no first-run pages, no network calls of its own. */
const PREFS: Record<string, string | number | boolean> = {
  'browser.shell.checkDefaultBrowser': false,
  'browser.startup.homepage_override.mstone': 'ignore',
  'browser.aboutwelcome.enabled': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.reportingpolicy.firstRun': false,
  'app.update.disabledForTesting': true,
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'browser.safebrowsing.update.enabled': false,
  'extensions.update.enabled': false,
  'remote.prefs.recommended': true,
};

/** How long Firefox may take to shut down on its own after browser.close before it is terminated. */
const QUIT_MS = 30_000;

/** Resolves once `promise` settles or `ms` have passed, whichever is first, leaving no timer behind. */
function settledOrAfter(promise: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    const done = () => { clearTimeout(timer); resolve(); };
    promise.then(done, done);
  });
}

interface BidiMessage {
  id?: number;
  type?: 'success' | 'error' | 'event';
  result?: Record<string, unknown>;
  error?: string;
  message?: string;
}

/**
 * Launches Firefox headless and connects to its BiDi endpoint; every call of the browser and its
 * pages is bounded (bounded.ts). A start that fails or runs out of time ends the process.
 */
export async function launchFirefox(options: LaunchOptions = {}): Promise<DrivenBrowser> {
  const temporary = options.profileDir === undefined ? mkdtempSync(join(tmpdir(), 'qcow2-wasm-firefox-')) : undefined;
  const profile = options.profileDir ?? temporary!;
  writeFileSync(join(profile, 'user.js'), Object.entries(PREFS).map(([k, v]) => `user_pref(${JSON.stringify(k)}, ${JSON.stringify(v)});\n`).join(''));
  const child: ChildProcess = spawn(FIREFOX_PATH, ['--headless', '--no-remote', '--profile', profile, '--remote-debugging-port=0', 'about:blank'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, MOZ_CRASHREPORTER_DISABLE: '1' },
  });
  try {
    const launchMs = options.callLimitsMs?.launch ?? CALL_LIMITS_MS.launch;
    return boundedBrowser(await within('Firefox: launch', launchMs, connect(child, temporary), (late) => late.close()), options.callLimitsMs);
  } catch (err) {
    if (child.exitCode === null) child.kill('SIGKILL');
    if (temporary !== undefined) rmSync(temporary, { recursive: true, force: true });
    throw err;
  }
}

/** Waits for the BiDi endpoint of `child`, opens a session and wraps it. */
async function connect(child: ChildProcess, temporary: string | undefined): Promise<DrivenBrowser> {
  let log = '';
  const endpoint = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`Firefox printed no BiDi endpoint within 60 s:\n${log.slice(-2000)}`)), 60_000);
    const onData = (chunk: Buffer) => {
      log += chunk.toString('utf8');
      const match = /WebDriver BiDi listening on (ws:\/\/\S+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`Firefox exited (${code}) before BiDi was ready:\n${log.slice(-2000)}`)); });
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));

  const socket = new WebSocket(`${endpoint}/session`);
  await new Promise<void>((resolve, reject) => { socket.once('open', () => resolve()); socket.once('error', reject); });
  let nextId = 1;
  const waiting = new Map<number, { resolve: (m: BidiMessage) => void; reject: (e: Error) => void }>();
  socket.on('message', (data) => {
    const message = JSON.parse(String(data)) as BidiMessage;
    if (message.id === undefined) return;
    const waiter = waiting.get(message.id);
    waiting.delete(message.id);
    if (message.type === 'error') waiter?.reject(new Error(`BiDi ${message.error}: ${message.message}`));
    else waiter?.resolve(message);
  });
  socket.on('close', () => { for (const w of waiting.values()) w.reject(new Error('the BiDi connection closed')); waiting.clear(); });
  const send = async (method: string, params: Record<string, unknown>): Promise<Record<string, unknown>> => {
    // ws drops a message sent after the close without a word: its reply would never come.
    if (socket.readyState !== WebSocket.OPEN) throw new Error(`BiDi ${method}: the connection is closed (Firefox exited?)`);
    const id = nextId++;
    const reply = new Promise<BidiMessage>((resolve, reject) => waiting.set(id, { resolve, reject }));
    socket.send(JSON.stringify({ id, method, params }));
    return (await reply).result ?? {};
  };

  await send('session.new', { capabilities: {} });

  const page = (context: string): DrivenPage => ({
    async goto(url) { await send('browsingContext.navigate', { context, url, wait: 'complete' }); },
    async reload() { await send('browsingContext.reload', { context, wait: 'complete' }); },
    async close() { await send('browsingContext.close', { context, promptUnload: false }); },
    async evaluate<T>(expression: string): Promise<T> {
      const reply = await send('script.evaluate', { expression: jsonExpression(expression), target: { context }, awaitPromise: true, resultOwnership: 'none' }) as {
        type: string; result?: { value?: string }; exceptionDetails?: { text?: string };
      };
      if (reply.type !== 'success') throw new Error(`in Firefox: ${reply.exceptionDetails?.text ?? 'evaluation failed'}`);
      return JSON.parse(reply.result?.value ?? 'null') as T;
    },
  });

  let closing: Promise<void> | undefined;
  return {
    engine: 'firefox',
    async openPage(url) {
      const { context } = (await send('browsingContext.create', { type: 'tab' })) as { context: string };
      const opened = page(context);
      await opened.goto(url);
      return opened;
    },
    close() {
      closing ??= (async () => {
        const ended = () => child.exitCode !== null || child.signalCode !== null;
        // browser.close answers before Firefox has shut down: it is left to finish (storage
        // written out, the profile released) before anything stronger is tried. A SIGTERM right
        // after the answer kills it in mid-shutdown (it dies of the signal), which would make a
        // restart on the same profile a restart after a crash.
        await settledOrAfter(send('browser.close', {}), 5000);
        await settledOrAfter(exited, QUIT_MS);
        socket.close();
        if (!ended()) child.kill('SIGTERM');
        await settledOrAfter(exited, 10_000);
        if (!ended()) child.kill('SIGKILL');
        await exited;
        if (temporary !== undefined) rmSync(temporary, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}
