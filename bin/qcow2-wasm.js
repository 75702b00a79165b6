#!/usr/bin/env node
// SPDX-License-Identifier: MIT
// Launcher of the `qcow2-wasm` command: bindings/cli/main.ts, which `npm run build` compiles and
// bundles into one file, dist/cli/qcow2-wasm.cjs (scripts/bundle-cli.mjs), so a run loads one
// module rather than dozens. The command moves data through libuv's thread pool, whose default of
// 4 threads leaves reads queued behind writes (buffered writes to one file take turns) and behind
// flushes, so the command runs with 16 threads unless UV_THREADPOOL_SIZE is set. libuv reads the
// variable when the pool starts, on the first file operation, so this file sets it before it
// loads anything (it is CommonJS, bin/package.json, so nothing is loaded before it runs).
'use strict';

process.env.UV_THREADPOOL_SIZE ??= '16';
const { main } = require('../dist/cli/qcow2-wasm.cjs');
main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
