// SPDX-License-Identifier: MIT
// Bundles the command (dist/bindings/cli/main.js, as tsc built it) into one CommonJS file,
// dist/cli/qcow2-wasm.cjs, which bin/qcow2-wasm.js loads: Node then reads, resolves and compiles
// one file instead of some eighty ES modules, and loads its built-in modules through require,
// which skips the ES module facade that touches every export (node:fs's streams included).
// Run by `npm run build` after tsc; then writes the bundle's V8 code cache
// (scripts/cli-code-cache.cjs), so a run compiles almost nothing.
//
// The decoders of compressed clusters, which every run loads, are bundled in, so the code cache
// covers them too (their licences are appended to the bundle), fflate initialised on first use; zstddec also because it ships only
// as an ES module, which require() cannot load before Node 20.19. The other packages stay in
// node_modules: the wasm loader (its Apache licence asks for more than a note), packages loaded
// by file path (@foxglove/wasm-zstd, for workers) and the ones imported on first use (pako,
// @hpcc-js/wasm-zstd), whose import()s call `__packageImport`: the launcher's import (a script
// compiled with a code cache has none of its own) or, when the bundle is required as a plain
// module, import() itself.

import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { licenceComment } from './package-licence.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const manifest = JSON.parse(readFileSync(`${root}package.json`, 'utf8'));
const BUNDLED_PACKAGES = ['zstddec', 'fflate', 'fzstd'];
/** import('a-package') with a literal bare specifier, in the compiled sources. */
const PACKAGE_IMPORT = /\bimport\((['"])([^'"./][^'"]*)\1\)/g;

/**
 * Bundled packages whose module initialisation waits for their first use: fflate builds its
 * Huffman tables when it loads (milliseconds of every run's start), and a run reads compressed
 * clusters only from compressed images.
 */
const LAZY_PACKAGES = ['fflate'];

/**
 * Replaces each lazy package by a module of stand-ins, one per function it exports: the first
 * call (or `new`) of any initialises the package and forwards to its function. Importing
 * anything else from it fails the build.
 */
const lazyPackages = {
  name: 'lazy-packages',
  setup(pluginBuild) {
    const names = new RegExp(`^(${LAZY_PACKAGES.map((name) => name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')).join('|')})$`);
    pluginBuild.onResolve({ filter: names }, (args) => (args.namespace === 'lazy-package' ? undefined : { path: args.path, namespace: 'lazy-package' }));
    pluginBuild.onLoad({ filter: /.*/, namespace: 'lazy-package' }, async (args) => {
      const exported = await import(args.path);
      const lines = ['let loaded;', `const load = () => (loaded ??= require(${JSON.stringify(args.path)}));`];
      for (const [name, value] of Object.entries(exported)) {
        if (typeof value !== 'function') continue;
        lines.push(`export function ${name}(...args) { return new.target ? Reflect.construct(load().${name}, args) : load().${name}.apply(this, args); }`);
      }
      return { contents: lines.join('\n'), resolveDir: root, loader: 'js' };
    });
  },
};

/** Routes the sources' import()s of packages through __packageImport. */
const packageImports = {
  name: 'package-imports',
  setup(pluginBuild) {
    pluginBuild.onLoad({ filter: /[\\/]dist[\\/]bindings[\\/].*\.js$/ }, (args) => {
      const source = readFileSync(args.path, 'utf8');
      return { contents: source.replace(PACKAGE_IMPORT, '__packageImport($1$2$1)'), loader: 'js' };
    });
  },
};

await build({
  absWorkingDir: root,
  entryPoints: ['dist/bindings/cli/main.js'],
  outfile: 'dist/cli/qcow2-wasm.cjs',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: Object.keys(manifest.dependencies).filter((name) => !BUNDLED_PACKAGES.includes(name)),
  plugins: [packageImports, lazyPackages],
  // The sources find files next to themselves (package.json, dependencies) through
  // import.meta.url; in the bundle that is the bundle's own URL.
  define: { 'import.meta.url': '__bundleUrl' },
  banner: { js: '// Built by scripts/bundle-cli.mjs from dist/bindings/cli/main.js: do not edit.\n' +
    'const __bundleUrl = require("node:url").pathToFileURL(__filename).href;\n' +
    'const __packageImport = typeof __bundleImport === "function" ? __bundleImport : (specifier) => import(specifier);' },
  footer: { js: BUNDLED_PACKAGES.map((name) => licenceComment(root, name)).join('\n') },
  logLevel: 'warning',
});

// esbuild escapes what is not ASCII in the code but keeps comments as written: escaped there too
// (text in a comment), the bundle is ASCII, which Node turns into a string by copying.
const bundlePath = `${root}dist/cli/qcow2-wasm.cjs`;
const bundled = readFileSync(bundlePath, 'utf8');
const ascii = bundled.replace(/[^\0-\x7f]/gu, (character) => `\\u{${character.codePointAt(0).toString(16)}}`);
if (ascii !== bundled) writeFileSync(bundlePath, ascii);

execFileSync(process.execPath, [`${root}scripts/cli-code-cache.cjs`], { stdio: 'inherit' });
