// SPDX-License-Identifier: MIT
// The Deno test run (`deno test test/deno/run.test.ts`, driven by test/deno.test.ts): the Deno
// file backend's tests and the core test files that run without Node-only tools, loaded through
// the vitest shim. Each file is one Deno test; its describe blocks and tests are steps.
//
// Left out, and why: every test of qcow2-read, qcow2-write, qcow2-stress, qcow2-faults,
// qcow2-dirty, qcow2-subclusters and qemu-zoo needs qemu-img (the Node project runs them);
// cli and readme start Node processes; backend-node tests the Node backend. The files below
// that also hold QEMU oracle blocks run their other tests; the oracle blocks show as ignored.

import { loadTestFile } from './vitest-shim.ts';

await loadTestFile('vitest-shim-check', () => import('./vitest-shim-check.ts'));
await loadTestFile('deno-file-backend', () => import('./deno-file-backend.ts'));
await loadTestFile('backend-memory', () => import('../backend-memory.test.ts'));
await loadTestFile('backend-wrappers', () => import('../backend-wrappers.test.ts'));
await loadTestFile('merge', () => import('../merge.test.ts'));
await loadTestFile('multiwrite', () => import('../multiwrite.test.ts'));
await loadTestFile('multiwrite-failure', () => import('../multiwrite-failure.test.ts'));
await loadTestFile('raw-differential', () => import('../raw-differential.test.ts'));
await loadTestFile('qcow2-header', () => import('../qcow2-header.test.ts'));
await loadTestFile('qcow2-check', () => import('../qcow2-check.test.ts'));
await loadTestFile('qcow2-create', () => import('../qcow2-create.test.ts'));
