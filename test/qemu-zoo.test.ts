// SPDX-License-Identifier: MIT
// Validates the QEMU oracle helpers (test/helpers/qemu.ts): the image zoo builds, every qcow2
// image in it passes `qemu-img check`, and each reads back as the content its recipe predicts.

import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it, expect, beforeAll, afterAll } from 'vitest';
import { describeWithQemu, zoo, zooContent, qemuCheck, qemuInfo, qemuMap, convertToRaw, type ZooImage } from './helpers/qemu.js';
import { expectBytes } from './helpers/bytes.js';

describeWithQemu('QEMU image zoo', () => {
  let dir: string;
  let images: ZooImage[] = [];
  const image = (name: string) => images.find((i) => i.name === name)!;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-zoo-'));
    images = zoo(dir);
  }, 60_000);
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('covers the kinds of image the brief lists', () => {
    expect(images.map((i) => i.name)).toEqual([
      'v3.qcow2', 'v2.qcow2', 'comp_io.qcow2', 'src.raw', 'comp_conv.qcow2', 'comp_zstd.qcow2',
      'base.qcow2', 'overlay.qcow2', 'overlay_rawbase.qcow2', 'chain_top.qcow2', 'xl2.qcow2',
      'big_cluster.qcow2', 'c512_rb1.qcow2', 'c4k_rb64.qcow2', 'prealloc_meta.qcow2',
      'extdata.qcow2', 'lazy.qcow2', 'snap.qcow2',
    ]);
  });

  it('every qcow2 image passes qemu-img check with no errors or leaks', () => {
    for (const { name, path, format } of images) {
      if (format !== 'qcow2') continue;
      const report = qemuCheck(path);
      expect({ name, exitCode: report.exitCode, errors: report['check-errors'], leaks: report.leaks ?? 0, corruptions: report.corruptions ?? 0 })
        .toEqual({ name, exitCode: 0, errors: 0, leaks: 0, corruptions: 0 });
    }
  });

  it('every image reads back as its recipe says', () => {
    for (const { name, path, format } of images) {
      const actual = convertToRaw(path, format);
      const expected = zooContent(images, name);
      // Compare natively first; expectBytes names the first differing byte when they differ.
      if (!Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength).equals(expected)) expectBytes(actual, expected, name);
    }
  });

  it('the images have the geometry and features they were made with', () => {
    const info = (name: string) => qemuInfo(image(name).path, image(name).format);
    const data = (name: string) => info(name)['format-specific']!.data;
    expect(data('v2.qcow2').compat).toBe('0.10');
    expect(data('v3.qcow2').compat).toBe('1.1');
    expect(info('c512_rb1.qcow2')['cluster-size']).toBe(512);
    expect(data('c512_rb1.qcow2')['refcount-bits']).toBe(1);
    expect(data('c4k_rb64.qcow2')['refcount-bits']).toBe(64);
    expect(info('big_cluster.qcow2')['cluster-size']).toBe(2 * 1024 * 1024);
    expect(data('xl2.qcow2')['extended-l2']).toBe(true);
    expect(data('lazy.qcow2')['lazy-refcounts']).toBe(true);
    expect(data('comp_zstd.qcow2')['compression-type']).toBe('zstd');
    expect(data('extdata.qcow2')['data-file']).toBe('ext.data');
    expect(data('extdata.qcow2')['data-file-raw']).toBe(true);
    expect(info('chain_top.qcow2')['backing-filename']).toBe('overlay_rawbase.qcow2');
    expect(info('overlay_rawbase.qcow2')['backing-filename-format']).toBe('raw');
    expect(info('snap.qcow2').snapshots?.map((s) => s.name)).toEqual(['s1']);
    // An external data file with data_file_raw keeps guest data at its guest offset.
    expect(readFileSync(join(dir, 'ext.data'))[192 * 1024]).toBe(0x7e);
  });

  it('the allocation the oracle reports matches the recipes', () => {
    const v3 = qemuMap(image('v3.qcow2').path);
    // write -z on v3 leaves a zero cluster: present, reads zero, no data.
    expect(v3.find((e) => e.start === 1024 * 1024)).toMatchObject({ present: true, zero: true, data: false });
    // v2 has no zero flag: the same range is unallocated.
    const v2 = qemuMap(image('v2.qcow2').path);
    expect(v2.find((e) => e.start <= 1024 * 1024 && e.start + e.length > 1024 * 1024)).toMatchObject({ present: false });
    // Compressed clusters carry no host offset.
    const comp = qemuMap(image('comp_io.qcow2').path);
    expect(comp[0]).toMatchObject({ start: 0, data: true });
    expect(comp[0].offset).toBeUndefined();
    const check = qemuCheck(image('comp_conv.qcow2').path);
    expect(check['compressed-clusters']).toBeGreaterThan(0);
  });
});
