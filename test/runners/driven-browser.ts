// SPDX-License-Identifier: MIT
// What the browser tests need from a browser they drive from Node: pages to open, script to
// evaluate in them, reloads, closing them. Implemented for Chromium through Playwright
// (engines.ts), Firefox over WebDriver BiDi (firefox-bidi.ts) and WebKitGTK's MiniBrowser over
// its remote inspector (webkit-inspector.ts).

import { DrivingTimeout, within, type CallLimits } from './bounded.js';

/** One tab of a driven browser. */
export interface DrivenPage {
  /** Loads `url` and resolves once its load event fired. */
  goto(url: string): Promise<void>;
  /**
   * Evaluates `expression` in the page (awaiting it when it is a promise) and resolves with its
   * value passed through JSON; a throw rejects with the page's message.
   */
  evaluate<T>(expression: string): Promise<T>;
  /** Reloads the page and resolves once its load event fired. */
  reload(): Promise<void>;
  /**
   * Closes the tab as a user does (no beforeunload prompt; the page's workers end with it) and
   * resolves once it is gone.
   */
  close(): Promise<void>;
}

/** A running browser. */
export interface DrivenBrowser {
  readonly engine: 'chromium' | 'firefox' | 'webkit';
  /**
   * Opens a new tab at `url`. The tab the browser started with is never handed out and stays
   * open, so that closing a page never closes the browser's last tab (in Firefox that leaves
   * the page and its workers alive).
   */
  openPage(url: string): Promise<DrivenPage>;
  /** Quits the browser and ends its processes; idempotent. */
  close(): Promise<void>;
}

/** Options of the launchers. */
export interface LaunchOptions {
  /** A profile/data directory kept across launches (a fresh temporary one when omitted). */
  profileDir?: string;
  /** Time limits of the browser's calls where CALL_LIMITS_MS's are not wanted (bounded.ts). */
  callLimitsMs?: Partial<CallLimits>;
}

/**
 * Polls `check` every 100 ms until it returns true; rejects with a DrivingTimeout naming `what`
 * after `timeoutMs`, also when a check itself has not answered by then.
 */
export async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const timedOut = () => new DrivingTimeout(`waiting for ${what} did not finish within ${timeoutMs / 1000} s`);
  for (;;) {
    const remainingMs = deadline - Date.now();
    if (remainingMs <= 0) throw timedOut();
    const met = await within(what, remainingMs, check()).catch((err: unknown) => { throw err instanceof DrivingTimeout ? timedOut() : err; });
    if (met) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Wraps `expression` so that its awaited value comes back as a JSON string. */
export const jsonExpression = (expression: string): string =>
  `(async () => { const value = await (${expression}); return value === undefined ? 'null' : JSON.stringify(value); })()`;
