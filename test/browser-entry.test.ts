// SPDX-License-Identifier: MIT
// The browser entry point `qcow2-wasm/browser` must load in a browser: nothing reachable from
// bindings/browser.ts may import a `node:` module (or a Node built-in by its bare name), and its
// public names are the ones the docs and the example page use.

import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as browser from '../bindings/browser.js';

const BINDINGS = resolve(import.meta.dirname, '../bindings');

/** Every module specifier imported or re-exported by `file` (static forms and dynamic import()). */
function specifiersOf(file: string): string[] {
  const source = readFileSync(file, 'utf8');
  const found: string[] = [];
  for (const match of source.matchAll(/(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|(?:^|[\s;])import\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gm)) {
    found.push(match[1] ?? match[2] ?? match[3]!);
  }
  return found;
}

describe('browser entry point', () => {
  it('reaches no Node built-in module', () => {
    const seen = new Set<string>();
    const bare = new Set<string>();
    const visit = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      for (const specifier of specifiersOf(file)) {
        if (specifier.startsWith('.')) visit(resolve(dirname(file), specifier.replace(/\.js$/, '.ts')));
        else bare.add(specifier);
      }
    };
    visit(resolve(BINDINGS, 'browser.ts'));
    expect(seen.size, 'modules reached').toBeGreaterThan(10);
    for (const specifier of bare) {
      expect(specifier.startsWith('node:') || builtinModules.includes(specifier), `${specifier} is a Node built-in`).toBe(false);
    }
    expect([...bare].sort()).toEqual(expect.arrayContaining(['@assemblyscript/loader', 'fflate']));
  });

  it('exports the browser backends and everything of the neutral entry', () => {
    for (const name of ['openOpfsBackend', 'openIndexedDbBackend', 'deleteIndexedDbImage', 'openSplitBackend', 'writeSplitImage', 'validateSplitManifest', 'splitPartName',
      'createBlobBackend', 'openHttpBackend', 'createMemoryBackend', 'Qcow2Image', 'RawImage', 'BackendError', 'init']) {
      expect(typeof (browser as Record<string, unknown>)[name], name).toBe('function');
    }
  });
});
