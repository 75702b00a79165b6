// SPDX-License-Identifier: MIT
// `describe` for tests that need something outside the repository (a browser, a built guest, a
// host tool): they run when it is there, skip with a loud warning when it is not, and fail where
// the CI environment variable is set (CI must never skip them silently).
import { describe, it } from 'vitest';

/** True when the CI environment variable is set to anything but '', '0' or 'false'. */
export function isCi(): boolean {
  const ci = process.env.CI;
  return ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false';
}

/**
 * describe(name, body) when `missing` is undefined. Otherwise `missing` says what is missing and
 * how to get it: where it is `required` (default: where CI is set; a browser test, which has no
 * environment, is told by its server) the suite becomes one failing test saying so; elsewhere it
 * is skipped with a console warning.
 */
export function describeRequiring(name: string, missing: string | undefined, body: () => void, required = isCi()): void {
  if (missing === undefined) {
    describe(name, body);
  } else if (required) {
    describe(name, () => {
      it('has what it needs (required where CI is set)', () => { throw new Error(`${name}: ${missing}`); });
    });
  } else {
    console.warn(`\n*** SKIPPING ${name}: ${missing}. ***\n`);
    describe.skip(name, body);
  }
}
