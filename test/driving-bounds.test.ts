// SPDX-License-Identifier: MIT
// The time limits of the browser-driving harness (test/runners/bounded.ts), on stand-in browsers
// whose calls never settle: each call fails at its own limit naming the engine, the call and the
// step; work that settles late is absorbed or closed; a failed test still closes its browser and
// reports its own error, not the close's.

import { describe, expect, it, vi } from 'vitest';
import { boundedBrowser, DrivingTimeout, step, within, withBrowser } from './runners/bounded.js';
import { waitUntil, type DrivenBrowser, type DrivenPage } from './runners/driven-browser.js';

const never = <T>(): Promise<T> => new Promise<T>(() => undefined);

/** A stand-in browser whose pages answer evaluate with `answer`; records what was called. */
function standIn(answer: () => Promise<unknown>, closing: () => Promise<void> = () => Promise.resolve()): DrivenBrowser & { calls: string[] } {
  const calls: string[] = [];
  const page: DrivenPage = {
    goto: () => never(),
    reload: () => never(),
    evaluate: <T>() => answer() as Promise<T>,
    close: () => never(),
  };
  return {
    engine: 'firefox',
    calls,
    openPage: async (url) => { calls.push(`open ${url}`); return page; },
    close: async () => { calls.push('close'); await closing(); },
  };
}

describe('driving limits', () => {
  it('within: a call that never settles fails at its limit naming it; one that settles in time passes through', async () => {
    await expect(within('Firefox: page.reload', 50, never())).rejects.toThrow(new DrivingTimeout('Firefox: page.reload did not finish within 0.05 s'));
    await expect(within('x', 1000, Promise.resolve(7))).resolves.toBe(7);
    await expect(within('x', 1000, Promise.reject(new Error('its own error')))).rejects.toThrow('its own error');
  });

  it('within: a late rejection is absorbed (no unhandled rejection), a late value goes to discard', async () => {
    let rejectLate!: (err: Error) => void;
    const late = new Promise<never>((_, reject) => { rejectLate = reject; });
    await expect(within('a', 20, late)).rejects.toBeInstanceOf(DrivingTimeout);
    rejectLate(new Error('too late'));
    let resolveLate!: (value: string) => void;
    const discarded: string[] = [];
    await expect(within('b', 20, new Promise<string>((resolve) => { resolveLate = resolve; }), (value) => { discarded.push(value); })).rejects.toBeInstanceOf(DrivingTimeout);
    resolveLate('a browser that came up late');
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(discarded).toEqual(['a browser that came up late']);
  });

  it('bounded pages: goto, reload, evaluate and close each fail at their own limit, naming engine, call and step', async () => {
    const browser = boundedBrowser(standIn(() => never()), { navigate: 30, evaluate: 40, closePage: 50 });
    const page = await browser.openPage('http://127.0.0.1:1/page.html');
    await expect(step('reopen after restart', () => page.reload())).rejects.toThrow('Firefox: page.reload did not finish within 0.03 s (step: reopen after restart)');
    await expect(page.goto('http://127.0.0.1:1/other.html')).rejects.toThrow('Firefox: page.goto(http://127.0.0.1:1/other.html) did not finish within 0.03 s');
    await expect(page.evaluate(`window.api.run(${JSON.stringify('x'.repeat(200))})`)).rejects.toThrow(/^Firefox: page\.evaluate\(window\.api\.run\("x{100,}…\) did not finish within 0\.04 s$/);
    await expect(page.close()).rejects.toThrow('Firefox: page.close did not finish within 0.05 s');
  });

  it('step: names the step in any error of its body, once', async () => {
    await expect(step('write worker', async () => { throw new Error('in Firefox: TypeError'); })).rejects.toThrow('in Firefox: TypeError (step: write worker)');
    await expect(step('outer', () => step('inner', async () => { throw new Error('e'); }))).rejects.toThrow(/^e \(step: inner\)$/);
    await expect(step('fine', async () => 5)).resolves.toBe(5);
  });

  it('withBrowser: closes after the body, also when it fails; the body\'s error wins over a failing close', async () => {
    const ok = standIn(() => Promise.resolve(1));
    await expect(withBrowser('stage', async () => ok, async (browser) => (await browser.openPage('u')).evaluate('1'))).resolves.toBe(1);
    expect(ok.calls).toEqual(['open u', 'close']);

    const failing = standIn(() => Promise.resolve(1), async () => { throw new Error('close failed'); });
    const printed = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    await expect(withBrowser('before the restart', async () => failing, async () => { throw new Error('the body failed'); })).rejects.toThrow(/^the body failed$/);
    expect(failing.calls).toEqual(['close']);
    expect(printed).toHaveBeenCalledWith(expect.stringContaining('close failed (step: before the restart: close)'));
    printed.mockRestore();
    await expect(withBrowser('after the restart', async () => failing, async () => 1)).rejects.toThrow('close failed (step: after the restart: close)');
    await expect(withBrowser('launching', () => Promise.reject(new Error('no endpoint')), async () => 1)).rejects.toThrow('no endpoint (step: launching: launch)');
  });

  it('waitUntil: fails at its deadline also when a check never answers', async () => {
    await expect(waitUntil('the page to set up its API', () => never(), 50)).rejects.toThrow(new DrivingTimeout('waiting for the page to set up its API did not finish within 0.05 s'));
    let checks = 0;
    await expect(waitUntil('a false check', async () => { checks++; return false; }, 250)).rejects.toThrow('waiting for a false check did not finish within 0.25 s');
    expect(checks).toBeGreaterThan(1);
    await waitUntil('a true check', async () => true, 50);
  });
});
