// SPDX-License-Identifier: MIT
// A sequential guest writing unaligned 4 KiB pieces into an overlay over a written backing image
// (every new cluster stays pending while the guest fills it piece by piece) and into a fresh
// image, through the Node file backend: with synchronous host writes (the default for small
// transfers, where a piece is written and recorded before the next is looked at) and through
// the thread pool (pieces of one cluster queue behind each other), merging off and full, in
// batches of 32 and one piece at a time, with reads of pieces just written between batches. The
// image reads back what a flat reference holds, and qemu-img finds it clean and equal to it.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import type { MergeMode } from '../bindings/core/merge-core.js';
import { convertToRaw, describeWithQemu, qemuCheck, qemuImg } from './helpers/qemu.js';
import { makePrng } from './helpers/prng.js';

const KiB = 1024;
const CLUSTER_BYTES = 64 * KiB;
const DISK_BYTES = 4 * 1024 * KiB;
const PIECE_BYTES = 4 * KiB;
/** Where the guest starts writing: not cluster-aligned, as a partition often is. */
const START = 512;
/** Bytes the guest writes: the pieces end mid-cluster, so the last cluster stays pending until close. */
const WRITTEN_BYTES = 2 * 1024 * KiB + 40 * KiB;

describeWithQemu('a sequential guest over a backing image through the Node file backend', () => {
  let dir: string;
  let backingContent: Uint8Array;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-sequential-'));
    backingContent = new Uint8Array(DISK_BYTES);
    const prng = makePrng(77);
    for (let i = 0; i < backingContent.length; i += 512) backingContent.fill(prng.int(256), i, i + 512);
    writeFileSync(join(dir, 'backing.raw'), backingContent);
    const made = qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', join(dir, 'backing.raw'), join(dir, 'backing.qcow2')]);
    expect(made.code, made.stderr).toBe(0);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const cases = (['sync', 'thread pool'] as const).flatMap((io) => (['off', 'full'] as MergeMode[]).flatMap((merge) =>
    [32, 1].flatMap((batch) => [true, false].map((overlay) => ({ io, merge, batch, overlay })))));
  for (const { io, merge, batch, overlay } of cases) {
    it(`${overlay ? 'overlay' : 'fresh image'}, ${io} host writes, merge ${merge}, ${batch} piece(s) at a time`, async () => {
      const path = join(dir, `${io === 'sync' ? 'sync' : 'pool'}-${merge}-${batch}-${overlay ? 'overlay' : 'fresh'}.qcow2`);
      const backend = await openNodeBackend(path, { writable: true, create: true, sync: io === 'sync' ? 'auto' : false });
      const image = await Qcow2Image.create(backend, {
        virtualSize: DISK_BYTES, clusterSize: CLUSTER_BYTES, merge,
        ...(overlay ? { backingFile: 'backing.qcow2', backingFormat: 'qcow2' as const, openBacking: () => openNodeBackend(join(dir, 'backing.qcow2')) } : {}),
      });
      const expected = overlay ? backingContent.slice() : new Uint8Array(DISK_BYTES);
      const prng = makePrng(merge.length + batch);
      const pieces: { offset: number; data: Uint8Array }[] = [];
      for (let offset = START; offset < START + WRITTEN_BYTES; offset += PIECE_BYTES) {
        const data = new Uint8Array(PIECE_BYTES);
        for (let i = 0; i < data.length; i += 256) data.fill(prng.int(256), i, i + 256);
        pieces.push({ offset, data });
        expected.set(data, offset);
      }
      try {
        for (let first = 0; first < pieces.length; first += batch) {
          const requests = pieces.slice(first, first + batch);
          await Promise.all(image.multiwrite(requests));
          // The last piece written reads back at once (from a pending cluster or a committed one).
          const last = requests[requests.length - 1];
          expect(Buffer.compare(await image.read(last.offset, PIECE_BYTES), last.data), `piece at ${last.offset}`).toBe(0);
        }
        expect(Buffer.compare(await image.read(0, DISK_BYTES), expected), 'the whole disk before close').toBe(0);
      } finally {
        await image.close();
      }
      const check = qemuCheck(path);
      expect(check.exitCode, JSON.stringify(check)).toBe(0);
      expect(Buffer.compare(convertToRaw(path), expected), 'qemu-img reads what was written').toBe(0);
    });
  }
});
