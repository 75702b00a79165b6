// SPDX-License-Identifier: MIT
// What the browser benchmarks share: Debian's Chromium and the flags this workplace needs, and
// the package root (the benchmarks run from dist/bench/ and serve pages from the sources).

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Debian's Chromium; CHROMIUM_PATH overrides. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Flags for running as root on a closed network. */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** The package root: the nearest directory above this module that holds `marker` (a path relative to it). */
export function packageRootWith(marker: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, marker))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find ${marker} above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  return dir;
}
