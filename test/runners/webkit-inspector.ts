// SPDX-License-Identifier: MIT
// WebKit (Debian's WebKitGTK MiniBrowser) driven over its remote Web Inspector, on a private X
// server (xvfb.ts). WebKitWebDriver is not used: it runs MiniBrowser in automation mode, whose
// website data store is ephemeral, where navigator.storage.getDirectory() rejects with
// UnknownError. A plain MiniBrowser keeps website data below its XDG data directory, and with
// WEBKIT_INSPECTOR_HTTP_SERVER set it lists its pages over HTTP and serves the inspector protocol
// of each over a WebSocket (Target.sendMessageToTarget wrapping Runtime.evaluate/awaitPromise).

import { createServer } from 'node:net';
import WebSocket from 'ws';
import { spawnMiniBrowser, startXvfb, stop } from './xvfb.js';
import { boundedBrowser, CALL_LIMITS_MS, within } from './bounded.js';
import { jsonExpression, waitUntil, type DrivenBrowser, type LaunchOptions } from './driven-browser.js';

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

/** One page the inspector server lists: its URL and its WebSocket path. */
interface ListedPage {
  url: string;
  socketPath: string;
}

/** The pages the inspector HTTP server at `base` lists (it offers an HTML table only). */
async function listPages(base: string): Promise<ListedPage[]> {
  const html = await (await fetch(`${base}/`)).text();
  const pages: ListedPage[] = [];
  for (const row of html.split('<tr>').slice(1)) {
    const url = /class="targeturl">([^<]*)</.exec(row)?.[1];
    const socketPath = /(\/socket\/\d+\/\d+\/WebPage)/.exec(row)?.[1];
    if (url !== undefined && socketPath !== undefined) pages.push({ url: url.replaceAll('&amp;', '&'), socketPath });
  }
  return pages;
}

/** A call cut off because its target went away (a navigation into a new web process). */
class TargetGone extends Error {}

interface InspectorReply {
  result?: { result?: { type: string; value?: unknown; objectId?: string; description?: string }; wasThrown?: boolean };
  error?: { message: string };
}

/**
 * The inspector connection of one page. Its messages go to the page's current target, which a
 * navigation may replace (a provisional target committed in a new web process).
 */
class InspectorPage {
  private target: string | undefined;
  private nextId = 1;
  private readonly waiting = new Map<number, { target: string; resolve: (reply: InspectorReply) => void; reject: (error: Error) => void }>();
  private readonly targetChanged = new Set<() => void>();

  constructor(private readonly socket: WebSocket) {
    socket.on('message', (data) => this.receive(JSON.parse(String(data)) as { method?: string; params?: Record<string, unknown> }));
    socket.on('close', () => this.failAll(undefined, 'the inspector connection closed'));
    socket.on('error', (err) => this.failAll(undefined, `the inspector connection failed: ${err.message}`));
  }

  static async connect(url: string): Promise<InspectorPage> {
    const socket = new WebSocket(url);
    const page = new InspectorPage(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('close', () => reject(new Error(`the inspector connection to ${url} closed before it opened`)));
    });
    return page;
  }

  private receive(message: { method?: string; params?: Record<string, unknown> }): void {
    const params = message.params ?? {};
    switch (message.method) {
      case 'Target.targetCreated': {
        const info = params.targetInfo as { targetId: string; isProvisional?: boolean };
        if (info.isProvisional !== true) this.setTarget(info.targetId);
        break;
      }
      case 'Target.didCommitProvisionalTarget':
        this.setTarget(params.newTargetId as string);
        break;
      case 'Target.targetDestroyed':
        if (this.target === params.targetId) this.target = undefined;
        this.failAll(params.targetId as string, 'the page navigated away while it was evaluating', true);
        break;
      case 'Target.dispatchMessageFromTarget': {
        const reply = JSON.parse(params.message as string) as InspectorReply & { id?: number };
        const waiter = reply.id === undefined ? undefined : this.waiting.get(reply.id);
        if (waiter === undefined) break;
        this.waiting.delete(reply.id!);
        if (reply.error !== undefined) waiter.reject(new Error(`inspector: ${reply.error.message}`));
        else waiter.resolve(reply);
        break;
      }
    }
  }

  private setTarget(target: string): void {
    this.target = target;
    for (const wake of this.targetChanged) wake();
  }

  private failAll(target: string | undefined, why: string, gone = false): void {
    for (const [id, waiter] of this.waiting) {
      if (target !== undefined && waiter.target !== target) continue;
      this.waiting.delete(id);
      waiter.reject(gone ? new TargetGone(why) : new Error(why));
    }
  }

  /** Sends `method` to the page's current target (waiting up to 60 s for one) and resolves with its reply. */
  async send(method: string, params: Record<string, unknown>): Promise<InspectorReply> {
    if (this.target === undefined) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => { this.targetChanged.delete(wake); reject(new Error('the page has had no inspectable target for 60 s')); }, 60_000);
        const wake = () => { clearTimeout(timer); this.targetChanged.delete(wake); resolve(); };
        this.targetChanged.add(wake);
      });
    }
    // ws drops a message sent after the close without a word: its reply would never come.
    if (this.socket.readyState !== WebSocket.OPEN) throw new Error(`inspector ${method}: the connection is closed (MiniBrowser exited?)`);
    const target = this.target!;
    const id = this.nextId++;
    const reply = new Promise<InspectorReply>((resolve, reject) => this.waiting.set(id, { target, resolve, reject }));
    this.socket.send(JSON.stringify({ id, method: 'Target.sendMessageToTarget', params: { targetId: target, message: JSON.stringify({ id, method, params }) } }));
    return reply;
  }

  /** Evaluates `expression` (awaiting a promise) and resolves with its value passed through JSON. */
  async evaluate<T>(expression: string): Promise<T> {
    const started = await this.send('Runtime.evaluate', { expression: jsonExpression(expression) });
    if (started.result?.wasThrown === true) throw new Error(`in WebKit: ${started.result.result?.description}`);
    const done = await this.send('Runtime.awaitPromise', { promiseObjectId: started.result?.result?.objectId, returnByValue: true });
    if (done.result?.wasThrown === true) throw new Error(`in WebKit: ${done.result.result?.description ?? JSON.stringify(done.result.result?.value)}`);
    return JSON.parse(done.result?.result?.value as string) as T;
  }

  /** The value of a synchronous `expression`, or undefined while the page has no target or is between documents. */
  async peek(expression: string): Promise<unknown> {
    try {
      const reply = await this.send('Runtime.evaluate', { expression, returnByValue: true });
      return reply.result?.wasThrown === true ? undefined : reply.result?.result?.value;
    } catch {
      return undefined;
    }
  }

  close(): void {
    this.socket.close();
  }
}

/**
 * Loads a page with `start` (a navigation or reload) and resolves once the new document has
 * loaded: the old one is marked first, so a document that still carries the mark is the old one.
 */
async function navigating(page: InspectorPage, start: () => Promise<unknown>, expectedUrl?: string): Promise<void> {
  const mark = `qw-${Math.random().toString(36).slice(2)}`;
  await page.peek(`window.__qwDocument = ${JSON.stringify(mark)}`);
  // A navigation that moves the page into a new web process ends the target the command went to.
  await start().catch((err: unknown) => { if (!(err instanceof TargetGone)) throw err; });
  const loaded = `document.readyState === 'complete' && window.__qwDocument !== ${JSON.stringify(mark)}${expectedUrl === undefined ? '' : ` && location.href === ${JSON.stringify(expectedUrl)}`}`;
  await waitUntil(`the page to load${expectedUrl === undefined ? '' : ` ${expectedUrl}`}`, async () => (await page.peek(loaded)) === true, 60_000);
}

/** Options of launchWebKit. */
export interface WebKitLaunchOptions extends LaunchOptions {
  /** A private window (MiniBrowser --private): website data in an ephemeral store, as WebDriver has it. */
  privateBrowsing?: boolean;
}

/**
 * Launches MiniBrowser on a private Xvfb with its inspector server, keeping website data (OPFS,
 * IndexedDB) below `profileDir` (a temporary directory when omitted) so that a later launch on
 * the same directory finds it. Each page is a window that the first one (about:blank) opened.
 * Every call of the browser and its pages is bounded (bounded.ts); a start that fails or runs
 * out of time ends MiniBrowser and Xvfb.
 */
export async function launchWebKit(options: WebKitLaunchOptions = {}): Promise<DrivenBrowser> {
  const xvfb = await startXvfb();
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const browser = spawnMiniBrowser('about:blank', {
    display: xvfb.display, dataDir: options.profileDir, inspectorAddress: `127.0.0.1:${port}`, privateBrowsing: options.privateBrowsing,
  });
  const connections: InspectorPage[] = [];
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      for (const connection of connections) connection.close();
      await browser.close();
      await stop(xvfb.child);
    })();
    return closing;
  };

  const attach = async (listed: ListedPage): Promise<InspectorPage> => {
    const connection = await InspectorPage.connect(`ws://127.0.0.1:${port}${listed.socketPath}`);
    connections.push(connection);
    return connection;
  };
  // The window MiniBrowser starts with only opens the others (a window a script opened is one a
  // script may close).
  let opener: InspectorPage;
  try {
    opener = await within('WebKit: launch', options.callLimitsMs?.launch ?? CALL_LIMITS_MS.launch, (async () => {
      let listed: ListedPage[] = [];
      await waitUntil('MiniBrowser to list its first page', async () => {
        listed = await listPages(base).catch(() => []);
        return listed.length > 0;
      }, 60_000);
      return attach(listed[0]!);
    })());
  } catch (err) {
    await close();
    throw new Error(`${(err as Error).message}\n${browser.log().slice(-2000)}`);
  }

  return boundedBrowser({
    engine: 'webkit',
    async openPage(url) {
      const known = new Set((await listPages(base)).map((listed) => listed.socketPath));
      await opener.evaluate(`void window.open(${JSON.stringify(url)})`);
      let opened: ListedPage | undefined;
      await waitUntil(`MiniBrowser to list the window opened for ${url}`, async () => {
        opened = (await listPages(base)).find((listed) => !known.has(listed.socketPath));
        return opened !== undefined;
      }, 60_000);
      const { socketPath } = opened!;
      const connection = await attach(opened!);
      const loaded = `document.readyState === 'complete' && location.href === ${JSON.stringify(url)}`;
      await waitUntil(`the window to load ${url}`, async () => (await connection.peek(loaded)) === true, 60_000);
      return {
        goto: (to) => navigating(connection, () => connection.send('Page.navigate', { url: to }), to),
        reload: () => navigating(connection, () => connection.send('Page.reload', {})),
        evaluate: (expression) => connection.evaluate(expression),
        async close() {
          await connection.peek('void window.close()');
          await waitUntil(`MiniBrowser to close the window of ${url}`, async () => !(await listPages(base)).some((listed) => listed.socketPath === socketPath), 60_000);
          connection.close();
        },
      };
    },
    close,
  }, options.callLimitsMs);
}
