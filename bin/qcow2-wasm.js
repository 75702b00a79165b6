#!/usr/bin/env node
// SPDX-License-Identifier: MIT
// Launcher of the `qcow2-wasm` command: bindings/cli/main.ts, which `npm run build` compiles and
// bundles into one file, dist/cli/qcow2-wasm.cjs (scripts/bundle-cli.mjs), so a run loads one
// module rather than dozens. The command moves data through libuv's thread pool, whose default of
// 4 threads leaves reads queued behind writes (buffered writes to one file take turns) and behind
// flushes, so the command runs with 16 threads unless UV_THREADPOOL_SIZE is set. libuv reads the
// variable when the pool starts, on the first file operation, so this file sets it before it
// loads anything (it is CommonJS, bin/package.json, so nothing is loaded before it runs).
//
// The bundle is compiled with V8's code cache when the build left one beside it
// (dist/cli/qcow2-wasm.cjs.cache: the bundle's length and CRC-32, then V8's data), which saves
// compiling the bundle and the functions a run calls. A cache made from other bytes than the
// bundle's is not used (V8 itself checks only the length); one V8 refuses (another Node version,
// other V8 flags) is compiled past; a missing or unreadable one is no error, and neither is a Node
// without zlib.crc32 (before 20.15), which cannot check it. Either way the command runs the same
// code. (A CRC, not a SHA: loading node:crypto would take longer than the cache saves.)
'use strict';

process.env.UV_THREADPOOL_SIZE ??= '16';

const { readFileSync } = require('node:fs');
const { createRequire } = require('node:module');
const { dirname, join } = require('node:path');
const { Script } = require('node:vm');
const { crc32 } = require('node:zlib');

const BUNDLE_PATH = join(__dirname, '..', 'dist', 'cli', 'qcow2-wasm.cjs');
const HEADER_BYTES = 8;

/**
 * What a code cache of the bundle `source` starts with: its length and CRC-32 (big-endian 32-bit
 * words); undefined where Node has no zlib.crc32.
 */
function cacheHeader(source) {
  if (typeof crc32 !== 'function') return undefined;
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(source.length >>> 0, 0);
  header.writeUInt32BE(crc32(source) >>> 0, 4);
  return header;
}

/**
 * Loads the bundle at `bundlePath` as Node loads a CommonJS module, with the code cache at
 * `cachePath` when that cache was made from these bytes. The bundle's dynamic imports of packages
 * go through `__bundleImport`, its sixth wrapper argument (a script compiled this way has no
 * import() of its own). Returns its exports, the compiled script (for createCachedData) and what
 * became of the cache: 'used', 'rejected' (by V8), 'stale' (made from other bytes), 'missing', or
 * 'unchecked' (no zlib.crc32 to check it with: not used).
 */
function loadBundle(bundlePath, cachePath = `${bundlePath}.cache`) {
  const source = readFileSync(bundlePath);
  let cache;
  try {
    cache = readFileSync(cachePath);
  } catch {
    // No cache: compiled from the source.
  }
  let cachedData;
  let cacheState = 'missing';
  if (cache !== undefined) {
    const header = cacheHeader(source);
    if (header === undefined) cacheState = 'unchecked';
    else if (cache.length > HEADER_BYTES && header.equals(cache.subarray(0, HEADER_BYTES))) cachedData = cache.subarray(HEADER_BYTES);
    else cacheState = 'stale';
  }
  const wrapped = '(function (exports, require, module, __filename, __dirname, __bundleImport) { ' + source.toString('utf8') + '\n})';
  const script = new Script(wrapped, { filename: bundlePath, cachedData });
  if (cachedData !== undefined) cacheState = script.cachedDataRejected ? 'rejected' : 'used';
  const module = { exports: {} };
  script.runInThisContext()(module.exports, createRequire(bundlePath), module, bundlePath, dirname(bundlePath),
    (specifier) => import(specifier));
  return { exports: module.exports, script, cacheState };
}

module.exports = { loadBundle, cacheHeader, BUNDLE_PATH };

if (require.main === module) {
  loadBundle(BUNDLE_PATH).exports.main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
