// SPDX-License-Identifier: MIT
// Time limits for driving browsers from Node: every launch, page open, navigation, evaluation and
// close gets a limit of its own, and one that fires names the engine, the call and (through
// step()) the step of the test it cut off. A hang then fails the test within minutes and says
// where, instead of eating the test's whole budget.

import type { DrivenBrowser, DrivenPage } from './driven-browser.js';

/** A call into a driven browser that did not settle within its limit. */
export class DrivingTimeout extends Error {
  override readonly name = 'DrivingTimeout';
}

/** The limit of each kind of call, in ms. */
export interface CallLimits {
  launch: number;
  openPage: number;
  navigate: number;
  evaluate: number;
  closePage: number;
  close: number;
}

/** The limits the launchers apply unless told otherwise (generous: the machines are shared and noisy). */
export const CALL_LIMITS_MS: Readonly<CallLimits> = Object.freeze({
  /** Starting the browser until it takes commands (a failed start ends what it spawned). */
  launch: 90_000,
  /** A new tab until its page has loaded. */
  openPage: 90_000,
  /** A navigation or reload until the load event. */
  navigate: 90_000,
  /** One evaluation in a page, awaited (a phase of a test page: a few seconds when all is well). */
  evaluate: 120_000,
  /** Closing a tab until it is gone. */
  closePage: 60_000,
  /** Quitting the browser until its processes have exited. */
  close: 60_000,
});

/** The engine's name as messages spell it. */
export const ENGINE_LABELS: Readonly<Record<DrivenBrowser['engine'], string>> = Object.freeze({ chromium: 'Chromium', firefox: 'Firefox', webkit: 'WebKit' });

/**
 * Settles as `work` does, or rejects with a DrivingTimeout "`what` did not finish within N s"
 * after `limitMs`. Work that settles after the limit is dropped: a late rejection is absorbed
 * (it cannot surface as an unhandled one), a late value is handed to `discard` (e.g. to close a
 * browser that started too late).
 */
export function within<T>(what: string, limitMs: number, work: Promise<T>, discard?: (late: T) => unknown): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timedOut = false;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(new DrivingTimeout(`${what} did not finish within ${limitMs / 1000} s`));
    }, limitMs);
  });
  work.then((value) => { if (timedOut) void Promise.resolve(discard?.(value)).catch(() => undefined); }, () => undefined);
  return Promise.race([work, limit]).finally(() => clearTimeout(timer));
}

/** `text` cut to `max` characters, for messages that quote an expression. */
const excerpt = (text: string, max = 120): string => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/** `page` with every call bounded by `limits`; `label` names the engine in messages. */
function boundedPage(label: string, page: DrivenPage, limits: CallLimits): DrivenPage {
  return {
    goto: (url) => within(`${label}: page.goto(${url})`, limits.navigate, page.goto(url)),
    reload: () => within(`${label}: page.reload`, limits.navigate, page.reload()),
    evaluate: <T>(expression: string) => within<T>(`${label}: page.evaluate(${excerpt(expression)})`, limits.evaluate, page.evaluate<T>(expression)),
    close: () => within(`${label}: page.close`, limits.closePage, page.close()),
  };
}

/**
 * `browser` with every call of it and of its pages bounded by `limits` (CALL_LIMITS_MS where
 * not given; the launchers hand out only such browsers). A close that runs out of time has
 * still asked the browser's processes to end (see each launcher's close()).
 */
export function boundedBrowser(browser: DrivenBrowser, limits: Partial<CallLimits> = {}): DrivenBrowser {
  const label = ENGINE_LABELS[browser.engine];
  const limitsMs: CallLimits = { ...CALL_LIMITS_MS, ...limits };
  return {
    engine: browser.engine,
    openPage: async (url) => boundedPage(label, await within(`${label}: openPage(${url})`, limitsMs.openPage, browser.openPage(url)), limitsMs),
    close: () => within(`${label}: browser.close`, limitsMs.close, browser.close()),
  };
}

/**
 * Runs one step of a browser test: an error out of `body` gets " (step: `name`)" added to its
 * message, so that a timeout or a failed call says which part of the test it cut off.
 */
export async function step<T>(name: string, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    if (err instanceof Error && !err.message.includes(' (step: ')) err.message = `${err.message} (step: ${name})`;
    throw err;
  }
}

/**
 * Launches a browser with `launch` (step "`stage`: launch"), runs `body` with it, and closes it
 * (step "`stage`: close"), also when `body` fails. When both fail, the error of `body` is the one
 * thrown (the close's is printed), so a hang is reported where it happened.
 */
export async function withBrowser<T>(stage: string, launch: () => Promise<DrivenBrowser>, body: (browser: DrivenBrowser) => Promise<T>): Promise<T> {
  const browser = await step(`${stage}: launch`, launch);
  let result: T;
  try {
    result = await body(browser);
  } catch (err) {
    await step(`${stage}: close`, () => browser.close()).catch((closeErr: unknown) => console.error(`after a failed test, ${String(closeErr)}`));
    throw err;
  }
  await step(`${stage}: close`, () => browser.close());
  return result;
}
