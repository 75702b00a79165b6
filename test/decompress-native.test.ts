// SPDX-License-Identifier: MIT
// The native raw-deflate path (node:zlib, installed by qcow2-wasm/node) decodes every compressed
// cluster exactly as the portable decoder does: valid clusters with trailing bytes, streams that
// inflate past a cluster (a bomb: stopped at a full cluster, bounded), truncated and garbage data.
// So do the wasm zstd decoder (frames: trailing frames, several frames to a cluster, skippable
// frames, a frame of more than a cluster) and the worker-thread batch decoder of raw-deflate and
// zstd clusters, cluster by cluster.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { deflateRawSync } from 'node:zlib';
import { decodeCluster, decodeClusters, setClusterBatchDecoder, setNativeDeflateDecoder, setNativeZstdDecoder, type CompressionType } from '../bindings/qcow2/decompress.js';
import { nodeDeflateDecoder } from '../bindings/qcow2/inflate-node.js';
import { loadWasmZstdDecoder } from '../bindings/qcow2/zstd-wasm.js';
import { createWorkerClusterDecoder } from '../bindings/qcow2/decode-workers-node.js';
import { ImageError } from '../bindings/base/errors.js';
import { CLUSTER_BYTES, concatBytes, makeZstdFrames, patterned, zstdCases, type ZstdFrames } from './helpers/compressed-clusters.js';

/** Decodes with the given decoder installed; resolves the cluster or the error's code. */
async function decodeWith(native: boolean, compressed: Uint8Array): Promise<Uint8Array | string> {
  setNativeDeflateDecoder(native ? nodeDeflateDecoder : undefined);
  const cluster = new Uint8Array(CLUSTER_BYTES);
  try {
    await decodeCluster('zlib', compressed, cluster, 1234);
    return cluster;
  } catch (error) {
    expect(error).toBeInstanceOf(ImageError);
    return (error as ImageError).code;
  }
}

afterEach(() => setNativeDeflateDecoder(undefined));

describe('native raw-deflate decoding of compressed clusters', () => {
  const valid = deflateRawSync(patterned(CLUSTER_BYTES), { windowBits: 12 });
  const cases: [string, Uint8Array][] = [
    ['a valid cluster followed by the next cluster\'s bytes', Buffer.concat([valid, Buffer.alloc(511, 0x5a)])],
    ['a stream that inflates to 64 MiB (stopped at a full cluster)', deflateRawSync(new Uint8Array(64 << 20))],
    ['a stream of two clusters (the first is the cluster)', deflateRawSync(patterned(2 * CLUSTER_BYTES))],
    ['a truncated stream', valid.subarray(0, valid.byteLength >> 1)],
    ['bytes that are not deflate', new Uint8Array(600).fill(0xff)],
    ['a stream one byte short of a cluster', deflateRawSync(patterned(CLUSTER_BYTES - 1))],
  ];
  for (const [name, compressed] of cases) {
    it(`decodes ${name} as the portable decoder does`, async () => {
      const portable = await decodeWith(false, compressed);
      const native = await decodeWith(true, compressed);
      expect(native).toEqual(portable);
    });
  }

  it('gives the expected outcomes', async () => {
    expect(await decodeWith(true, cases[0][1])).toEqual(patterned(CLUSTER_BYTES));
    expect(await decodeWith(true, cases[1][1])).toEqual(new Uint8Array(CLUSTER_BYTES));
    expect(await decodeWith(true, cases[3][1])).toBe('QCOW2_CORRUPT');
    expect(await decodeWith(true, cases[4][1])).toBe('QCOW2_CORRUPT');
  });
});

describe('native zstd decoding and batch decoding of compressed clusters', () => {
  let frames: ZstdFrames;
  beforeAll(async () => { frames = await makeZstdFrames(); });
  const cases = zstdCases(() => frames);

  async function decodeZstd(native: boolean, compressed: Uint8Array): Promise<Uint8Array | string> {
    setNativeZstdDecoder(native ? loadWasmZstdDecoder : undefined);
    const cluster = new Uint8Array(CLUSTER_BYTES);
    try {
      await decodeCluster('zstd', compressed, cluster, 1234);
      return cluster;
    } catch (error) {
      expect(error).toBeInstanceOf(ImageError);
      return (error as ImageError).code;
    }
  }

  afterEach(() => {
    setNativeZstdDecoder(undefined);
    setClusterBatchDecoder(undefined);
  });

  for (const [name, compressed] of cases) {
    it(`decodes ${name} as the portable decoder does (wasm zstd)`, async () => {
      expect(await decodeZstd(true, compressed())).toEqual(await decodeZstd(false, compressed()));
    });
  }

  it('gives the expected zstd outcomes', async () => {
    expect(await decodeZstd(true, cases[0][1]())).toEqual(patterned(CLUSTER_BYTES));
    const halves = patterned(CLUSTER_BYTES);
    halves.set(halves.subarray(0, CLUSTER_BYTES / 2), CLUSTER_BYTES / 2);
    expect(await decodeZstd(true, cases[1][1]())).toEqual(halves);
    expect(await decodeZstd(true, cases[3][1]())).toBe('QCOW2_CORRUPT');
    expect(await decodeZstd(true, cases[4][1]())).toBe('QCOW2_CORRUPT');
  });

  // Each piece alongside a valid cluster (a batch needs two), so failures are told apart: every
  // piece gets from decodeClusters on worker threads what decodeCluster gives it.
  async function expectBatchAsSingle(type: CompressionType, valid: Uint8Array, pieces: Uint8Array[]): Promise<void> {
    const expected = await Promise.all(pieces.map(async (piece) => {
      const cluster = new Uint8Array(CLUSTER_BYTES);
      return decodeCluster(type, piece, cluster, 0).then(() => cluster, (error: ImageError) => error.code);
    }));
    setClusterBatchDecoder(createWorkerClusterDecoder(2));
    for (let i = 0; i < pieces.length; i++) {
      const both = concatBytes(valid, pieces[i]);
      const clusters = [new Uint8Array(CLUSTER_BYTES), new Uint8Array(CLUSTER_BYTES)];
      const outcome = await decodeClusters(type, both, [
        { start: 0, end: valid.byteLength, hostOffset: 0, cluster: clusters[0] },
        { start: valid.byteLength, end: both.byteLength, hostOffset: 0, cluster: clusters[1] },
      ]).then(() => clusters[1], (error: ImageError) => error.code);
      expect(outcome, `piece ${i}`).toEqual(expected[i]);
      if (typeof outcome !== 'string') expect(clusters[0]).toEqual(patterned(CLUSTER_BYTES));
    }
  }

  it('decodeClusters of zlib clusters on worker threads gives each cluster what decodeCluster gives it', async () => {
    const valid = deflateRawSync(patterned(CLUSTER_BYTES), { windowBits: 12 });
    await expectBatchAsSingle('zlib', valid, [Buffer.concat([valid, Buffer.alloc(100)]), deflateRawSync(new Uint8Array(4 << 20)),
      deflateRawSync(patterned(CLUSTER_BYTES)).subarray(0, 500), new Uint8Array(600).fill(0xff), deflateRawSync(patterned(CLUSTER_BYTES - 1))]);
  });

  it('the worker pool declines a zstd batch while every worker has two waiting (not a zlib one); decodeClusters then decodes it itself', async () => {
    setNativeZstdDecoder(loadWasmZstdDecoder);
    const pool = createWorkerClusterDecoder(1);
    const compressed = { zlib: deflateRawSync(patterned(CLUSTER_BYTES), { windowBits: 12 }), zstd: frames.valid };
    for (const type of ['zstd', 'zlib'] as const) {
      const input = compressed[type];
      const pieces = new Uint32Array([0, input.byteLength]);
      // Posted in one tick: the third finds two batches waiting at the only worker.
      const flags = await Promise.all([0, 1, 2].map(() => pool.decodeClusters(type, input, pieces, [new Uint8Array(CLUSTER_BYTES)])));
      expect(flags.map((decoded) => decoded[0]), type).toEqual(type === 'zstd' ? [1, 1, 0] : [1, 1, 1]);
    }
    setClusterBatchDecoder(pool);
    const clusters = [0, 1, 2].map(() => new Uint8Array(CLUSTER_BYTES));
    await Promise.all(clusters.map((cluster) => decodeClusters('zstd', frames.valid, [{ start: 0, end: frames.valid.byteLength, hostOffset: 0, cluster }])));
    for (const cluster of clusters) expect(cluster).toEqual(patterned(CLUSTER_BYTES));
  });

  it('decodeClusters of zstd clusters on worker threads gives each cluster what decodeCluster gives it', async () => {
    setNativeZstdDecoder(loadWasmZstdDecoder);
    await expectBatchAsSingle('zstd', frames.valid, cases.map(([, compressed]) => compressed()));
  });
});
