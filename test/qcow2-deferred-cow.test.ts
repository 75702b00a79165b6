// SPDX-License-Identifier: MIT
// The allocating-write machinery of qcow2 (allocating writes without waste): the merge
// hook that bridges gaps inside new clusters, deferred copy-on-write and each way it is forced
// (read, flush, timer, cap, a hole, a gap, writeZeroes), a power cut while a cluster is pending,
// and concurrent allocating writes into one cluster.

import { describe, expect, it } from 'vitest';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { checkQcow2 } from '../bindings/qcow2/qcow2-check.js';
import { createQcow2 } from '../bindings/qcow2/qcow2-create.js';
import type { Backend } from '../bindings/backends/backend.js';
import type { OpenOptions } from '../bindings/dispatch/image.js';
import { expectBytes } from './helpers/bytes.js';
import { wrapFaultyBackend, wrapReorderingBackend } from './helpers/faulty-backend.js';
import { makePrng } from './helpers/prng.js';

const KIB = 1024;
const MIB = 1024 * KIB;
const CLUSTER = 64 * KIB;
const SIZE = 8 * MIB;

/** Backing contents: every byte differs from zero and from its neighbours' clusters. */
function backingPattern(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = 1 + ((i * 7 + (i >> 16)) % 251);
  return bytes;
}

function filled(length: number, value: number): Uint8Array {
  return new Uint8Array(length).fill(value);
}

interface Overlay { image: Qcow2Image; file: Backend; backing: Uint8Array; model: Uint8Array }

/** A fresh overlay (64 KiB clusters) over a raw backing file of SIZE bytes, all memory backends. */
async function overlay(options: OpenOptions = {}, withBacking = true): Promise<Overlay> {
  const backing = withBacking ? backingPattern(SIZE) : new Uint8Array(SIZE);
  const file = createMemoryBackend();
  const image = await Qcow2Image.create(file, {
    virtualSize: SIZE, clusterSize: CLUSTER,
    ...(withBacking ? { backingFile: 'base.raw', backingFormat: 'raw' as const } : {}),
    openBacking: async () => createMemoryBackend(backing, { writable: false }),
    ...options,
  });
  return { image, file, backing, model: backing.slice() };
}

async function write(o: Overlay, offset: number, data: Uint8Array): Promise<void> {
  o.model.set(data, offset);
  await o.image.write(offset, data);
}

async function expectModel(o: Overlay, what: string): Promise<void> {
  expectBytes(await o.image.read(0, SIZE), o.model, what);
}

/** The image (after a flush) or a bare file passes this engine's check: no corruption, no errors. */
async function expectClean(target: Qcow2Image | Backend): Promise<void> {
  const report = target instanceof Qcow2Image ? await target.check() : await checkQcow2(target);
  expect(report.corruptions, 'corruptions').toBe(0);
  expect(report.checkErrors, 'check errors').toBe(0);
}

/** A new memory backend holding what `file` holds now (all completed writes: a power-cut state). */
async function copyOf(file: Backend): Promise<Backend> {
  const bytes = new Uint8Array(await file.getSize());
  await file.preadv(0, [bytes]);
  return createMemoryBackend(bytes);
}

/** Waits until `done()` holds (background work such as a timer-forced copy), at most ~2 s. */
async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !done(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(done()).toBe(true);
}

describe('deferred copy-on-write', () => {
  it('copies nothing when the next write fills the rest of the cluster', async () => {
    const o = await overlay();
    await write(o, CLUSTER, filled(4 * KIB, 0xa1));
    expect(o.image.stats().cowBytes).toBe(0);
    await write(o, CLUSTER + 4 * KIB, filled(CLUSTER - 4 * KIB, 0xa2));
    await o.image.flush();
    expect(o.image.stats().cowBytes).toBe(0);
    await expectModel(o, 'after filling the pending cluster');
    await expectClean(o.image);
    await o.image.close();
  });

  it('a sequential unaligned stream over a backing file copies only its first head and last tail', async () => {
    const o = await overlay();
    const requestBytes = 4 * KIB;
    const streamBytes = 4 * MIB;
    for (let batchStart = 512; batchStart + 32 * requestBytes <= 512 + streamBytes; batchStart += 32 * requestBytes) {
      const requests = [];
      for (let r = 0; r < 32; r++) {
        const data = filled(requestBytes, (batchStart / requestBytes + r) & 0xff);
        o.model.set(data, batchStart + r * requestBytes);
        requests.push({ offset: batchStart + r * requestBytes, data });
      }
      await Promise.all(o.image.multiwrite(requests));
    }
    await o.image.flush();
    const stats = o.image.stats();
    // The 512-byte head of the first cluster and the tail of the last one are copied; nothing else.
    expect(stats.cowBytes).toBe(512 + (CLUSTER - 512));
    const backingRead = o.image.backing!.stats().hostReadBytes;
    expect(backingRead).toBe(CLUSTER);
    expect(stats.hostWriteBytes - stats.guestWriteBytes - stats.cowBytes).toBeLessThan(128 * KIB); // metadata only (a few L2 slices, refcounts, L1)
    await expectModel(o, 'stream');
    await expectClean(o.image);
    await o.image.close();
  });

  it('a read of the written part forces the copy; a read of only the pending part does not', async () => {
    const o = await overlay();
    await write(o, 2 * CLUSTER, filled(4 * KIB, 0xb1));
    expectBytes(await o.image.read(2 * CLUSTER + 8 * KIB, 4 * KIB), o.model.subarray(2 * CLUSTER + 8 * KIB, 2 * CLUSTER + 12 * KIB), 'pending part');
    expect(o.image.stats().cowBytes).toBe(0);
    expectBytes(await o.image.read(2 * CLUSTER, 8 * KIB), o.model.subarray(2 * CLUSTER, 2 * CLUSTER + 8 * KIB), 'written part');
    expect(o.image.stats().cowBytes).toBe(CLUSTER - 4 * KIB);
    await expectModel(o, 'after the forced copy');
    await expectClean(o.image);
    await o.image.close();
  });

  it('flush forces every pending copy and the image reopens with the data', async () => {
    const o = await overlay();
    await write(o, 3 * CLUSTER, filled(10 * KIB, 0xc1));
    await write(o, 5 * CLUSTER, filled(CLUSTER + 100, 0xc2)); // one whole cluster, one pending
    expect(o.image.stats().cowBytes).toBe(0);
    await o.image.flush();
    expect(o.image.stats().cowBytes).toBe(2 * CLUSTER - 10 * KIB - 100);
    await expectClean(o.image);
    const saved = await copyOf(o.file);
    await o.image.close();
    const reopened = await Qcow2Image.open(saved, { openBacking: async () => createMemoryBackend(o.backing, { writable: false }) });
    expectBytes(await reopened.read(0, SIZE), o.model, 'reopened');
    await reopened.close();
  });

  it('the timer forces the copy after delayMs', async () => {
    const o = await overlay({ deferredCow: { delayMs: 5 } });
    await write(o, 4 * CLUSTER, filled(4 * KIB, 0xd1));
    expect(o.image.stats().cowBytes).toBe(0);
    await until(() => o.image.stats().cowBytes === CLUSTER - 4 * KIB);
    await expectModel(o, 'after the timer');
    await expectClean(o.image);
    await o.image.close();
  });

  it('the cap forces the oldest pending cluster', async () => {
    const o = await overlay({ deferredCow: { maxPending: 2, delayMs: 60_000 } });
    for (let c = 0; c < 3; c++) await write(o, (10 + c) * CLUSTER, filled(4 * KIB, 0xe0 + c));
    await until(() => o.image.stats().cowBytes === CLUSTER - 4 * KIB);
    await expectModel(o, 'after the cap');
    await expectClean(o.image);
    await o.image.close();
  });

  it('a write that would leave a hole, writeZeroes and discard complete the cluster first', async () => {
    const o = await overlay();
    await write(o, 20 * CLUSTER, filled(4 * KIB, 0xf1));
    await write(o, 20 * CLUSTER + 16 * KIB, filled(4 * KIB, 0xf2)); // hole at [4 KiB, 16 KiB)
    expect(o.image.stats().cowBytes).toBe(CLUSTER - 4 * KIB);
    await write(o, 21 * CLUSTER, filled(4 * KIB, 0xf3));
    await o.image.writeZeroes(21 * CLUSTER, CLUSTER);
    o.model.fill(0, 21 * CLUSTER, 22 * CLUSTER);
    await write(o, 22 * CLUSTER, filled(4 * KIB, 0xf4));
    await o.image.discard(22 * CLUSTER, CLUSTER);
    o.model.fill(0, 22 * CLUSTER, 23 * CLUSTER); // v3 discard reads as zeros
    await expectModel(o, 'after hole, zeroes and discard');
    await expectClean(o.image);
    await o.image.close();
  });

  it('is not used where nothing would be copied (no backing file) and can be switched off', async () => {
    const fresh = await overlay({}, false);
    await write(fresh, 512, filled(4 * KIB, 1));
    expect(fresh.image.stats().cowBytes).toBe(0);
    await expectModel(fresh, 'fresh');
    await fresh.image.close();
    const off = await overlay({ deferredCow: false });
    await write(off, 512, filled(4 * KIB, 2));
    expect(off.image.stats().cowBytes).toBe(CLUSTER - 4 * KIB); // copied at once, in the same host write
    await expectModel(off, 'off');
    await expectClean(off.image);
    await off.image.close();
  });

  it('a power cut while clusters are pending loses only unflushed writes and corrupts nothing', async () => {
    const o = await overlay();
    await write(o, 0, filled(CLUSTER, 0x11));
    await write(o, 30 * CLUSTER, filled(8 * KIB, 0x12));
    await o.image.flush();
    const flushedModel = o.model.slice();
    // Pending again, plus an L2 table's worth of new clusters elsewhere; then the power goes.
    await write(o, 31 * CLUSTER, filled(4 * KIB, 0x13));
    await write(o, 100 * CLUSTER, filled(3 * CLUSTER + 512, 0x14));
    const crashed = await copyOf(o.file);
    await expectClean(crashed);
    const reopened = await Qcow2Image.open(crashed, { openBacking: async () => createMemoryBackend(o.backing, { writable: false }) });
    const after = await reopened.read(0, SIZE);
    expectBytes(after.subarray(0, 31 * CLUSTER), flushedModel.subarray(0, 31 * CLUSTER), 'flushed data');
    // The pending cluster's bytes were never committed: the cluster still reads the backing file.
    expectBytes(after.subarray(31 * CLUSTER, 32 * CLUSTER), o.backing.subarray(31 * CLUSTER, 32 * CLUSTER), 'pending cluster');
    await reopened.close();
    await o.image.close();
  });
});

describe('the qcow2 gap merge', () => {
  it('bridges a gap inside a new cluster with one host write, zeros without a backing file', async () => {
    const o = await overlay({}, false);
    const before = o.image.stats();
    const a = filled(4 * KIB, 0x21);
    const b = filled(4 * KIB, 0x22);
    o.model.set(a, 0);
    o.model.set(b, 8 * KIB);
    await Promise.all(o.image.multiwrite([{ offset: 0, data: a }, { offset: 8 * KIB, data: b }]));
    const stats = o.image.stats();
    expect(stats.extents - before.extents).toBe(1);
    expect(stats.gapBytes).toBe(4 * KIB);
    expect(stats.cowBytes).toBe(0);
    await expectModel(o, 'gap of zeros');
    await expectClean(o.image);
    await o.image.close();
  });

  it('fills the gap with the backing file data', async () => {
    const o = await overlay();
    const requests = [{ offset: 40 * CLUSTER, data: filled(CLUSTER / 2, 0x31) }, { offset: 40 * CLUSTER + CLUSTER / 2 + 512, data: filled(CLUSTER / 2 - 512, 0x32) }];
    for (const r of requests) o.model.set(r.data, r.offset);
    await Promise.all(o.image.multiwrite(requests));
    expect(o.image.stats().extents).toBe(1);
    expect(o.image.stats().gapBytes).toBe(512);
    expect(o.image.stats().cowBytes).toBe(0);
    await expectModel(o, 'gap from backing');
    await expectClean(o.image);
    await o.image.close();
  });

  it('does not bridge gaps in clusters already written in place', async () => {
    const o = await overlay({}, false);
    await write(o, 0, filled(CLUSTER, 0x41));
    const before = o.image.stats().extents;
    const requests = [{ offset: 0, data: filled(KIB, 0x42) }, { offset: 8 * KIB, data: filled(KIB, 0x43) }];
    for (const r of requests) o.model.set(r.data, r.offset);
    await Promise.all(o.image.multiwrite(requests));
    expect(o.image.stats().extents - before).toBe(2);
    await expectModel(o, 'in place');
    await o.image.close();
  });

  it('merges gaps only in full mode', async () => {
    for (const merge of ['off', 'adjacent'] as const) {
      const o = await overlay({ merge }, false);
      await Promise.all(o.image.multiwrite([{ offset: 0, data: filled(KIB, 1) }, { offset: 4 * KIB, data: filled(KIB, 2) }]));
      expect(o.image.stats().gapBytes, merge).toBe(0);
      await o.image.close();
    }
  });
});

describe('concurrent allocating writes into one cluster', () => {
  it('never allocate it twice and keep later-wins order, out of order on the backend', async () => {
    for (const seed of [1, 2, 3, 4]) {
      const prng = makePrng(seed);
      const backing = backingPattern(SIZE);
      const file = createMemoryBackend();
      await createQcow2(file, { virtualSize: SIZE, clusterSize: 4 * KIB, backingFile: 'b', backingFormat: 'raw' });
      const image = await Qcow2Image.open(wrapReorderingBackend(file, seed), {
        openBacking: async () => createMemoryBackend(backing, { writable: false }), deferredCow: { delayMs: 1 },
      });
      const model = backing.slice();
      const inFlight: Promise<void>[] = [];
      // Many small batches into the same few clusters, none awaited until the end.
      for (let batch = 0; batch < 200; batch++) {
        const requests = [];
        for (let r = 0; r < 1 + prng.int(6); r++) {
          const offset = prng.int(16) * 1024 + prng.int(4) * 4 * KIB * 64;
          const data = filled(1 + prng.int(3 * KIB), prng.int(256));
          model.set(data, offset);
          requests.push({ offset, data });
        }
        inFlight.push(...image.multiwrite(requests));
        if (prng.int(10) === 0) inFlight.push(image.read(prng.int(SIZE - 8 * KIB), 8 * KIB).then(() => undefined));
      }
      await Promise.all(inFlight);
      expectBytes(await image.read(0, SIZE), model, `seed ${seed}`);
      const report = await image.check();
      await image.close();
      expect(report.corruptions, `seed ${seed}`).toBe(0);
      expect(report.leaks, `seed ${seed}: a cluster allocated twice leaks one of them`).toBe(0);
    }
  });

  it('do not serialise unrelated writes: in-place writes into one cluster and allocations of other clusters overlap', async () => {
    const file = createMemoryBackend();
    await createQcow2(file, { virtualSize: SIZE, clusterSize: CLUSTER });
    let holding = false;
    const faulty = wrapFaultyBackend(file, { decide: (call) => (holding && call.op === 'pwritev' ? { hold: true } : undefined) });
    const image = await Qcow2Image.open(faulty);
    await image.write(0, filled(CLUSTER, 1)); // cluster 0 is now written in place
    holding = true;
    // Separate ticks, so nothing merges: two in-place writes into cluster 0, two allocations.
    const writes = [image.write(0, filled(KIB, 2))];
    await Promise.resolve();
    writes.push(image.write(8 * KIB, filled(KIB, 3)));
    await new Promise((resolve) => setTimeout(resolve, 0));
    writes.push(image.write(5 * CLUSTER, filled(KIB, 4)));
    await new Promise((resolve) => setTimeout(resolve, 0));
    writes.push(image.write(9 * CLUSTER, filled(KIB, 5)));
    await faulty.whenHeld(4); // all four host writes are on the backend at once
    holding = false;
    faulty.releaseAll();
    await Promise.all(writes);
    const model = new Uint8Array(SIZE);
    model.fill(1, 0, CLUSTER).fill(2, 0, KIB).fill(3, 8 * KIB, 9 * KIB).fill(4, 5 * CLUSTER, 5 * CLUSTER + KIB).fill(5, 9 * CLUSTER, 9 * CLUSTER + KIB);
    expectBytes(await image.read(0, SIZE), model, 'after the concurrent writes');
    const report = await image.check();
    expect(report.corruptions + report.leaks + report.checkErrors).toBe(0);
    await image.close();
  });
});
