#!/usr/bin/env node
// SPDX-License-Identifier: MIT
// Launcher of the `qcow2-wasm` command (bindings/cli/main.ts, built to dist/ by `npm run build`).
import { main } from '../dist/bindings/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
