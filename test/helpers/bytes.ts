// SPDX-License-Identifier: MIT
// Byte-array assertions for tests: fast comparisons of large buffers with a useful failure message.

import { expect } from 'vitest';

/** Index of the first byte where `a` and `b` differ (a length difference counts), or -1. */
export function firstMismatch(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Asserts that `actual` equals `expected` byte for byte, naming the first difference. */
export function expectBytes(actual: Uint8Array, expected: Uint8Array, what = 'bytes'): void {
  const at = firstMismatch(actual, expected);
  if (at !== -1) {
    const detail = at < actual.length && at < expected.length
      ? `byte ${at}: got ${actual[at]}, expected ${expected[at]}`
      : `length ${actual.length}, expected ${expected.length}`;
    expect.fail(`${what} differ at ${detail}`);
  }
}

/** Asserts that every byte of `actual` is `value` (default 0), naming the first that is not. */
export function expectFilled(actual: Uint8Array, value = 0, what = 'bytes'): void {
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== value) expect.fail(`${what}: byte ${i} is ${actual[i]}, expected ${value}`);
  }
}
