// SPDX-License-Identifier: MIT
// Cluster compression and the front-to-back qcow2 writer: both compressors (worker threads and
// inline) produce data QEMU's decoders take (raw deflate within a 4 KiB window, zstd frames), store
// incompressible clusters plain, and a compressed convert cut by a power failure at any point
// leaves either no image (no header yet) or a complete, consistent one.

import { describe, expect, it } from 'vitest';
import { inflateRawSync } from 'node:zlib';
import { createInlineCompressor, type ClusterCompressor } from '../bindings/qcow2/compress.js';
import { createWorkerCompressor } from '../bindings/qcow2/compress-node.js';
import { inflateCluster } from '../bindings/qcow2/decompress.js';
import { convertToQcow2 } from '../bindings/tools/convert.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { createCrashBackend } from './helpers/crash-backend.js';
import { makePrng } from './helpers/prng.js';

const CLUSTER = 65536;

/** Clusters: text with repeats further apart than 4 KiB, random bytes, zeros. */
function sampleClusters(): Uint8Array {
  const data = new Uint8Array(3 * CLUSTER);
  const phrase = new TextEncoder().encode('a qcow2 cluster that repeats far apart ');
  for (let at = 0; at < CLUSTER; at += 6000) data.set(phrase.subarray(0, Math.min(phrase.byteLength, CLUSTER - at)), at);
  for (let at = 0; at < CLUSTER; at++) if (data[at] === 0) data[at] = 0x20 + (at % 7);
  makePrng(7).fill(data.subarray(CLUSTER, 2 * CLUSTER));
  return data;
}

describe('cluster compressors', () => {
  const compressors: [string, () => ClusterCompressor][] = [['worker threads', () => createWorkerCompressor(2)], ['inline', createInlineCompressor]];
  for (const [name, make] of compressors) {
    it(`${name}: zlib within QEMU's 4 KiB window and zstd frames, both decoding to the cluster; random data stays plain`, async () => {
      const compressor = make();
      try {
        const data = sampleClusters();
        for (const type of ['zlib', 'zstd'] as const) {
          const before = data.slice();
          const results = await compressor.compressClusters(type, data, CLUSTER);
          expect(data).toEqual(before); // the caller's buffer is left alone
          expect(results).toHaveLength(3);
          expect(results[1]).toBeUndefined(); // random bytes do not shrink
          for (const index of [0, 2]) {
            const compressed = results[index] as Uint8Array;
            expect(compressed.byteLength).toBeLessThan(CLUSTER / 4);
            const cluster = new Uint8Array(CLUSTER);
            inflateCluster(type, compressed, cluster, 0);
            expect(cluster).toEqual(data.subarray(index * CLUSTER, (index + 1) * CLUSTER));
            // QEMU inflates with inflateInit2(-12): a stream needing a larger window fails there.
            if (type === 'zlib') expect(new Uint8Array(inflateRawSync(compressed, { windowBits: 12 }))).toEqual(cluster);
          }
        }
      } finally {
        await compressor.close();
      }
    });
  }

  it('worker threads: in a buffer from allocateBuffer, packs the compressed bytes in place and leaves an incompressible cluster where it was', async () => {
    const compressor = createWorkerCompressor(2);
    try {
      const clusters = sampleClusters();
      for (const type of ['zlib', 'zstd'] as const) {
        // Text, random, text, zeros: the second text cluster's bytes must land after the random one.
        const order = [0, 1, 0, 2];
        const data = (compressor.allocateBuffer as (byteLength: number) => Uint8Array)(order.length * CLUSTER);
        expect(data.buffer).toBeInstanceOf(SharedArrayBuffer);
        order.forEach((source, i) => data.set(clusters.subarray(source * CLUSTER, (source + 1) * CLUSTER), i * CLUSTER));
        const results = await compressor.compressClusters(type, data, CLUSTER);
        expect(results[1]).toBeUndefined();
        expect(data.subarray(CLUSTER, 2 * CLUSTER)).toEqual(clusters.subarray(CLUSTER, 2 * CLUSTER));
        for (const index of [0, 2, 3]) {
          const compressed = results[index] as Uint8Array;
          expect(compressed.buffer).toBe(data.buffer);
          const cluster = new Uint8Array(CLUSTER);
          inflateCluster(type, compressed, cluster, 0);
          expect(cluster).toEqual(clusters.subarray(order[index] * CLUSTER, (order[index] + 1) * CLUSTER));
        }
        expect((results[2] as Uint8Array).byteOffset).toBeGreaterThanOrEqual(2 * CLUSTER);
      }
    } finally {
      await compressor.close();
    }
  });
});

describe('a compressed convert cut by a power failure', () => {
  it('leaves no image or a complete one that checks clean and reads as the source, at every cut', async () => {
    const sourceBackend = createMemoryBackend();
    const source = await Qcow2Image.create(sourceBackend, { virtualSize: 4 << 20, clusterSize: 4096 });
    const data = sampleClusters();
    await source.write(0, data);
    await source.write(1 << 20, data.subarray(0, 100_000));
    await source.write(3 << 20, data.subarray(CLUSTER));
    const crash = createCrashBackend(new Uint8Array(0), { jitter: makePrng(3) });
    await convertToQcow2(source, crash, { compress: true, compressor: createInlineCompressor(), create: { clusterSize: 4096 } });
    const expected = await source.read(0, source.virtualSize);
    const replay = crash.replay();
    const prng = makePrng(11);
    let complete = 0;
    for (let k = 0; k < crash.writes.length; k++) {
      replay.advance(k);
      for (let trial = 0; trial < 2; trial++) {
        const state = replay.state(prng, 0.3);
        const magic = state.bytes.subarray(0, 4);
        if (!(magic[0] === 0x51 && magic[1] === 0x46 && magic[2] === 0x49 && magic[3] === 0xfb)) continue; // no image yet
        const image = await Qcow2Image.open(createMemoryBackend(state.bytes), { readOnly: true });
        const report = await image.check();
        expect(report.corruptions, `cut after write ${k}`).toBe(0);
        expect(report.leaks, `cut after write ${k}`).toBe(0);
        for (let offset = 0; offset < image.virtualSize; offset += CLUSTER) {
          expect(await image.read(offset, CLUSTER), `cut after write ${k}, guest offset ${offset}`).toEqual(expected.subarray(offset, offset + CLUSTER));
        }
        await image.close();
        complete++;
      }
    }
    expect(complete).toBeGreaterThan(0);
    expect(crash.overlaps).toEqual([]);
  }, 240_000);
});
