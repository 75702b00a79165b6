// SPDX-License-Identifier: MIT
// zstd batches on the browser's cluster decoding workers, in each engine: a frame decodes on a
// worker exactly as on the page (one that does not give exactly one cluster is left to the page,
// which reports it as QCOW2_CORRUPT); each type is declined on its own (zlib where the engine's
// DecompressionStream cannot decode qcow2's clusters, zstd where the decoder's script does not
// load), and the page then decodes it; what a worker that cannot start or never answers was
// given decodes on the page; images made by `qemu-img convert -c -o
// compression_type=zstd` read as qemu-img reads them, every compressed cluster of a whole read
// decoded on a worker and none on the page.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deflateSync } from 'fflate';
import { createMemoryBackend, Qcow2Image } from '../../bindings/browser.js';
import { setClusterBatchDecoder, setNativeZstdDecoder, type ZstdFrameDecoder } from '../../bindings/qcow2/decompress.js';
import { createBrowserWorkerClusterDecoder, type BrowserWorkerClusterDecoder } from '../../bindings/qcow2/decode-workers-browser.js';
import { decodeWorkerSource } from '../../bindings/qcow2/decode-worker-source-browser.js';
import { ZSTD_DECODER_GLOBAL, ZSTD_DECODER_SCRIPT } from '../../bindings/qcow2/zstd-worker-decoder.generated.js';
import { loadWasmZstdDecoder } from '../../bindings/qcow2/zstd-wasm.js';
import { RunKind } from '../../bindings/qcow2/qcow2-core.js';
import { ImageError } from '../../bindings/base/errors.js';
import { CLUSTER_BYTES, makeZstdFrames, patterned, type ZstdFrames } from '../helpers/compressed-clusters.js';
import { expectBytes } from '../helpers/bytes.js';
import { describeRequiring } from '../helpers/describe-requiring.js';
import { ENGINE } from './helpers.js';
import { blobWorker, countingPool, EVERY_BATCH, decodeAll, packed, repliesTo } from './decode-workers-helpers.js';
import { qemuImage, qemuImageStatus } from './qemu-images.js';

const MiB = 1 << 20;
const NOT_ZSTD = new Uint8Array(600).fill(0xff);
const ZLIB_VALID = deflateSync(patterned(CLUSTER_BYTES), { level: 6 });
// WebKit's DecompressionStream drops a stream's output when bytes follow its end: there the
// workers decline zlib (and the page decodes it), but zstd does not use it.
const decodesZlibOnWorkers = ENGINE !== 'webkit';

let frames: ZstdFrames;
beforeAll(async () => {
  frames = await makeZstdFrames();
});

/** The page's zstd decoder, counting the frames it decodes. */
let pageZstdFrames = 0;
const countingPageDecoder = async (): Promise<ZstdFrameDecoder> => {
  const decoder = await loadWasmZstdDecoder();
  return { decodeFrame: (frame, capacityBytes) => { pageZstdFrames++; return decoder.decodeFrame(frame, capacityBytes); } };
};

afterAll(() => {
  setNativeZstdDecoder(loadWasmZstdDecoder);
  setClusterBatchDecoder(createBrowserWorkerClusterDecoder());
});

describe('zstd clusters on the decoding workers', () => {
  it(`decodes zstd frames on a worker and leaves those that do not give exactly one cluster to the page (${ENGINE})`, async () => {
    const pool = createBrowserWorkerClusterDecoder({ ...EVERY_BATCH, workerCount: 1 })!;
    const { input, pieces, targets } = packed(0, frames.valid, NOT_ZSTD, frames.half, frames.twoClusters);
    expect([...await pool.decodeClusters('zstd', input, pieces, targets)]).toEqual([1, 0, 0, 0]);
    expect(targets[0]).toEqual(patterned(CLUSTER_BYTES));
    expect(pool.decodedOnWorkers('zstd')).toBe(1);
    expect(pool.runningWorkers()).toBe(1);
    pool.end!();
  });

  it(`takes zstd batches after zlib ones${decodesZlibOnWorkers ? '' : ', which it declines in this engine'} (${ENGINE})`, async () => {
    const pool = createBrowserWorkerClusterDecoder({ ...EVERY_BATCH, workerCount: 1 })!;
    const zlib = packed(300, ZLIB_VALID);
    expect([...await pool.decodeClusters('zlib', zlib.input, zlib.pieces, zlib.targets)]).toEqual([decodesZlibOnWorkers ? 1 : 0]);
    const zstd = packed(0, frames.valid);
    expect([...await pool.decodeClusters('zstd', zstd.input, zstd.pieces, zstd.targets)]).toEqual([1]);
    expect(zstd.targets[0]).toEqual(patterned(CLUSTER_BYTES));
    expect([pool.decodedOnWorkers('zlib'), pool.decodedOnWorkers('zstd')]).toEqual([decodesZlibOnWorkers ? 1 : 0, 1]);
    pool.end!();
  });

  it('declines zstd once its script does not load in a worker, and goes on with zlib', async () => {
    const { pool, started } = countingPool(() => blobWorker(decodeWorkerSource()), 5000, {
      zstdDecoder: async () => ({ url: '/no-such-zstd-decoder.js', globalName: ZSTD_DECODER_GLOBAL }),
    });
    const zstd = packed(0, frames.valid);
    expect([...await pool.decodeClusters('zstd', zstd.input, zstd.pieces, zstd.targets)]).toEqual([0]);
    expect([...await pool.decodeClusters('zstd', zstd.input, zstd.pieces, zstd.targets)]).toEqual([0]);
    const zlib = packed(300, ZLIB_VALID);
    expect([...await pool.decodeClusters('zlib', zlib.input, zlib.pieces, zlib.targets)]).toEqual([decodesZlibOnWorkers ? 1 : 0]);
    expect(started()).toBe(2); // the worker that declined zstd ended once idle; the zlib batch started another
    pool.end!();
  });

  it('leaves zstd to the page without starting a worker when the decoder\'s script cannot be had', async () => {
    const { pool, started } = countingPool(() => blobWorker(decodeWorkerSource()), 5000, { zstdDecoder: () => Promise.reject(new Error('offline')) });
    const { input, pieces, targets } = packed(0, frames.valid);
    expect([...await pool.decodeClusters('zstd', input, pieces, targets)]).toEqual([0]);
    expect(started()).toBe(0);
  });

  it('answers a zstd batch that fails as a whole (no memory for its output) with no cluster decoded, and goes on', async () => {
    const worker = blobWorker(decodeWorkerSource());
    const zstdDecoder = { url: URL.createObjectURL(new Blob([ZSTD_DECODER_SCRIPT], { type: 'text/javascript' })), globalName: ZSTD_DECODER_GLOBAL };
    const { input, pieces } = packed(0, frames.valid);
    const replies = await repliesTo(worker, [
      { type: 'zstd', input: input.slice().buffer, pieces, clusterBytes: 2 ** 40, zstdDecoder }, // an output no engine allocates
      { type: 'zstd', input: input.slice().buffer, pieces, clusterBytes: CLUSTER_BYTES, zstdDecoder },
    ]);
    worker.terminate();
    expect(replies.map((reply) => [reply.id, [...reply.decoded]])).toEqual([[1, [0]], [2, [1]]]);
    expect(new Uint8Array(replies[1].output)).toEqual(patterned(CLUSTER_BYTES));
  });

  it('reports a zstd cluster that does not decode as QCOW2_CORRUPT, with the workers installed', async () => {
    const pool = createBrowserWorkerClusterDecoder(EVERY_BATCH)!;
    setClusterBatchDecoder(pool);
    const { input, pieces } = packed(300, frames.valid, frames.half);
    const error = await decodeAll('zstd', input, pieces).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ImageError);
    expect((error as ImageError).code).toBe('QCOW2_CORRUPT');
    expect((error as ImageError).message).toContain('host offset 8192');
    expect(pool.decodedOnWorkers('zstd')).toBe(1);
  });
});

describe('workers that fail on zstd batches', () => {
  const failing: [string, () => Worker, string][] = [
    ['cannot start', () => blobWorker('this is not javascript ('), 'decoding worker failed'],
    ['never answers', () => blobWorker('onmessage = () => {}'), 'no answer within 200 ms'],
  ];
  for (const [name, start, reason] of failing) {
    it(`decodes on the page what a worker that ${name} was given, then gives up`, async () => {
      const { pool, started } = countingPool(start, 200);
      const { input, pieces, targets } = packed(300, frames.valid);
      await expect(pool.decodeClusters('zstd', input, pieces, targets)).rejects.toThrow(reason);
      setClusterBatchDecoder(pool);
      expect(await decodeAll('zstd', input, pieces)).toEqual([patterned(CLUSTER_BYTES)]);
      expect([started(), pool.runningWorkers()]).toEqual([1, 0]);
    });
  }
});

const qemu = await qemuImageStatus();

describeRequiring('zstd images made by qemu-img, read through the decoding workers', qemu.missing, () => {
  /** A pool installed as the batch decoder, recording each piece it was given (its length) and its answer (1: decoded). */
  const installPool = (): { pool: BrowserWorkerClusterDecoder; answers: { pieceBytes: number; decoded: number }[] } => {
    const pool = createBrowserWorkerClusterDecoder(EVERY_BATCH)!;
    const answers: { pieceBytes: number; decoded: number }[] = [];
    setClusterBatchDecoder({
      end: () => pool.end!(),
      decodeClusters: async (type, input, pieces, targets) => {
        const decoded = await pool.decodeClusters(type, input, pieces, targets);
        decoded.forEach((flag, i) => answers.push({ pieceBytes: pieces[2 * i + 1] - pieces[2 * i], decoded: flag }));
        return decoded;
      },
    });
    return { pool, answers };
  };

  /** The compressed clusters of `image` (one mapped run each). */
  const compressedClusters = async (image: Qcow2Image): Promise<number> => {
    let count = 0;
    for (let at = 0; at < image.virtualSize;) {
      const runs = await image.mapGuestRange(at, image.virtualSize - at);
      count += runs.filter((run) => run.kind === RunKind.COMPRESSED).length;
      const last = runs[runs.length - 1];
      at = last.guestOffset + last.length;
    }
    return count;
  };

  for (const clusterBytes of [4096, 65536]) {
    it(`${clusterBytes}-byte clusters: reads as qemu-img reads it, every compressed cluster of a whole read decoded on a worker (${ENGINE})`, async () => {
      const [file, expected] = await Promise.all([qemuImage(`zstd-${clusterBytes}.qcow2`), qemuImage(`zstd-${clusterBytes}.raw`)]);
      const { pool } = installPool();
      setNativeZstdDecoder(countingPageDecoder);
      pageZstdFrames = 0;
      const image = await Qcow2Image.open(createMemoryBackend(file), { readOnly: true });
      try {
        const compressed = await compressedClusters(image);
        expect(compressed, 'compressed clusters in the image').toBeGreaterThan(0);
        expectBytes(await image.read(0, image.virtualSize), expected, 'one whole read');
        expect([pool.decodedOnWorkers('zstd'), pageZstdFrames], 'clusters decoded on the workers, frames on the page').toEqual([compressed, 0]);
        const sequential = new Uint8Array(image.virtualSize);
        for (let at = 0; at < image.virtualSize; at += MiB) await image.readInto(at, sequential.subarray(at, at + MiB));
        expectBytes(sequential, expected, '1 MiB reads');
        for (const [offset, length] of [[1, 3 * clusterBytes], [MiB - 77, 2 * clusterBytes + 5], [image.virtualSize - 5000, 5000]]) {
          expectBytes(await image.read(offset, length), expected.subarray(offset, offset + length), `${length} bytes at ${offset}`);
        }
      } finally {
        await image.close();
      }
    });
  }

  it(`a damaged zstd cluster inside a read rejects with QCOW2_CORRUPT: the worker leaves it to the page, which reports it (${ENGINE})`, async () => {
    const file = await qemuImage('zstd-65536.qcow2');
    const probe = await Qcow2Image.open(createMemoryBackend(file.slice()), { readOnly: true });
    // A compressed cluster whose neighbour is compressed too.
    const runs = await probe.mapGuestRange(MiB, MiB);
    const victim = runs.find((run, i) => run.kind === RunKind.COMPRESSED && runs[i + 1]?.kind === RunKind.COMPRESSED)!;
    await probe.close();
    // The first block's type becomes 3 (reserved): the frame still reads as one whole frame, so it
    // goes to a worker, but no decoder takes it.
    const descriptor = file[victim.hostOffset + 4];
    const singleSegment = (descriptor & 0x20) !== 0;
    const headerBytes = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][descriptor & 3] + [singleSegment ? 1 : 0, 2, 4, 8][descriptor >> 6];
    file[victim.hostOffset + headerBytes] |= 0x06;
    const { pool, answers } = installPool();
    const image = await Qcow2Image.open(createMemoryBackend(file), { readOnly: true });
    try {
      const error = await image.read(victim.guestOffset - 65536, 4 * 65536).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(ImageError);
      expect((error as ImageError).code).toBe('QCOW2_CORRUPT');
      expect((error as ImageError).message).toContain(`host offset ${victim.hostOffset}`);
      expect(answers.some((answer) => answer.pieceBytes > 0 && answer.decoded === 0), 'a whole frame the workers left to the page').toBe(true);
      expect(pool.decodedOnWorkers('zstd'), 'its neighbours decoded on the workers').toBeGreaterThan(0);
    } finally {
      await image.close();
    }
  });
}, qemu.required);
