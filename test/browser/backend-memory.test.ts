// SPDX-License-Identifier: MIT
// The memory backend in the browser, through the browser entry point.

import { createMemoryBackend } from '../../bindings/browser.js';
import { backendConformanceSuite } from '../backend-suite.js';

backendConformanceSuite(
  'memory (browser)',
  async (initial, options) => createMemoryBackend(initial, { writable: options?.writable ?? true }),
  { kind: 'memory', farPosition: 2 ** 52 },
);
