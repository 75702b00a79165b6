// SPDX-License-Identifier: MIT
// The decoders the browser entry installs decode every compressed cluster exactly as the portable
// decoders do, in the engine the run is in: raw deflate with the engine's DecompressionStream
// (valid clusters followed by the next cluster's bytes, streams that inflate past a cluster,
// truncated and garbage data) and zstd with the WebAssembly decoder (trailing frames, several
// frames to a cluster, skippable frames, a frame of more than a cluster). Importing the browser
// entry must install both.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deflateSync } from 'fflate';
import '../../bindings/browser.js';
import { decodeCluster, setNativeDeflateDecoder, setNativeZstdDecoder, type CompressionType } from '../../bindings/qcow2/decompress.js';
import { streamDeflateDecoder } from '../../bindings/qcow2/inflate-stream.js';
import { loadWasmZstdDecoder } from '../../bindings/qcow2/zstd-wasm.js';
import { ImageError } from '../../bindings/base/errors.js';
import { ENGINE } from './helpers.js';
import { CLUSTER_BYTES, concatBytes as concat, makeZstdFrames, patterned, zstdCases, type ZstdFrames } from '../helpers/compressed-clusters.js';

/** Decodes `compressed` with the native decoders installed or not; resolves the cluster or the error's code. */
async function decodeWith(native: boolean, type: CompressionType, compressed: Uint8Array): Promise<Uint8Array | string> {
  setNativeDeflateDecoder(native ? streamDeflateDecoder() : undefined);
  setNativeZstdDecoder(native ? loadWasmZstdDecoder : undefined);
  const cluster = new Uint8Array(CLUSTER_BYTES);
  try {
    await decodeCluster(type, compressed, cluster, 1234);
    return cluster;
  } catch (error) {
    expect(error).toBeInstanceOf(ImageError);
    return (error as ImageError).code;
  }
}

afterAll(() => {
  setNativeDeflateDecoder(streamDeflateDecoder());
  setNativeZstdDecoder(loadWasmZstdDecoder);
});

describe('the engine\'s raw-deflate decoder on compressed clusters', () => {
  it('exists in this engine', () => {
    expect(streamDeflateDecoder()).toBeTypeOf('function');
  });

  const valid = deflateSync(patterned(CLUSTER_BYTES), { level: 6 });
  const cases: [string, Uint8Array][] = [
    ['a valid cluster followed by the next cluster\'s bytes', concat(valid, new Uint8Array(511).fill(0x5a))],
    ['a valid cluster ending exactly at the data\'s end', valid],
    ['a stream that inflates to 64 MiB (stopped at a full cluster)', deflateSync(new Uint8Array(64 << 20))],
    ['a stream of two clusters (the first is the cluster)', deflateSync(patterned(2 * CLUSTER_BYTES))],
    ['a truncated stream', valid.subarray(0, valid.byteLength >> 1)],
    ['bytes that are not deflate', new Uint8Array(600).fill(0xff)],
    ['a stream one byte short of a cluster', deflateSync(patterned(CLUSTER_BYTES - 1))],
  ];
  for (const [name, compressed] of cases) {
    it(`decodes ${name} as the portable decoder does`, async () => {
      expect(await decodeWith(true, 'zlib', compressed)).toEqual(await decodeWith(false, 'zlib', compressed));
    });
  }

  it('gives the expected outcomes', async () => {
    expect(await decodeWith(true, 'zlib', cases[0][1])).toEqual(patterned(CLUSTER_BYTES));
    expect(await decodeWith(true, 'zlib', cases[2][1])).toEqual(new Uint8Array(CLUSTER_BYTES));
    expect(await decodeWith(true, 'zlib', cases[4][1])).toBe('QCOW2_CORRUPT');
    expect(await decodeWith(true, 'zlib', cases[5][1])).toBe('QCOW2_CORRUPT');
  });

  // WebKit drops a piece's output when bytes follow the stream's end (as the standard says), so
  // there the decoder leaves every cluster to the portable decoder; the others decode natively.
  it(`${ENGINE === 'webkit' ? 'declines' : 'decodes'} a valid cluster with trailing bytes itself in ${ENGINE}`, async () => {
    const decode = streamDeflateDecoder()!;
    const expected = (cluster: Uint8Array) => (ENGINE === 'webkit' ? undefined : cluster);
    expect(await decode(cases[0][1], CLUSTER_BYTES)).toEqual(expected(patterned(CLUSTER_BYTES)));
    expect(await decode(cases[2][1], CLUSTER_BYTES)).toEqual(expected(new Uint8Array(CLUSTER_BYTES)));
  });
});

describe('the WebAssembly zstd decoder on compressed clusters', () => {
  let frames: ZstdFrames;
  beforeAll(async () => { frames = await makeZstdFrames(); });
  const cases = zstdCases(() => frames);
  for (const [name, compressed] of cases) {
    it(`decodes ${name} as the portable decoder does`, async () => {
      expect(await decodeWith(true, 'zstd', compressed())).toEqual(await decodeWith(false, 'zstd', compressed()));
    });
  }

  it('gives the expected outcomes', async () => {
    expect(await decodeWith(true, 'zstd', cases[0][1]())).toEqual(patterned(CLUSTER_BYTES));
    expect(await decodeWith(true, 'zstd', cases[3][1]())).toBe('QCOW2_CORRUPT');
  });

  it('decodes a frame in this engine', async () => {
    const decoder = await loadWasmZstdDecoder();
    expect(decoder.decodeFrame(frames.valid, CLUSTER_BYTES)).toEqual(patterned(CLUSTER_BYTES));
  });
});
