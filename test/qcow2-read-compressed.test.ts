// SPDX-License-Identifier: MIT
// Compressed images made by `qemu-img convert -c` (zlib and zstd; 512 B, 4 KiB, 64 KiB and 2 MiB
// clusters; compressed clusters packed several to a host cluster, between holes and clusters
// stored plain) read byte for byte as `qemu-img convert -O raw` gives them: sequentially in
// 1 MiB reads, 4 in flight (several clusters per host read, decoded on worker threads), in
// one whole-image read, and in small unaligned pieces; with Node's native decoders and with the
// portable decoders alone (as browsers and Deno decode). A damaged compressed cluster in the middle of a
// sequential read rejects with QCOW2_CORRUPT. Closing the last image ends the decoding workers.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openImageFile } from '../bindings/node.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { setClusterBatchDecoder, setNativeDeflateDecoder, setNativeZstdDecoder, type ClusterBatchDecoder } from '../bindings/qcow2/decompress.js';
import { createWorkerClusterDecoder } from '../bindings/qcow2/decode-workers-node.js';
import { nodeDeflateDecoder } from '../bindings/qcow2/inflate-node.js';
import { loadWasmZstdDecoder } from '../bindings/qcow2/zstd-wasm.js';
import { ImageError } from '../bindings/base/errors.js';
import { RunKind } from '../bindings/qcow2/qcow2-core.js';
import type { BlockImage } from '../bindings/dispatch/image.js';
import { convertToRaw, describeWithQemu, qemuImg, qemuMap } from './helpers/qemu.js';
import { makePrng } from './helpers/prng.js';

const MiB = 1024 * 1024;
const DISK_BYTES = 6 * MiB;

/** Text-like runs, pseudo-random bytes (stored plain by qemu-img) and holes, in 4 KiB blocks. */
function sourceDisk(): Uint8Array {
  const disk = new Uint8Array(DISK_BYTES);
  const prng = makePrng(4242);
  const words = ['qcow2 ', 'cluster ', 'guest ', 'kernel '];
  for (let at = 0; at < DISK_BYTES; at += 4096) {
    const kind = prng.int(4);
    const block = disk.subarray(at, at + 4096);
    if (kind === 0) continue;
    if (kind === 1) for (let i = 0; i < block.length; i++) block[i] = prng.int(256);
    else for (let i = 0; i < block.length;) for (const c of words[prng.int(words.length)]) if (i < block.length) block[i++] = c.charCodeAt(0);
  }
  return disk;
}

/** Reads the whole image in 1 MiB reads, 4 in flight, as a converter does. */
async function readSequentially(image: BlockImage): Promise<Uint8Array> {
  const out = new Uint8Array(image.virtualSize);
  let next = 0;
  const worker = async () => {
    while (next < image.virtualSize) {
      const offset = next;
      next += MiB;
      await image.readInto(offset, out.subarray(offset, Math.min(image.virtualSize, offset + MiB)));
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  return out;
}

const workers = createWorkerClusterDecoder();
/** Clusters the worker decoders decoded (the rest fell back to the main thread). */
let decodedOnWorkers = 0;
const countingWorkers: ClusterBatchDecoder = {
  inputBuffer: (type, inputBytes, clusterCount, clusterBytes) => workers.inputBuffer!(type, inputBytes, clusterCount, clusterBytes),
  end: () => workers.end!(),
  async decodeClusters(type, input, pieces, targets) {
    const decoded = await workers.decodeClusters(type, input, pieces, targets);
    decodedOnWorkers += decoded.filter((flag) => flag === 1).length;
    return decoded;
  },
};

function useDecoders(native: boolean): void {
  setNativeDeflateDecoder(native ? nodeDeflateDecoder : undefined);
  setNativeZstdDecoder(native ? loadWasmZstdDecoder : undefined);
  setClusterBatchDecoder(native ? countingWorkers : undefined);
}

describeWithQemu('compressed images read as qemu-img reads them', () => {
  let dir: string;
  let source: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-compressed-'));
    source = join(dir, 'source.raw');
    writeFileSync(source, sourceDisk());
  });
  afterAll(() => {
    useDecoders(true); // what qcow2-wasm/node installs
    rmSync(dir, { recursive: true, force: true });
  });

  const kinds = (['zlib', 'zstd'] as const).flatMap((type) => [512, 4096, 65536, 2 * MiB].map((clusterBytes) => ({ type, clusterBytes })));
  for (const { type, clusterBytes } of kinds) {
    it(`${type}, ${clusterBytes}-byte clusters: sequential, whole and piecewise reads, native and portable decoders`, async () => {
      const path = join(dir, `${type}-${clusterBytes}.qcow2`);
      const made = qemuImg(['convert', '-c', '-O', 'qcow2', '-o', `compression_type=${type},cluster_size=${clusterBytes}`, source, path]);
      expect(made.code, made.stderr).toBe(0);
      const expected = convertToRaw(path);
      // qemu-img map gives compressed clusters as data without a host offset.
      expect(qemuMap(path).some((entry) => entry.data && entry.offset === undefined), 'the image has compressed clusters').toBe(true);
      for (const native of [true, false]) {
        useDecoders(native);
        const image = await openImageFile(path, { readOnly: true });
        try {
          const label = `${native ? 'native' : 'portable'} decoders`;
          const before = decodedOnWorkers;
          expect(Buffer.compare(await readSequentially(image), expected), `${label}: sequential reads`).toBe(0);
          if (native && clusterBytes < MiB) expect(decodedOnWorkers, `${type} clusters decoded on the workers`).toBeGreaterThan(before);
          expect(Buffer.compare(await image.read(0, image.virtualSize), expected), `${label}: one whole read`).toBe(0);
          const prng = makePrng(clusterBytes + (native ? 1 : 0));
          for (let i = 0; i < 32; i++) {
            const length = 1 + prng.int(Math.min(3 * clusterBytes, 256 * 1024));
            const offset = prng.int(image.virtualSize - length);
            expect(Buffer.compare(await image.read(offset, length), expected.subarray(offset, offset + length)), `${label}: ${offset}+${length}`).toBe(0);
          }
        } finally {
          await image.close();
        }
      }
    });
  }

  it('reads 4 MiB of a 4 KiB-cluster image on a memory backend at once', async () => {
    useDecoders(true);
    const path = join(dir, 'zlib-4096.qcow2');
    const image = await Qcow2Image.open(createMemoryBackend(new Uint8Array(readFileSync(path))), { readOnly: true });
    try {
      expect(Buffer.compare(await image.read(0, 4 * MiB), convertToRaw(path).subarray(0, 4 * MiB))).toBe(0);
    } finally {
      await image.close();
    }
  });

  it('closing the last image that read compressed clusters ends the decoding workers; the next read starts them again', async () => {
    useDecoders(true);
    const path = join(dir, 'zstd-65536.qcow2');
    const expected = convertToRaw(path);
    for (let round = 0; round < 2; round++) {
      const image = await openImageFile(path, { readOnly: true });
      try {
        expect(Buffer.compare(await readSequentially(image), expected)).toBe(0);
        expect(workers.runningWorkers(), 'workers while the image is open').toBeGreaterThan(0);
      } finally {
        await image.close();
      }
      // end() takes effect a second after the last close.
      const deadline = Date.now() + 5000;
      while (workers.runningWorkers() > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(workers.runningWorkers(), 'workers after the close').toBe(0);
    }
  });

  for (const type of ['zlib', 'zstd'] as const) {
    it(`${type}: a damaged compressed cluster inside a sequential read rejects with QCOW2_CORRUPT`, async () => {
      const path = join(dir, `${type}-65536.qcow2`);
      const bytes = new Uint8Array(readFileSync(path));
      // qemu-img map gives no host offset for compressed clusters: the engine's mapping finds one.
      const probe = await Qcow2Image.open(createMemoryBackend(bytes.slice()), { readOnly: true });
      const run = (await probe.mapGuestRange(MiB, MiB)).find((candidate) => candidate.kind === RunKind.COMPRESSED)!;
      await probe.close();
      const victim = { start: run.guestOffset };
      bytes.fill(0xff, run.hostOffset, run.hostOffset + Math.min(run.compressedBytes, 600));
      for (const native of [true, false]) {
        useDecoders(native);
        const image = await Qcow2Image.open(createMemoryBackend(bytes.slice()), { readOnly: true });
        try {
          const error = await image.read(victim.start - 65536, 4 * 65536).catch((e: unknown) => e);
          expect(error, `${native ? 'native' : 'portable'} decoders`).toBeInstanceOf(ImageError);
          expect((error as ImageError).code).toBe('QCOW2_CORRUPT');
        } finally {
          await image.close();
        }
      }
    });
  }
});
