// SPDX-License-Identifier: MIT
// Test runner settings: Node tests under test/; generous timeouts because the machines are shared
// and noisy (no test asserts timing).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
