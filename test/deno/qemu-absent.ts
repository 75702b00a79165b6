// SPDX-License-Identifier: MIT
// Stands in for test/helpers/qemu.ts under Deno (deno.json maps it here). The QEMU oracle tests
// run in the Node project, where qemu-img is required in CI; under Deno their describe blocks
// are declared but registered as ignored steps (Deno's summary counts them), and the files'
// tests that need no QEMU run. Every QEMU helper throws if a test reaches it anyway.

import { describe } from 'vitest';

import type * as real from '../helpers/qemu.ts';

export type * from '../helpers/qemu.ts';

/** Why the oracle tests do not run here; part of each ignored block's name. */
const REASON = 'needs qemu-img: runs in the Node project';

/** A helper with the real one's signature that throws when called. */
const unavailable = <K extends keyof typeof real>(name: K): (typeof real)[K] => ((): never => {
  throw new Error(`${name}: the QEMU helpers are not available under Deno (${REASON})`);
}) as unknown as (typeof real)[K];

/** Declares the block as skipped: Deno reports it as ignored, with the reason in its name. */
export function describeWithQemu(name: string, body: () => void): void {
  describe.skip(`${name} [${REASON}]`, body);
}

/** QEMU is never used under Deno. */
export function hasQemuImg(): boolean {
  return false;
}

export const requireQemu = unavailable('requireQemu');
export const qemuImg = unavailable('qemuImg');
export const qemuIo = unavailable('qemuIo');
export const createOptions = unavailable('createOptions');
export const qemuIoCommand = unavailable('qemuIoCommand');
export const runImageOps = unavailable('runImageOps');
export const makeImage = unavailable('makeImage');
export const convertToRaw = unavailable('convertToRaw');
export const qemuCheck = unavailable('qemuCheck');
export const qemuMap = unavailable('qemuMap');
export const qemuInfo = unavailable('qemuInfo');
export const zoo = unavailable('zoo');
export const applyOps = unavailable('applyOps');
export const zooContent = unavailable('zooContent');
