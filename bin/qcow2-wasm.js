#!/usr/bin/env node
// SPDX-License-Identifier: MIT
// Launcher of the `qcow2-wasm` command (bindings/cli/main.ts, built to dist/ by `npm run build`).
// The command moves data through libuv's thread pool, whose default of 4 threads leaves reads
// queued behind writes (buffered writes to one file take turns) and behind flushes, so the
// command runs with 16 threads unless UV_THREADPOOL_SIZE is set. libuv reads the variable when
// the pool starts, on the first file operation; Node 20 already does one while loading an ES
// module, so this file is CommonJS (bin/package.json) and sets it before it imports anything.
'use strict';

process.env.UV_THREADPOOL_SIZE ??= '16';
import('../dist/bindings/cli/main.js').then(async ({ main }) => {
  process.exitCode = await main(process.argv.slice(2));
});
