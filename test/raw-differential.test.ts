// SPDX-License-Identifier: MIT
// Seeded differential test of the multiwrite path on raw images: random batches (overlaps,
// duplicates, iovec data, zero-length requests, positions up to 2^52) against the model disk.
// A failure names its seed; rerun with QCOW2_WASM_SEED=<seed> to reproduce.

import { describe, it, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawImage } from '../bindings/raw/raw-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import type { Backend } from '../bindings/backends/backend.js';
import type { WriteRequest } from '../bindings/dispatch/image.js';
import type { MergeMode } from '../bindings/core/merge-core.js';
import { makePrng, type Prng } from './helpers/prng.js';
import { ModelDisk } from './helpers/model.js';
import { expectBytes } from './helpers/bytes.js';

const BASE_SEED = Number(process.env.QCOW2_WASM_SEED ?? 20261127);
const WINDOW_BYTES = 64 * 1024;

/** Builds one random batch inside a 64 KiB window at `base`. */
function randomBatch(prng: Prng, base: number): WriteRequest[] {
  const count = 1 + prng.int(16);
  const batch: WriteRequest[] = [];
  for (let i = 0; i < count; i++) {
    if (batch.length > 0 && prng.int(8) === 0) {
      // A duplicate of an earlier request's range with new data.
      const earlier = batch[prng.int(batch.length)];
      const length = earlier.data instanceof Uint8Array ? earlier.data.byteLength : earlier.data.reduce((s, b) => s + b.byteLength, 0);
      batch.push({ offset: earlier.offset, data: prng.fill(new Uint8Array(length)) });
      continue;
    }
    const length = prng.int(8) === 0 ? 0 : 1 + prng.int(prng.int(4) === 0 ? 9000 : 1500);
    const offset = base + prng.int(WINDOW_BYTES - length);
    const bytes = prng.fill(new Uint8Array(length));
    if (prng.int(3) === 0 && length > 2) {
      // The same bytes as an iovec list of 2..4 parts (some empty).
      const cuts = [0, prng.int(length), prng.int(length), length].sort((a, b) => a - b);
      batch.push({ offset, data: cuts.slice(1).map((cut, k) => bytes.subarray(cuts[k], cut)) });
    } else batch.push({ offset, data: bytes });
  }
  return batch;
}

/**
 * Runs `batchCount` random batches on `image`, checking after each that the window reads back
 * as the model says. Every fourth batch is left in flight while the next is submitted and read
 * at once (read-after-submitted-write across batches).
 */
async function runDifferential(image: RawImage, seed: number, batchCount: number, maxBase: number): Promise<void> {
  const prng = makePrng(seed);
  const model = new ModelDisk();
  const bases = Array.from({ length: 8 }, () => Math.floor(prng.int(Math.floor(maxBase / WINDOW_BYTES))) * WINDOW_BYTES + prng.int(4096));
  let pending: Promise<void>[] = [];
  for (let b = 0; b < batchCount; b++) {
    const base = bases[prng.int(bases.length)];
    const batch = randomBatch(prng, base);
    const promises = image.multiwrite(batch);
    for (const request of batch) model.write(request.offset, request.data);
    pending.push(...promises);
    if (b % 4 !== 3) {
      await Promise.all(pending);
      pending = [];
    }
    // Reads submitted now must see every write submitted before them, settled or not.
    const got = await image.read(base, WINDOW_BYTES);
    expectBytes(got, model.read(base, WINDOW_BYTES), `seed ${seed}, batch ${b}, window at ${base}`);
  }
  await Promise.all(pending);
  for (const base of bases) {
    expectBytes(await image.read(base, WINDOW_BYTES), model.read(base, WINDOW_BYTES), `seed ${seed}, final window at ${base}`);
  }
}

async function sparseMemoryImage(mode: MergeMode): Promise<RawImage> {
  return RawImage.open(createMemoryBackend(2 ** 52 + WINDOW_BYTES * 2), { merge: mode });
}

describe('raw multiwrite against the model disk', () => {
  it('10,000 random batches, full merging, positions up to 2^52 (memory backend)', async () => {
    const image = await sparseMemoryImage('full');
    await runDifferential(image, BASE_SEED, 10_000, 2 ** 52);
    const stats = image.stats();
    // Sanity that merging happened at all on this workload.
    if (stats.mergedRequests === 0) throw new Error(`seed ${BASE_SEED}: no request was ever merged`);
  }, 120_000);

  for (const mode of ['adjacent', 'off'] as const) {
    it(`2,000 random batches, merge mode '${mode}'`, async () => {
      await runDifferential(await sparseMemoryImage(mode), BASE_SEED + 1, 2_000, 2 ** 52);
    }, 60_000);
  }

  describe('on the Node file backend (a sparse temp file)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-diff-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));
    it('1,000 random batches, positions up to 2^40', async () => {
      const backend: Backend = await openNodeBackend(join(dir, 'disk.raw'), { writable: true, create: true });
      await backend.truncate!(2 ** 40 + WINDOW_BYTES * 2);
      const image = await RawImage.open(backend);
      try {
        await runDifferential(image, BASE_SEED + 2, 1_000, 2 ** 40);
      } finally {
        await image.close();
      }
    }, 60_000);
  });
});
