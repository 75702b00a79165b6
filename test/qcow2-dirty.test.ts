// SPDX-License-Identifier: MIT
// Lazy refcounts after a crash: QEMU (qemu-io's `abort`) leaves an image marked dirty with
// refcounts missing. A writable open rebuilds them first, clears the dirty bit, and the image is
// then consistent for qemu-img check and keeps every byte.

import { it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openImageFile } from '../bindings/node.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { describeWithQemu, qemuImg, qemuIo, qemuCheck, qemuInfo, convertToRaw } from './helpers/qemu.js';

describeWithQemu('dirty images (lazy refcounts after a crash)', () => {
  let dir: string;
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-dirty-')); });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('rebuilds the refcounts on a writable open, then writes safely', async () => {
    const path = join(dir, 'dirty.qcow2');
    expect(qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', path, '4M']).code).toBe(0);
    qemuIo(['-c', 'write -P 0x11 0 128k', '-c', 'write -P 0x22 1M 64k', '-c', 'abort', path], dir);
    expect(qemuInfo(path)['dirty-flag']).toBe(true);
    expect(qemuCheck(path).corruptions ?? 0).toBeGreaterThan(0);
    const before = convertToRaw(path);

    // Read-only opens leave the image alone.
    const readOnly = await openImageFile(path, { readOnly: true });
    expect(Buffer.compare(await readOnly.read(0, readOnly.virtualSize), before)).toBe(0);
    await readOnly.close();
    expect(qemuInfo(path)['dirty-flag']).toBe(true);

    const disk = await openImageFile(path);
    expect(disk).toBeInstanceOf(Qcow2Image);
    expect((disk as Qcow2Image).header.flags.dirty).toBe(false);
    await disk.write(2 << 20, new Uint8Array(70_000).fill(0x33));
    await disk.close();
    const check = qemuCheck(path);
    expect({ corruptions: check.corruptions ?? 0, leaks: check.leaks ?? 0 }).toEqual({ corruptions: 0, leaks: 0 });
    expect(qemuInfo(path)['dirty-flag']).toBe(false);
    const expected = Buffer.from(before);
    expected.fill(0x33, 2 << 20, (2 << 20) + 70_000);
    expect(Buffer.compare(convertToRaw(path), expected)).toBe(0);
  });
});
