// SPDX-License-Identifier: MIT
// The single-cluster read fast path (one cached L2 entry mapped in one wasm call, one host read,
// nothing left in flight): every entry it must not take is read as the entry says (zero flag over
// old data, compressed, unallocated, a read crossing clusters), every entry it must refuse fails
// as corrupt, and a read issued while an overlapping write is still in flight (in place,
// allocating, or a cluster pending deferred copy-on-write) returns the write's data.

import { describe, expect, it } from 'vitest';
import { deflateRawSync } from 'node:zlib';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import type { Backend } from '../bindings/backends/backend.js';
import { DEFLATE_OPTIONS } from '../bindings/qcow2/compress.js';
import { buildBaseImage, parseLayout, patternOf, setU64 } from './helpers/hostile-images.js';
import { expectBytes } from './helpers/bytes.js';

const KIB = 1024;
const CLUSTER = 64 * KIB;
const ZERO_FLAG = 1n;
const RESERVED_BIT = 2n;

/** A copy of `bytes` with the L2 entry of `guestCluster` changed by `change`. */
function withEntry(bytes: Uint8Array, guestCluster: number, change: (entry: bigint) => bigint): Uint8Array {
  const copy = bytes.slice();
  const found = parseLayout(copy).data.find((d) => d.guestCluster === guestCluster);
  if (!found) throw new Error(`guest cluster ${guestCluster} is not allocated in the base image`);
  setU64(copy, found.entryAt, change(found.entry));
  return copy;
}

const filled = (length: number, value: number) => new Uint8Array(length).fill(value);

/** 4 KiB pieces across one cluster: its start, its middle, its last 4 KiB, one byte at its end. */
function piecesOf(cluster: number): Array<[number, number]> {
  const start = cluster * CLUSTER;
  return [[start, 4 * KIB], [start + 28 * KIB, 4 * KIB], [start + CLUSTER - 4 * KIB, 4 * KIB], [start + CLUSTER - 1, 1], [start, CLUSTER]];
}

describe('single-cluster reads', () => {
  it('read what each kind of entry says: data, zero flag over old data, unallocated, compressed, across clusters', async () => {
    // Clusters 0-3 and 16 hold their pattern; cluster 1 gets the zero flag (its host data stays).
    const base = await buildBaseImage({ virtualSize: 4 << 20, clusterSize: CLUSTER });
    const image = await Qcow2Image.open(createMemoryBackend(withEntry(base, 1, (e) => e | ZERO_FLAG)), { writebackDelayMs: false });
    try {
      // Compressed to one sector at the start of a fresh host cluster, its descriptor passes for a
      // plain entry on every other check: only the compressed flag tells it apart.
      const compressedCluster = new Uint8Array(CLUSTER).map((_, i) => 1 + (i >> 12));
      const compressed = deflateRawSync(compressedCluster, DEFLATE_OPTIONS);
      expect(compressed.byteLength).toBeLessThan(512);
      await image.writeCompressedClusters([{ guestOffset: 5 * CLUSTER, compressed }]);
      for (const [at, length] of piecesOf(0)) expectBytes(await image.read(at, length), filled(length, patternOf(0)), `data at ${at}`);
      for (const [at, length] of piecesOf(1)) expectBytes(await image.read(at, length), filled(length, 0), `zero flag at ${at}`);
      for (const [at, length] of piecesOf(7)) expectBytes(await image.read(at, length), filled(length, 0), `unallocated at ${at}`);
      for (const [at, length] of piecesOf(5)) {
        const inCluster = at - 5 * CLUSTER;
        expectBytes(await image.read(at, length), compressedCluster.subarray(inCluster, inCluster + length), `compressed at ${at}`);
      }
      // Across clusters: data into zero flag, and data into data at a host offset that does not continue.
      const across = await image.read(CLUSTER - 2 * KIB, 4 * KIB);
      expectBytes(across.subarray(0, 2 * KIB), filled(2 * KIB, patternOf(0)), 'data before the cluster end');
      expectBytes(across.subarray(2 * KIB), filled(2 * KIB, 0), 'zero flag after it');
      const dataToData = await image.read(3 * CLUSTER - 2 * KIB, 4 * KIB);
      expectBytes(dataToData, Uint8Array.from({ length: 4 * KIB }, (_, i) => patternOf(i < 2 * KIB ? 2 : 3)), 'cluster 2 into cluster 3');
    } finally {
      await image.close();
    }
  });

  it('refuse an entry with reserved bits or an unaligned host offset as corrupt, whatever the read size', async () => {
    const base = await buildBaseImage({ virtualSize: 4 << 20, clusterSize: CLUSTER });
    const cases: Array<[string, Uint8Array, number]> = [
      ['reserved bit', withEntry(base, 2, (e) => e | RESERVED_BIT), 2],
      ['unaligned host offset', withEntry(base, 16, (e) => e + 512n), 16],
    ];
    for (const [name, bytes, cluster] of cases) {
      const image = await Qcow2Image.open(createMemoryBackend(bytes, { writable: false }));
      try {
        for (const [at, length] of piecesOf(cluster)) {
          await expect(image.read(at, length), `${name} at ${at}`).rejects.toMatchObject({ code: 'QCOW2_CORRUPT' });
        }
        expectBytes(await image.read(0, 4 * KIB), filled(4 * KIB, patternOf(0)), `${name}: other clusters still read`);
      } finally {
        await image.close();
      }
    }
  });
});

/** `inner` whose pwritev calls are held from hold() until release() (reads pass; nothing else changes). */
function holdingWrites(inner: Backend): { backend: Backend; hold: () => void; heldCount: () => number; release: () => void } {
  let waiting: Array<() => void> = [];
  let holding = false;
  const backend: Backend = {
    ...inner,
    getSize: () => inner.getSize(),
    preadv: (position, buffers) => inner.preadv(position, buffers),
    pwritev: (position, buffers) => {
      if (!holding) return inner.pwritev(position, buffers);
      return new Promise<void>((resolve) => waiting.push(resolve)).then(() => inner.pwritev(position, buffers));
    },
    flush: () => inner.flush(),
    close: () => inner.close(),
  };
  return {
    backend,
    hold: () => { holding = true; },
    heldCount: () => waiting.length,
    release: () => {
      holding = false;
      const now = waiting;
      waiting = [];
      for (const resolve of now) resolve();
    },
  };
}

/** Lets pending callbacks run (microtasks and immediates) a few rounds. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

describe('a read issued while an overlapping write is in flight', () => {
  const backingBytes = filled(1 << 20, 0x33);

  async function overlay(): Promise<{ image: Qcow2Image; gate: ReturnType<typeof holdingWrites> }> {
    const created = createMemoryBackend();
    const maker = await Qcow2Image.create(created, { virtualSize: 1 << 20, clusterSize: CLUSTER, backingFile: 'base.raw', backingFormat: 'raw',
      openBacking: async () => createMemoryBackend(backingBytes, { writable: false }) });
    // Cluster 0 allocated (its later writes land in place); the rest reads from the backing file.
    await maker.write(0, filled(CLUSTER, 0x44));
    await maker.flush();
    const bytes = new Uint8Array(await created.getSize());
    await created.preadv(0, [bytes]);
    await maker.close();
    const gate = holdingWrites(createMemoryBackend(bytes));
    const image = await Qcow2Image.open(gate.backend, { openBacking: async () => createMemoryBackend(backingBytes, { writable: false }),
      deferredCow: { delayMs: 60_000, maxPending: 64 }, writebackDelayMs: false });
    return { image, gate };
  }

  for (const [name, at] of [['in place', 8 * KIB], ['into a new cluster', 3 * CLUSTER + 8 * KIB]] as const) {
    it(`returns the write's data (${name})`, async () => {
      const { image, gate } = await overlay();
      try {
        const data = filled(4 * KIB, 0x5e);
        gate.hold();
        const write = image.write(at, data);
        const read = image.read(at, 4 * KIB);
        const inside = image.read(at + KIB, KIB);
        await settle();
        expect(gate.heldCount(), 'the write reached the backend and is held there').toBeGreaterThan(0);
        const beside = await image.read(at + 4 * KIB, 4 * KIB);
        expectBytes(beside, filled(4 * KIB, at < CLUSTER ? 0x44 : 0x33), 'the bytes after the write, read at once');
        gate.release();
        await write;
        expectBytes(await read, data, 'a read of the written range');
        expectBytes(await inside, data.subarray(0, KIB), 'a read inside the written range');
      } finally {
        await image.close();
      }
    });
  }

  it('returns the new data of a cluster pending copy-on-write whose entry still maps the old, shared cluster', async () => {
    const image = await Qcow2Image.create(createMemoryBackend(), { virtualSize: 1 << 20, clusterSize: CLUSTER,
      deferredCow: { delayMs: 60_000, maxPending: 64 }, writebackDelayMs: false });
    try {
      await image.write(4 * CLUSTER, filled(CLUSTER, 0x21));
      await image.createSnapshot('before');
      // The cluster is shared with the snapshot: this write copies it, and leaves the copy of its tail pending.
      await image.write(4 * CLUSTER, filled(16 * KIB, 0x22));
      expectBytes(await image.read(4 * CLUSTER + 4 * KIB, 4 * KIB), filled(4 * KIB, 0x22), 'the written part');
      expectBytes(await image.read(4 * CLUSTER + 32 * KIB, 4 * KIB), filled(4 * KIB, 0x21), 'the pending tail');
    } finally {
      await image.close();
    }
  });

  it("returns the write's data from a cluster pending copy-on-write, and the backing file's beside it", async () => {
    const { image, gate } = await overlay();
    try {
      const data = filled(16 * KIB, 0x6f);
      // A write from the start of a cluster over the backing file leaves its tail pending.
      await image.write(2 * CLUSTER, data);
      expectBytes(await image.read(2 * CLUSTER + 32 * KIB, 4 * KIB), filled(4 * KIB, 0x33), 'the pending tail');
      expectBytes(await image.read(2 * CLUSTER + 4 * KIB, 4 * KIB), data.subarray(0, 4 * KIB), 'the written part');
      const next = filled(4 * KIB, 0x70);
      gate.hold();
      const write = image.write(3 * CLUSTER, next);
      const read = image.read(3 * CLUSTER, 4 * KIB);
      await settle();
      expect(gate.heldCount(), 'the write reached the backend and is held there').toBeGreaterThan(0);
      gate.release();
      await write;
      expectBytes(await read, next, 'a read racing a write that leaves its cluster pending');
    } finally {
      await image.close();
    }
  });
});
