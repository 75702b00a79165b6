// SPDX-License-Identifier: MIT
// A write into an allocated cluster whose L2 entry is corrupt (reserved bits set, a host offset
// inside a cluster) is refused as corrupt, as reads of it are, and writes nothing: an unaligned
// host offset must not let a write spill into the host cluster after it (another guest
// cluster's data); nor is a subcluster bitmap that marks a subcluster both allocated and zero
// written through.

import { describe, expect, it } from 'vitest';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { backendBytes, buildBaseImage, parseLayout, patternOf, setU64 } from './helpers/hostile-images.js';
import { expectBytes } from './helpers/bytes.js';

const KIB = 1024;
const CLUSTER = 64 * KIB;

describe('a write into a cluster with a corrupt L2 entry', () => {
  const cases: Array<[string, boolean, (entry: bigint) => bigint]> = [
    ['reserved bits', false, (entry) => entry | 2n],
    ['a host offset 512 bytes into a cluster', false, (entry) => entry + 512n],
    ['reserved bits, extended L2', true, (entry) => entry | 2n],
    ['a host offset 512 bytes into a cluster, extended L2', true, (entry) => entry + 512n],
  ];
  for (const [name, extendedL2, corrupt] of cases) {
    it(`is refused as corrupt and writes nothing (${name})`, async () => {
      const bytes = await buildBaseImage({ virtualSize: 4 << 20, clusterSize: CLUSTER, extendedL2 });
      const target = parseLayout(bytes).data.find((d) => d.guestCluster === 2)!;
      setU64(bytes, target.entryAt, corrupt(target.entry));
      const backend = createMemoryBackend(bytes);
      const image = await Qcow2Image.open(backend, { writebackDelayMs: false });
      try {
        const before = await backendBytes(backend);
        // The last 4 KiB of the cluster: with the offset 512 bytes in, it would reach 512 bytes into the next host cluster.
        await expect(image.write(3 * CLUSTER - 4 * KIB, new Uint8Array(4 * KIB).fill(0xee))).rejects.toMatchObject({ code: 'QCOW2_CORRUPT' });
        await expect(image.read(2 * CLUSTER, 4 * KIB)).rejects.toMatchObject({ code: 'QCOW2_CORRUPT' });
        expectBytes(await image.read(3 * CLUSTER, CLUSTER), new Uint8Array(CLUSTER).fill(patternOf(3)), 'the next guest cluster');
        const hostOfTarget = Number(target.entry & 0x00fffffffffffe00n);
        const after = await backendBytes(backend);
        expectBytes(after.subarray(hostOfTarget, hostOfTarget + 2 * CLUSTER), before.subarray(hostOfTarget, hostOfTarget + 2 * CLUSTER), 'the host clusters at and after the entry');
      } finally {
        await image.close().catch(() => {});
      }
    });
  }

  it('is refused as corrupt and writes nothing (extended L2, a subcluster both allocated and zero)', async () => {
    const bytes = await buildBaseImage({ virtualSize: 4 << 20, clusterSize: CLUSTER, extendedL2: true });
    const target = parseLayout(bytes).data.find((d) => d.guestCluster === 2)!;
    const bitmapAt = target.entryAt + 8;
    const bitmap = new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(bitmapAt);
    expect(bitmap & 0xffffffffn).toBe(0xffffffffn);
    setU64(bytes, bitmapAt, bitmap | (1n << 32n)); // subcluster 0: allocated and zero
    const backend = createMemoryBackend(bytes);
    const image = await Qcow2Image.open(backend, { writebackDelayMs: false });
    try {
      const before = await backendBytes(backend);
      await expect(image.write(3 * CLUSTER - 4 * KIB, new Uint8Array(4 * KIB).fill(0xee))).rejects.toMatchObject({ code: 'QCOW2_CORRUPT' });
      await expect(image.read(2 * CLUSTER, 4 * KIB)).rejects.toMatchObject({ code: 'QCOW2_CORRUPT' });
      expectBytes(await backendBytes(backend), before, 'the image file');
    } finally {
      await image.close().catch(() => {});
    }
  });
});
