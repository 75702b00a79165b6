// SPDX-License-Identifier: MIT
// The launcher's code cache (bin/qcow2-wasm.js, written by scripts/cli-code-cache.cjs at build
// time): the built cache is used; a cache made from other bytes, one V8 refuses and a missing one
// are compiled past, and the command runs the same either way; the bundle's import()s of packages
// go through the launcher. Each load runs in a Node process of its own, started as the command
// is (V8 refuses a cache made under other flags, and the test runner's differ).

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeRequiring } from './helpers/describe-requiring.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const LAUNCHER = join(root, 'bin', 'qcow2-wasm.js');
const BUNDLE = join(root, 'dist', 'cli', 'qcow2-wasm.cjs');
const missingBuild = existsSync(BUNDLE) && existsSync(`${BUNDLE}.cache`)
  ? undefined : 'dist/cli/qcow2-wasm.cjs or its .cache is missing (run npm run build)';

/** Loads `bundle` (cache beside it) through the launcher in a new process; returns the cache state and what `--version` printed. */
function loadInChild(bundle: string): { cacheState: string; version: string } {
  const script = `const { loadBundle } = require(${JSON.stringify(LAUNCHER)});
    const { exports, cacheState } = loadBundle(${JSON.stringify(bundle)});
    let version = '';
    exports.main(['--version'], { stdout: (text) => { version += text; } })
      .then((code) => console.log(JSON.stringify({ cacheState, version, code })));`;
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  expect(child.status, child.stderr).toBe(0);
  const { cacheState, version, code } = JSON.parse(child.stdout) as { cacheState: string; version: string; code: number };
  expect(code).toBe(0);
  return { cacheState, version };
}

describe('the launcher\'s code cache', () => {
  let dir: string;
  let bundle: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-code-cache-test-'));
    // A copy of the package's layout: the bundle finds package.json and node_modules from dist/cli.
    mkdirSync(join(dir, 'dist', 'cli'), { recursive: true });
    copyFileSync(join(root, 'package.json'), join(dir, 'package.json'));
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
    bundle = join(dir, 'dist', 'cli', 'qcow2-wasm.cjs');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  describeRequiring('the cache the build made', missingBuild, () => {
    it('is used as built, and compiled past when stale, refused by V8 or missing, the command running alike', () => {
      const source = readFileSync(BUNDLE);
      const cache = readFileSync(`${BUNDLE}.cache`);
      const asBuilt = loadInChild(BUNDLE);
      expect(asBuilt.cacheState).toBe('used');
      expect(asBuilt.version).toMatch(/^qcow2-wasm version \d/);

      // The same bytes elsewhere: the cache still fits them.
      copyFileSync(BUNDLE, bundle);
      copyFileSync(`${BUNDLE}.cache`, `${bundle}.cache`);
      expect(loadInChild(bundle)).toEqual(asBuilt);

      // One byte of the bundle changed, its length kept (V8's own check would pass).
      const changed = Buffer.from(source);
      const at = changed.indexOf('do not edit.');
      changed.write('DO', at, 'latin1');
      writeFileSync(bundle, changed);
      expect(loadInChild(bundle)).toEqual({ ...asBuilt, cacheState: 'stale' });

      // The right label on data V8 cannot use.
      writeFileSync(bundle, source);
      writeFileSync(`${bundle}.cache`, Buffer.concat([cache.subarray(0, 8), Buffer.alloc(4096, 0x5a)]));
      expect(loadInChild(bundle)).toEqual({ ...asBuilt, cacheState: 'rejected' });

      writeFileSync(`${bundle}.cache`, cache.subarray(0, 5));
      expect(loadInChild(bundle)).toEqual({ ...asBuilt, cacheState: 'stale' });

      rmSync(`${bundle}.cache`);
      expect(loadInChild(bundle)).toEqual({ ...asBuilt, cacheState: 'missing' });
    });
  });

  it('hands the bundle the launcher\'s import() for packages', async () => {
    const fake = join(dir, 'imports.cjs');
    writeFileSync(fake, 'exports.main = async () => typeof (await __bundleImport("pako")).deflateRaw === "function" ? 0 : 1;\n');
    const script = `const { loadBundle } = require(${JSON.stringify(LAUNCHER)});
      const { exports, cacheState } = loadBundle(${JSON.stringify(fake)});
      exports.main().then((code) => console.log(JSON.stringify({ cacheState, code })));`;
    const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(child.status, child.stderr).toBe(0);
    expect(JSON.parse(child.stdout)).toEqual({ cacheState: 'missing', code: 0 });
  });
});
