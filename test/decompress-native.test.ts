// SPDX-License-Identifier: MIT
// The native raw-deflate path (node:zlib, installed by qcow2-wasm/node) decodes every compressed
// cluster exactly as the portable decoder does: valid clusters with trailing bytes, streams that
// inflate past a cluster (a bomb: stopped at a full cluster, bounded), truncated and garbage data.
import { afterEach, describe, expect, it } from 'vitest';
import { deflateRawSync } from 'node:zlib';
import { decodeCluster, setNativeDeflateDecoder } from '../bindings/decompress.js';
import { nodeDeflateDecoder } from '../bindings/inflate-node.js';
import { ImageError } from '../bindings/errors.js';

const CLUSTER_BYTES = 65536;

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

function patterned(bytes: number): Uint8Array {
  const data = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) data[i] = (i * 31 + (i >> 9)) & 0xff;
  return data;
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
