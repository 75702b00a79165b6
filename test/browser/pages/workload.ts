// SPDX-License-Identifier: MIT
// The seeded write workload of the OPFS reload test, shared by the page (which writes and checks
// it) and the Node side (which builds the flat model for qemu-img compare).

import { makePrng } from '../../helpers/prng.js';

/** Virtual size of the test image. */
export const RELOAD_VIRTUAL_BYTES = 32 * 1024 * 1024;

/** One guest write of the workload. */
export interface PlannedWrite {
  offset: number;
  data: Uint8Array;
}

/**
 * Three multiwrite batches from `seed`: 64 sequential unaligned 4 KiB writes, 48 scattered ones of
 * random size (some overlapping each other: the later one wins), and 32 writes of 512 bytes that
 * land inside earlier ones.
 */
export function reloadWorkload(seed: number): PlannedWrite[][] {
  const prng = makePrng(seed);
  const sequential: PlannedWrite[] = [];
  for (let i = 0; i < 64; i++) sequential.push({ offset: 512 + i * 4096, data: prng.fill(new Uint8Array(4096)) });
  const scattered: PlannedWrite[] = [];
  for (let i = 0; i < 48; i++) {
    const length = 1 + prng.int(100_000);
    scattered.push({ offset: prng.int(RELOAD_VIRTUAL_BYTES - length), data: prng.fill(new Uint8Array(length)) });
  }
  const patches: PlannedWrite[] = [];
  for (let i = 0; i < 32; i++) {
    const under = scattered[prng.int(scattered.length)]!;
    patches.push({ offset: under.offset + prng.int(Math.max(1, under.data.length - 512)), data: prng.fill(new Uint8Array(512)) });
  }
  return [sequential, scattered, patches];
}

/** The flat disk the workload leaves: the writes applied one by one, in order. */
export function reloadModel(seed: number): Uint8Array {
  const model = new Uint8Array(RELOAD_VIRTUAL_BYTES);
  for (const batch of reloadWorkload(seed)) for (const { offset, data } of batch) model.set(data, offset);
  return model;
}
