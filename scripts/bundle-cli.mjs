// SPDX-License-Identifier: MIT
// Bundles the command (dist/bindings/cli/main.js, as tsc built it) into one CommonJS file,
// dist/cli/qcow2-wasm.cjs, which bin/qcow2-wasm.js loads: Node then reads, resolves and compiles
// one file instead of some eighty ES modules, and loads its built-in modules through require,
// which skips the ES module facade that touches every export (node:fs's streams included).
// Run by `npm run build` after tsc. The dependencies stay packages, loaded from node_modules,
// except zstddec: it ships only as an ES module, which require() cannot load before Node 20.19,
// so it is bundled in (its licence comments kept). Dynamic import()s of packages stay import()s.

import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const manifest = JSON.parse(readFileSync(`${root}package.json`, 'utf8'));
const BUNDLED_PACKAGES = new Set(['zstddec']);

await build({
  absWorkingDir: root,
  entryPoints: ['dist/bindings/cli/main.js'],
  outfile: 'dist/cli/qcow2-wasm.cjs',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: Object.keys(manifest.dependencies).filter((name) => !BUNDLED_PACKAGES.has(name)),
  // The sources find files next to themselves (package.json, dependencies) through
  // import.meta.url; in the bundle that is the bundle's own URL.
  define: { 'import.meta.url': '__bundleUrl' },
  banner: { js: '// Built by scripts/bundle-cli.mjs from dist/bindings/cli/main.js: do not edit.\n' +
    'const __bundleUrl = require("node:url").pathToFileURL(__filename).href;' },
  logLevel: 'warning',
});
