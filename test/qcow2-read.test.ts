// SPDX-License-Identifier: MIT
// The qcow2 read matrix: every image of the qemu-img zoo (v2, v3, cluster sizes 512 B to 2 MiB,
// refcount widths, zlib and zstd compression, extended L2, backing chains qcow2 -> qcow2 -> raw,
// zero clusters, discards, an internal snapshot, an external data file, lazy refcounts,
// preallocated metadata) reads byte for byte as `qemu-img convert -O raw` gives it.

import { it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openImageFile } from '../bindings/node.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import { describeWithQemu, zoo, convertToRaw, qemuImg, type ZooImage } from './helpers/qemu.js';
import { makePrng } from './helpers/prng.js';

describeWithQemu('qcow2 read matrix against qemu-img convert', () => {
  let dir: string;
  let images: ZooImage[];
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-read-'));
    images = zoo(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads every zoo image exactly as qemu-img does, whole and in random pieces', async () => {
    const checked: string[] = [];
    for (const image of images) {
      if (image.format !== 'qcow2') continue;
      const expected = convertToRaw(image.path);
      const disk = await openImageFile(image.path, { readOnly: true, cacheBytes: 64 * 1024 });
      try {
        expect(disk).toBeInstanceOf(Qcow2Image);
        expect(disk.virtualSize, image.name).toBe(expected.byteLength);
        const whole = await disk.read(0, disk.virtualSize);
        expect(Buffer.compare(whole, expected), `${image.name}: whole image differs from qemu-img convert`).toBe(0);
        // Random unaligned pieces, read concurrently (exercises slice loads racing each other).
        const prng = makePrng(image.name.length * 7919);
        const pieces = Array.from({ length: 64 }, () => {
          const length = 1 + prng.int(200_000);
          const offset = prng.int(Math.max(1, disk.virtualSize - length));
          return { offset, length: Math.min(length, disk.virtualSize - offset) };
        });
        const results = await Promise.all(pieces.map((p) => disk.read(p.offset, p.length)));
        pieces.forEach((p, k) => {
          expect(Buffer.compare(results[k], expected.subarray(p.offset, p.offset + p.length)), `${image.name}: piece ${p.offset}+${p.length}`).toBe(0);
        });
        checked.push(image.name);
      } finally {
        await disk.close();
      }
    }
    expect(checked.length).toBeGreaterThanOrEqual(10);
  });

  it('lists internal snapshots as qemu-img info does', async () => {
    const image = images.find((i) => i.name === 'snap.qcow2')!;
    const disk = (await openImageFile(image.path, { readOnly: true })) as Qcow2Image;
    try {
      const ours = await disk.snapshots();
      const theirs = (JSON.parse(qemuImg(['info', '--output=json', image.path]).stdout) as {
        snapshots: { id: string; name: string; 'date-sec': number; 'date-nsec': number; 'vm-state-size': number }[];
      }).snapshots;
      expect(ours.length).toBeGreaterThan(0);
      expect(ours.map((s) => [s.id, s.name, s.dateSeconds, s.dateNanoseconds, s.vmStateBytes]))
        .toEqual(theirs.map((s) => [s.id, s.name, s['date-sec'], s['date-nsec'], s['vm-state-size']]));
    } finally {
      await disk.close();
    }
    const plain = (await openImageFile(images.find((i) => i.name === 'v3.qcow2')!.path, { readOnly: true })) as Qcow2Image;
    try {
      expect(await plain.snapshots()).toEqual([]);
    } finally {
      await plain.close();
    }
  });

  it('refuses a backing file without openBacking, naming it', async () => {
    const overlay = images.find((image) => image.base && image.format === 'qcow2' && image.name.includes('overlay'))!;
    const backend = await openNodeBackend(overlay.path);
    await expect(Qcow2Image.open(backend)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await backend.close();
  });

  it('refuses writes with IMAGE_READ_ONLY when opened read-only', async () => {
    const first = images.find((image) => image.format === 'qcow2')!;
    const disk = await openImageFile(first.path, { readOnly: true });
    await expect(disk.write(0, new Uint8Array(1))).rejects.toMatchObject({ code: 'IMAGE_READ_ONLY' });
    await disk.close();
  });
});
