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

/** Where guest cluster 2's L2 entry is in the image bytes, and its value. */
interface Target { entryAt: number; entry: bigint }

/** Makes guest cluster 2's metadata corrupt in the image bytes. */
type Corruption = (bytes: Uint8Array, target: Target) => void;

const corruptEntry = (change: (entry: bigint) => bigint): Corruption => (bytes, target) => setU64(bytes, target.entryAt, change(target.entry));

// Extended L2: subcluster 0 both allocated and zero in the bitmap that follows the entry.
const allocatedAndZero: Corruption = (bytes, target) => {
  const bitmapAt = target.entryAt + 8;
  const bitmap = new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(bitmapAt);
  expect(bitmap & 0xffffffffn).toBe(0xffffffffn);
  setU64(bytes, bitmapAt, bitmap | (1n << 32n));
};

describe('a write into a cluster with a corrupt L2 entry', () => {
  const cases: Array<[string, boolean, Corruption]> = [
    ['reserved bits', false, corruptEntry((entry) => entry | 2n)],
    ['a host offset 512 bytes into a cluster', false, corruptEntry((entry) => entry + 512n)],
    ['reserved bits, extended L2', true, corruptEntry((entry) => entry | 2n)],
    ['a host offset 512 bytes into a cluster, extended L2', true, corruptEntry((entry) => entry + 512n)],
    ['extended L2, a subcluster both allocated and zero', true, allocatedAndZero],
  ];
  for (const [name, extendedL2, corrupt] of cases) {
    it(`is refused as corrupt and writes nothing (${name})`, async () => {
      const bytes = await buildBaseImage({ virtualSize: 4 << 20, clusterSize: CLUSTER, extendedL2 });
      corrupt(bytes, parseLayout(bytes).data.find((d) => d.guestCluster === 2)!);
      const backend = createMemoryBackend(bytes);
      const image = await Qcow2Image.open(backend, { writebackDelayMs: false });
      try {
        const before = await backendBytes(backend);
        // The last 4 KiB of the cluster: with the offset 512 bytes in, it would reach 512 bytes into the next host cluster.
        await expect(image.write(3 * CLUSTER - 4 * KIB, new Uint8Array(4 * KIB).fill(0xee))).rejects.toMatchObject({ code: 'QCOW2_CORRUPT' });
        await expect(image.read(2 * CLUSTER, 4 * KIB)).rejects.toMatchObject({ code: 'QCOW2_CORRUPT' });
        expectBytes(await image.read(3 * CLUSTER, CLUSTER), new Uint8Array(CLUSTER).fill(patternOf(3)), 'the next guest cluster');
        expectBytes(await backendBytes(backend), before, 'the image file');
      } finally {
        await image.close().catch(() => {});
      }
    });
  }
});
