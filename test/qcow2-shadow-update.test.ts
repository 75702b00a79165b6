// SPDX-License-Identifier: MIT
// Where a crash-safe metadata rewrite (snapshots, compressed writes, resize, amend) puts the
// clusters it allocates: first fit from the lowest free cluster, so holes the image already has
// are reused, a hole too small for one request is still taken by a later, smaller one, and
// nothing in use is ever handed out.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { openNodeBackend } from '../bindings/backends/node.js';
import { ShadowUpdate } from '../bindings/qcow2/qcow2-shadow-update.js';
import { describeWithQemu, qemuImg, qemuIo, qemuMap } from './helpers/qemu.js';

const CLUSTER = 65536;
const dir = mkdtempSync(join(tmpdir(), 'qcow2-shadow-update-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describeWithQemu('ShadowUpdate.allocate', () => {
  it('reuses a one-cluster hole after a two-cluster request had to go past it', async () => {
    const path = join(dir, 'hole.qcow2');
    expect(qemuImg(['create', '-q', '-f', 'qcow2', path, '1M']).code).toBe(0);
    // Three data clusters, then the middle one discarded: its host cluster becomes a free hole
    // between two used ones.
    expect(qemuIo(['-c', 'write -P 0x5a 0 192k', path]).code).toBe(0);
    const written = qemuMap(path).filter((e) => e.data);
    expect(written.map((e) => e.length)).toEqual([3 * CLUSTER]);
    const firstDataOffset = written[0].offset!;
    expect(qemuIo(['-c', 'discard 64k 64k', path]).code).toBe(0);
    const kept = qemuMap(path).filter((e) => e.data).map((e) => e.offset);
    expect(kept).toEqual([firstDataOffset, firstDataOffset + 2 * CLUSTER]);
    const holeOffset = firstDataOffset + CLUSTER;

    const backend = await openNodeBackend(path, { writable: true });
    try {
      const update = await ShadowUpdate.begin(backend);
      const fileEnd = await backend.getSize();
      const pair = update.allocate(2);
      expect(pair).toBe(fileEnd);
      expect(update.allocate(1)).toBe(holeOffset);
      expect(update.allocate(1)).toBe(pair + 2 * CLUSTER);
    } finally {
      await backend.close();
    }
  });
});
