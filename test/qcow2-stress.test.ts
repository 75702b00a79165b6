// SPDX-License-Identifier: MIT
// Concurrency on qcow2: overlapping multiwrite batches left in flight, writeZeroes and discards,
// reads racing them and flushes, over a backend that completes calls out of order, with metadata caches small enough
// that slices are evicted and written back mid-workload. Every read must see exactly the writes
// submitted before it; afterwards the file, reopened by this package and read by qemu-img,
// holds the model's bytes, and qemu-img check is clean.

import { it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import type { WriteRequest } from '../bindings/dispatch/image.js';
import { wrapReorderingBackend } from './helpers/faulty-backend.js';
import { describeWithQemu, zoo, convertToRaw, qemuCheck, type ZooImage } from './helpers/qemu.js';
import { makePrng } from './helpers/prng.js';
import { ModelDisk } from './helpers/model.js';
import { backendBytes, keepOpen } from './helpers/backend-contents.js';

const BASE_SEED = Number(process.env.QCOW2_WASM_SEED ?? 1);
const SEEDS_PER_IMAGE = 6;
const MERGE_MODES = ['off', 'adjacent', 'full'] as const;
const IMAGES = ['v3.qcow2', 'v2.qcow2', 'overlay.qcow2', 'xl2.qcow2', 'c512_rb1.qcow2', 'c4k_rb64.qcow2', 'comp_conv.qcow2', 'snap.qcow2'];

describeWithQemu('qcow2 under concurrent overlapping I/O on an out-of-order backend', () => {
  let dir: string;
  let images: ZooImage[];
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-stress-'));
    images = zoo(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it(`${IMAGES.length} image kinds x ${SEEDS_PER_IMAGE} seeds: reads see every earlier write; check is clean`, async () => {
    let operations = 0;
    for (const name of IMAGES) {
      const image = images.find((i) => i.name === name)!;
      const original = convertToRaw(image.path);
      for (let seed = BASE_SEED; seed < BASE_SEED + SEEDS_PER_IMAGE; seed++) {
        const store = createMemoryBackend(new Uint8Array(readFileSync(image.path)));
        // Every merge switch, and deferred copy-on-write with a short timer and a small cap so
        // that both force pending clusters while the workload runs.
        const merge = MERGE_MODES[seed % MERGE_MODES.length];
        const disk = await Qcow2Image.open(wrapReorderingBackend(keepOpen(store), seed), {
          cacheBytes: 4096, merge, deferredCow: { delayMs: seed % 3, maxPending: 1 + (seed % 4) },
          openBacking: async (backingName) => createMemoryBackend(new Uint8Array(readFileSync(join(dir, backingName)))),
        });
        const model = new ModelDisk();
        model.write(0, original);
        const prng = makePrng(seed);
        let inFlight: Promise<void>[] = [];
        for (let op = 0; op < 60; op++, operations++) {
          const choice = prng.int(10);
          if (choice < 7) {
            const batch: WriteRequest[] = [];
            const count = 1 + prng.int(8);
            for (let i = 0; i < count; i++) {
              const length = 1 + prng.int(prng.int(3) === 0 ? 100_000 : 5000);
              batch.push({ offset: prng.int(disk.virtualSize - length), data: prng.fill(new Uint8Array(length)) });
            }
            inFlight.push(...disk.multiwrite(batch));
            for (const request of batch) model.write(request.offset, request.data);
          } else if (choice === 7 && prng.int(2) === 0) {
            const length = 1 + prng.int(prng.int(2) === 0 ? 300_000 : 5000);
            const offset = prng.int(disk.virtualSize - length);
            if (prng.int(3) === 0) {
              // Discard leaves its range unspecified: settle, discard, adopt what it reads as.
              await Promise.all(inFlight);
              inFlight = [];
              await disk.discard(offset, length);
              model.write(offset, await disk.read(offset, length));
            } else {
              inFlight.push(disk.writeZeroes(offset, length));
              model.zero(offset, length);
            }
          } else if (choice < 9) {
            const length = 1 + prng.int(50_000);
            const offset = prng.int(disk.virtualSize - length);
            const expected = model.read(offset, length);
            inFlight.push(disk.read(offset, length).then((got) => {
              if (Buffer.compare(got, expected) !== 0) throw new Error(`${name}, seed ${seed} (merge ${merge}), op ${op}: read ${offset}+${length} differs`);
            }));
          } else inFlight.push(disk.flush());
          if (prng.int(4) === 0) {
            await Promise.all(inFlight);
            inFlight = [];
          }
        }
        await Promise.all(inFlight);
        expect(Buffer.compare(await disk.read(0, disk.virtualSize), model.read(0, disk.virtualSize)), `${name}, seed ${seed}`).toBe(0);
        await disk.close();
        const path = join(dir, `stress_${seed}_${name}`);
        writeFileSync(path, await backendBytes(store));
        const reopened = await Qcow2Image.open(createMemoryBackend(await backendBytes(store), { writable: false }), {
          readOnly: true, openBacking: async (backingName) => createMemoryBackend(new Uint8Array(readFileSync(join(dir, backingName)))),
        });
        expect(Buffer.compare(await reopened.read(0, reopened.virtualSize), model.read(0, reopened.virtualSize)), `${name}, seed ${seed}: the file reopened`).toBe(0);
        await reopened.close();
        const check = qemuCheck(path);
        expect({ corruptions: check.corruptions ?? 0, leaks: check.leaks ?? 0, errors: check['check-errors'] }, `${name}, seed ${seed}: qemu-img check`)
          .toEqual({ corruptions: 0, leaks: 0, errors: 0 });
        expect(Buffer.compare(convertToRaw(path), model.read(0, original.byteLength)), `${name}, seed ${seed}: qemu-img reads differ`).toBe(0);
        rmSync(path);
      }
    }
    console.log(`qcow2 stress: ${operations} operations on ${IMAGES.length} image kinds, ${SEEDS_PER_IMAGE} seeds each`);
  }, 300_000); // minutes when the machine is shared; no timing is asserted
});
