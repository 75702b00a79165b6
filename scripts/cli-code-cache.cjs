// SPDX-License-Identifier: MIT
// Writes the V8 code cache of the command's bundle, dist/cli/qcow2-wasm.cjs.cache, which
// bin/qcow2-wasm.js compiles the bundle with: the bundle's length and CRC-32, then V8's data. Run by
// scripts/bundle-cli.mjs in a Node process of its own, started with no V8 flags as the command is
// (V8 refuses a cache made under other flags). The bundle is loaded exactly as the launcher loads
// it, then runs a few small commands (create, convert to qcow2 and to raw, info) in a temporary
// directory, output discarded, so the cache holds the functions a run calls as well as the
// bundle's top level.

'use strict';

const { mkdtempSync, readFileSync, rmSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { BUNDLE_PATH, cacheHeader, loadBundle } = require('../bin/qcow2-wasm.js');

async function warmUp(main, dir) {
  const raw = new Uint8Array(3 << 20);
  for (let i = 0; i < 1 << 20; i++) raw[i] = (i * 7) >> 3; // data, then 2 MiB of zeros
  writeFileSync(join(dir, 'disk.raw'), raw);
  const io = { stdout: () => {}, stderr: (text) => { throw new Error(`warm-up run failed: ${text}`); }, cwd: dir };
  const runs = [
    ['convert', '-f', 'raw', '-O', 'qcow2', 'disk.raw', 'base.qcow2'],
    ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'overlay.qcow2'],
    ['convert', '-O', 'qcow2', 'overlay.qcow2', 'copy.qcow2'],
    ['convert', '-O', 'raw', 'overlay.qcow2', 'copy.raw'],
    ['info', 'overlay.qcow2'],
  ];
  for (const args of runs) {
    const code = await main(args, io);
    if (code !== 0) throw new Error(`warm-up run \`qcow2-wasm ${args.join(' ')}\` exited with ${code}`);
  }
}

async function writeCodeCache() {
  const cachePath = `${BUNDLE_PATH}.cache`;
  rmSync(cachePath, { force: true });
  const { exports, script } = loadBundle(BUNDLE_PATH);
  const dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-code-cache-'));
  try {
    await warmUp(exports.main, dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const header = cacheHeader(readFileSync(BUNDLE_PATH));
  if (header === undefined) {
    console.warn(`no code cache written for the command: this Node (${process.version}) has no zlib.crc32 to label it with`);
    return;
  }
  writeFileSync(cachePath, Buffer.concat([header, script.createCachedData()]));
}

writeCodeCache().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
