// SPDX-License-Identifier: MIT
// The qcow2 write matrix: seeded random workloads (multiwrite batches with overlaps, batches left
// in flight, single writes, writeZeroes, flushes) on every kind of image qemu-img makes, against
// the model disk. Afterwards `qemu-img check` finds no corruption and no leak, the image reads
// (by QEMU and by this engine after reopening) exactly as the model, and QEMU can write into it.

import { it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, copyFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { openImageFile, createImageFile } from '../bindings/node.js';
import type { BlockImage, WriteRequest } from '../bindings/dispatch/image.js';
import { describeWithQemu, zoo, convertToRaw, qemuCheck, qemuIo, qemuImg, type ZooImage } from './helpers/qemu.js';
import { makePrng, type Prng } from './helpers/prng.js';
import { ModelDisk } from './helpers/model.js';

const SEED = Number(process.env.QCOW2_WASM_SEED ?? 4242);
/** Each zoo image is written with one merge switch, in turn. */
const MERGE_MODES = ['off', 'adjacent', 'full'] as const;

async function randomWorkload(image: BlockImage, model: ModelDisk, prng: Prng, operations: number): Promise<void> {
  const size = image.virtualSize;
  let inFlight: Promise<void>[] = [];
  for (let op = 0; op < operations; op++) {
    const choice = prng.int(10);
    if (choice < 6) {
      const base = prng.int(size);
      const batch: WriteRequest[] = [];
      const count = 1 + prng.int(12);
      for (let i = 0; i < count; i++) {
        const length = 1 + prng.int(prng.int(4) === 0 ? 150_000 : 9000);
        const offset = Math.min(size - length, Math.max(0, base + prng.int(200_000) - 50_000));
        batch.push({ offset, data: prng.fill(new Uint8Array(Math.min(length, size))) });
      }
      inFlight.push(...image.multiwrite(batch));
      for (const request of batch) model.write(request.offset, request.data);
    } else if (choice < 8) {
      const length = 1 + prng.int(70_000);
      const offset = prng.int(size - length);
      const data = prng.fill(new Uint8Array(length));
      inFlight.push(image.write(offset, data));
      model.write(offset, data);
    } else if (choice === 8) {
      const length = 1 + prng.int(200_000);
      const offset = prng.int(size - Math.min(length, size - 1));
      const clipped = Math.min(length, size - offset);
      inFlight.push(image.writeZeroes(offset, clipped));
      model.zero(offset, clipped);
    } else {
      inFlight.push(image.flush());
    }
    if (prng.int(3) === 0) {
      await Promise.all(inFlight);
      inFlight = [];
    }
  }
  await Promise.all(inFlight);
}

describeWithQemu('qcow2 write matrix against qemu-img check and compare', () => {
  let dir: string;
  let images: ZooImage[];
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-write-'));
    images = zoo(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('random workloads on every zoo image keep it consistent and equal to the model', async () => {
    const done: string[] = [];
    for (const [index, image] of images.filter((i) => i.format === 'qcow2').entries()) {
      const merge = MERGE_MODES[index % MERGE_MODES.length];
      const path = join(dirname(image.path), `w_${image.name}`);
      copyFileSync(image.path, path);
      const model = new ModelDisk();
      const original = convertToRaw(image.path);
      model.write(0, original);
      const prng = makePrng(SEED + image.name.length);
      const disk = await openImageFile(path, { merge });
      expect(disk.readOnly, image.name).toBe(false);
      try {
        await randomWorkload(disk, model, prng, 120);
        const whole = await disk.read(0, disk.virtualSize);
        expect(Buffer.compare(whole, model.read(0, disk.virtualSize)), `${image.name} (seed ${SEED}): reads differ from the model before close`).toBe(0);
      } finally {
        await disk.close();
      }
      const check = qemuCheck(path);
      expect({ name: image.name, corruptions: check.corruptions ?? 0, leaks: check.leaks ?? 0, errors: check['check-errors'] },
        `qemu-img check of ${image.name} (seed ${SEED})`).toEqual({ name: image.name, corruptions: 0, leaks: 0, errors: 0 });
      expect(Buffer.compare(convertToRaw(path), model.read(0, original.byteLength)), `${image.name}: qemu-img reads differ from the model`).toBe(0);
      // QEMU writes into our image; we read QEMU's data.
      const io = qemuIo(['-f', 'qcow2', '-c', `write -P 0x5a 4096 65536`, path], dirname(path));
      expect(io.code, io.stderr).toBe(0);
      model.write(4096, new Uint8Array(65536).fill(0x5a));
      const reopened = await openImageFile(path, { readOnly: true });
      try {
        const whole = await reopened.read(0, reopened.virtualSize);
        expect(Buffer.compare(whole, model.read(0, reopened.virtualSize)), `${image.name}: reopened image differs`).toBe(0);
      } finally {
        await reopened.close();
      }
      done.push(image.name);
    }
    expect(done.length).toBeGreaterThanOrEqual(10);
  });

  it('grows the refcount table when the image outgrows it (512 B clusters, 16- and 64-bit refcounts)', async () => {
    for (const refcountBits of [16, 64]) {
      const path = join(dir, `grow_${refcountBits}.qcow2`);
      expect(qemuImg(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=512,refcount_bits=${refcountBits}`, path, '64M'], dir).code).toBe(0);
      const model = new ModelDisk();
      const prng = makePrng(SEED + refcountBits);
      const disk = await openImageFile(path);
      try {
        // 24 MiB of data in 256 KiB writes: far past what one 512-byte refcount table covers.
        for (let offset = 0; offset < 24 << 20; offset += 256 << 10) {
          const data = prng.fill(new Uint8Array(256 << 10));
          await disk.write(offset + (offset >> 8) % 512, data.subarray(0, Math.min(data.length, disk.virtualSize - offset)));
          model.write(offset + (offset >> 8) % 512, data);
        }
      } finally {
        await disk.close();
      }
      // refcount_table_clusters (header bytes 56..59) grew from qemu-img's single cluster.
      const header = readFileSync(path).subarray(0, 64);
      expect(new DataView(header.buffer, header.byteOffset).getUint32(56), `refcount_bits=${refcountBits}: refcount table clusters`).toBeGreaterThan(1);
      const check = qemuCheck(path);
      expect({ corruptions: check.corruptions ?? 0, leaks: check.leaks ?? 0, errors: check['check-errors'] }, `refcount_bits=${refcountBits}`)
        .toEqual({ corruptions: 0, leaks: 0, errors: 0 });
      expect(Buffer.compare(convertToRaw(path), model.read(0, 64 << 20)), `refcount_bits=${refcountBits}: contents`).toBe(0);
    }
  });

  it('random workloads on fresh images this engine created keep them consistent', async () => {
    const kinds: { name: string; options: Parameters<typeof createImageFile>[1] }[] = [
      { name: 'fresh_v3', options: { virtualSize: 8 << 20 } },
      { name: 'fresh_v2', options: { virtualSize: 8 << 20, compat: '0.10' } },
      { name: 'fresh_xl2', options: { virtualSize: 8 << 20, extendedL2: true, clusterSize: 32 * 1024 } },
      { name: 'fresh_4k_rb8', options: { virtualSize: 8 << 20, clusterSize: 4096, refcountBits: 8 } },
      { name: 'fresh_lazy_zstd', options: { virtualSize: 8 << 20, lazyRefcounts: true, compressionType: 'zstd' } },
    ];
    for (const kind of kinds) {
      const path = join(dir, `${kind.name}.qcow2`);
      const disk = await createImageFile(path, kind.options);
      const model = new ModelDisk();
      try {
        await randomWorkload(disk, model, makePrng(SEED + kind.name.length), 80);
      } finally {
        await disk.close();
      }
      const check = qemuCheck(path);
      expect({ corruptions: check.corruptions ?? 0, leaks: check.leaks ?? 0, errors: check['check-errors'] }, `${kind.name}: qemu-img check`)
        .toEqual({ corruptions: 0, leaks: 0, errors: 0 });
      expect(Buffer.compare(convertToRaw(path), model.read(0, 8 << 20)), `${kind.name}: qemu-img reads differ from the model`).toBe(0);
    }
  });
});
