// SPDX-License-Identifier: MIT
// Extended L2 (32 subclusters a cluster): writes allocate and fill single subclusters, so over a
// backing file only the written subclusters are copied and written, the rest keep reading the
// backing file; writeZeroes marks whole subclusters zero. Checked with qemu-img map and check.

import { it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openImageFile } from '../bindings/node.js';
import { describeWithQemu, qemuImg, qemuIo, qemuCheck, qemuMap, convertToRaw } from './helpers/qemu.js';

const KIB = 1024;

describeWithQemu('extended L2 subclusters', () => {
  let dir: string;
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-subcluster-')); });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('allocates and fills only the written subclusters of an overlay', async () => {
    expect(qemuImg(['create', '-q', '-f', 'qcow2', 'base.qcow2', '4M'], dir).code).toBe(0);
    expect(qemuIo(['-c', 'write -P 0x11 0 4M', 'base.qcow2'], dir).code).toBe(0);
    expect(qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=64k', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'], dir).code).toBe(0);
    const path = join(dir, 'top.qcow2');
    const expected = convertToRaw(path);

    const disk = await openImageFile(path);
    // 1000 bytes inside subcluster 2 (2 KiB subclusters) of cluster 1: one new cluster, one
    // subcluster written (1048 bytes of it copied from the backing file).
    await disk.write(65536 + 4096 + 500, new Uint8Array(1000).fill(0xaa));
    expected.fill(0xaa, 65536 + 4096 + 500, 65536 + 4096 + 1500);
    expect(disk.stats().cowBytes).toBe(2 * KIB - 1000);
    // A second write into subcluster 5 of the same cluster fills it in place.
    await disk.write(65536 + 5 * 2048, new Uint8Array(2048).fill(0xbb));
    expected.fill(0xbb, 65536 + 5 * 2048, 65536 + 6 * 2048);
    expect(disk.stats().cowBytes).toBe(2 * KIB - 1000);
    expect(Buffer.compare(await disk.read(0, disk.virtualSize), expected)).toBe(0);
    await disk.close();

    expect(qemuCheck(path)).toMatchObject({ 'check-errors': 0 });
    expect(qemuCheck(path).corruptions ?? 0).toBe(0);
    expect(qemuCheck(path).leaks ?? 0).toBe(0);
    expect(Buffer.compare(convertToRaw(path), expected)).toBe(0);
    // Only subclusters 2 and 5 of cluster 1 are in the overlay (depth 0); the rest is the base.
    const top = qemuMap(path).filter((entry) => entry.depth === 0 && entry.data);
    expect(top.map((entry) => [entry.start, entry.length])).toEqual([[65536 + 2 * 2048, 2048], [65536 + 5 * 2048, 2048]]);
  });

  it('writeZeroes marks whole subclusters zero without writing data', async () => {
    expect(qemuImg(['create', '-q', '-f', 'qcow2', 'zbase.qcow2', '1M'], dir).code).toBe(0);
    expect(qemuIo(['-c', 'write -P 0x22 0 1M', 'zbase.qcow2'], dir).code).toBe(0);
    expect(qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=64k', '-b', 'zbase.qcow2', '-F', 'qcow2', 'ztop.qcow2'], dir).code).toBe(0);
    const path = join(dir, 'ztop.qcow2');
    const expected = convertToRaw(path);
    const disk = await openImageFile(path);
    // 10,000 bytes from 3000: subclusters 2..5 (4096..12287) become zero by metadata, the edges
    // (3000..4095 and 12288..12999) get zero data.
    await disk.writeZeroes(3000, 10_000);
    expected.fill(0, 3000, 13_000);
    const bytesBefore = disk.stats().hostWriteBytes;
    expect(Buffer.compare(await disk.read(0, disk.virtualSize), expected)).toBe(0);
    await disk.close();
    expect(bytesBefore).toBeLessThan(10_000);
    const check = qemuCheck(path);
    expect({ corruptions: check.corruptions ?? 0, leaks: check.leaks ?? 0 }).toEqual({ corruptions: 0, leaks: 0 });
    expect(Buffer.compare(convertToRaw(path), expected)).toBe(0);
    const zeroInTop = qemuMap(path).filter((entry) => entry.depth === 0 && entry.zero && !entry.data);
    expect(zeroInTop.some((entry) => entry.start <= 4096 && entry.start + entry.length >= 12_288)).toBe(true);
  });
});
