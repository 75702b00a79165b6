// SPDX-License-Identifier: MIT
// convert against qemu-img 7.2: images we write (plain, compressed zlib/zstd, overlays, raw) pass
// qemu-img check with no leaks, qemu-img compare finds them equal to the source, allocate what
// qemu-img convert allocates, compress to the same size, and read back through our engine.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openImageFile, openNodeBackend } from '../bindings/node.js';
import { convertInto, convertToQcow2, convertToRaw, convertToRawStream, type ConvertToQcow2Options } from '../bindings/tools/convert.js';
import { createInlineCompressor } from '../bindings/qcow2/compress.js';
import { createWorkerCompressor } from '../bindings/qcow2/compress-node.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { RawImage } from '../bindings/raw/raw-image.js';
import { describeWithQemu, qemuCheck, qemuImg, qemuIo, qemuMap } from './helpers/qemu.js';

const MiB = 1 << 20;
let dir: string;

function mustQemu(args: string[]): string {
  const result = qemuImg(args);
  if (result.code !== 0) throw new Error(`qemu-img ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

function io(path: string, ...commands: string[]): void {
  const result = qemuIo(commands.flatMap((c) => ['-c', c]).concat([path]));
  if (result.code !== 0 || /error|failed/i.test(result.stdout)) throw new Error(`qemu-io: ${result.stdout}${result.stderr}`);
}

/** A file of text-like, compressible bytes (repeating words with a counter). */
function compressibleFile(name: string, bytes: number): string {
  const words = ['qcow2', 'cluster', 'refcount', 'table', 'guest', 'host', 'zero', 'backing', 'snapshot', 'header'];
  let text = '';
  for (let i = 0; text.length < bytes; i++) text += `${words[i % words.length]} ${i} ${words[(i * 7) % words.length]}\n`;
  const path = join(dir, name);
  writeFileSync(path, text.slice(0, bytes));
  return path;
}

/** A file of pseudo-random bytes (incompressible). */
function randomFile(name: string, bytes: number): string {
  const data = new Uint8Array(bytes);
  let x = 0x12345678;
  for (let i = 0; i < bytes; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    data[i] = x & 0xff;
  }
  const path = join(dir, name);
  writeFileSync(path, data);
  return path;
}

const convertedNames = new Set<string>();

/** Converts `source` (path) to a new qcow2 at `target` with our library. */
async function ourConvert(sourcePath: string, targetName: string, options: ConvertToQcow2Options = {}): Promise<string> {
  const target = join(dir, targetName);
  convertedNames.add(target);
  const source = await openImageFile(sourcePath, { readOnly: true });
  const backend = await openNodeBackend(target, { writable: true, create: true });
  try {
    await convertToQcow2(source, backend, options);
  } finally {
    await backend.close();
    await source.close();
  }
  return target;
}

function expectCleanAndEqual(source: string, target: string, targetFormat = 'qcow2'): void {
  if (targetFormat === 'qcow2') {
    const check = qemuCheck(target);
    expect(check.exitCode).toBe(0);
    expect(check.corruptions ?? 0).toBe(0);
    expect(check.leaks ?? 0).toBe(0);
  }
  const compare = qemuImg(['compare', '-F', targetFormat, source, target]);
  expect(compare.stdout + compare.stderr).toContain('Images are identical');
}

/** Data clusters per map entry kind, offsets ignored: what qemu-img map says is allocated. */
function allocation(path: string): string {
  return JSON.stringify(qemuMap(path).map(({ start, length, depth, present, zero, data }) => ({ start, length, depth, present, zero, data })));
}

describeWithQemu('convert (qemu-img as the oracle)', () => {
  let mixed: string;
  let base: string;
  let overlay: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-convert-'));
    const text = compressibleFile('text.bin', 6 * MiB);
    const random = randomFile('random.bin', 2 * MiB);
    mixed = join(dir, 'mixed.qcow2');
    mustQemu(['create', '-f', 'qcow2', mixed, '64M']);
    io(mixed, 'write -P 0x11 0 1M', 'write -P 0 2M 1M', 'write -z 4M 1M', `write -s ${text} 8M 6M`, `write -s ${random} 20M 2M`,
      'write -P 0x22 33M 100k', 'write -P 0x33 63M 1M');
    base = join(dir, 'base.qcow2');
    mustQemu(['create', '-f', 'qcow2', base, '64M']);
    io(base, 'write -P 0x44 0 8M', 'write -P 0x45 30M 2M');
    overlay = join(dir, 'overlay.qcow2');
    mustQemu(['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', '-o', 'cluster_size=4096', overlay]);
    io(overlay, 'write -P 0x55 1M 4k', 'write -z 2M 4k', 'write -z 2052k 8k', 'write -P 0x66 40M 1M', 'write -z 30M 64k');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('copies a chain into a flat qcow2 image that allocates what qemu-img convert allocates', async () => {
    const ours = await ourConvert(mixed, 'flat.qcow2');
    expectCleanAndEqual(mixed, ours);
    const theirs = join(dir, 'flat-qemu.qcow2');
    mustQemu(['convert', '-O', 'qcow2', mixed, theirs]);
    expect(allocation(ours)).toBe(allocation(theirs));
    const chainOurs = await ourConvert(overlay, 'chain-flat.qcow2', { create: { clusterSize: 16384 } });
    expectCleanAndEqual(overlay, chainOurs);
  });

  it('honours -S: 0 keeps zero data allocated, a large value keeps short zero runs', async () => {
    for (const [minSparseBytes, name] of [[0, 's0'], [4096, 's4k'], [2 * MiB, 's2m']] as const) {
      const ours = await ourConvert(mixed, `${name}.qcow2`, { minSparseBytes });
      expectCleanAndEqual(mixed, ours);
      const theirs = join(dir, `${name}-qemu.qcow2`);
      mustQemu(['convert', '-S', String(minSparseBytes), '-O', 'qcow2', mixed, theirs]);
      expect(allocation(ours), `-S ${minSparseBytes}`).toBe(allocation(theirs));
    }
  });

  it('writes compressed clusters (zlib and zstd, several cluster sizes) that qemu-img reads, as small as qemu-img -c makes them', async () => {
    const compressor = createWorkerCompressor(2);
    try {
      for (const compressionType of ['zlib', 'zstd'] as const) {
        for (const clusterSize of [4096, 65536, 2 * MiB]) {
          const name = `c-${compressionType}-${clusterSize}`;
          const ours = await ourConvert(mixed, `${name}.qcow2`, { compress: true, compressor, create: { compressionType, clusterSize } });
          expectCleanAndEqual(mixed, ours);
          const theirs = join(dir, `${name}-qemu.qcow2`);
          mustQemu(['convert', '-c', '-O', 'qcow2', '-o', `compression_type=${compressionType},cluster_size=${clusterSize}`, mixed, theirs]);
          expect(qemuCheck(ours)['compressed-clusters']).toBe(qemuCheck(theirs)['compressed-clusters']);
          expect(statSync(ours).size, name).toBeLessThanOrEqual(Math.ceil(statSync(theirs).size * 1.02));
          // Our engine reads them back.
          const back = await Qcow2Image.open(await openNodeBackend(ours, { writable: false }), { readOnly: true });
          const flat = await openImageFile(mixed, { readOnly: true });
          for (const offset of [0, 8 * MiB, 12 * MiB + 4096, 20 * MiB, 63 * MiB]) {
            expect(await back.read(offset, 65536)).toEqual(await flat.read(offset, 65536));
          }
          await back.close();
          await flat.close();
        }
      }
    } finally {
      await compressor.close();
    }
  });

  it('packs compressed clusters within the refcount width (refcount_bits=1 and 2)', async () => {
    for (const refcountBits of [1, 2]) {
      const ours = await ourConvert(mixed, `c-rc${refcountBits}.qcow2`, {
        compress: true, compressor: createInlineCompressor(), create: { refcountBits, clusterSize: 65536 },
      });
      expectCleanAndEqual(mixed, ours);
    }
  });

  it('copies only the overlay onto a backing file (-B), with zero clusters where the overlay has them', async () => {
    const ours = await ourConvert(overlay, 'only-overlay.qcow2', { create: { backingFile: 'base.qcow2', backingFormat: 'qcow2' } });
    expectCleanAndEqual(overlay, ours);
    const theirs = join(dir, 'only-overlay-qemu.qcow2');
    mustQemu(['convert', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', overlay, theirs]);
    expect(allocation(ours)).toBe(allocation(theirs));
    for (const compat of ['0.10', '1.1'] as const) {
      const extended = await ourConvert(overlay, `only-overlay-${compat}.qcow2`, {
        create: { backingFile: 'base.qcow2', backingFormat: 'qcow2', compat, extendedL2: compat === '1.1' },
      });
      expectCleanAndEqual(overlay, extended);
    }
  });

  it('writes raw images, into existing images, and raw streams', async () => {
    const source = await openImageFile(overlay, { readOnly: true });
    try {
      const rawPath = join(dir, 'out.raw');
      const rawBackend = await openNodeBackend(rawPath, { writable: true, create: true });
      await convertToRaw(source, rawBackend);
      await rawBackend.close();
      expectCleanAndEqual(overlay, rawPath, 'raw');
      expect(statSync(rawPath).blocks * 512).toBeLessThan(16 * MiB);

      const existing = join(dir, 'existing.qcow2');
      mustQemu(['create', '-f', 'qcow2', existing, '64M']);
      io(existing, 'write -P 0x77 0 64M');
      const target = await openImageFile(existing);
      await convertInto(source, target);
      await target.close();
      expectCleanAndEqual(overlay, existing);

      const chunks: Uint8Array[] = [];
      let total = 0;
      const stream = new WritableStream<Uint8Array>({ write(chunk) { chunks.push(chunk.slice()); total += chunk.byteLength; } });
      const progress: number[] = [];
      await convertToRawStream(source, stream, { onProgress: (done) => progress.push(done) });
      expect(total).toBe(source.virtualSize);
      const streamed = await RawImage.open(createMemoryBackend(concat(chunks)), { readOnly: true });
      for (const offset of [0, MiB, 2 * MiB, 30 * MiB, 40 * MiB]) expect(await streamed.read(offset, 8192)).toEqual(await source.read(offset, 8192));
      expect(progress[progress.length - 1]).toBe(source.virtualSize);
      expect(progress).toEqual([...progress].sort((a, b) => a - b));
    } finally {
      await source.close();
    }
  });

  it('refuses bad options before touching the target', async () => {
    const target = join(dir, 'untouched.qcow2');
    writeFileSync(target, 'keep');
    const source = await openImageFile(mixed, { readOnly: true });
    const backend = await openNodeBackend(target, { writable: true });
    try {
      await expect(convertToQcow2(source, backend, { create: { clusterSize: 3000 } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(convertToQcow2(source, backend, { minSparseBytes: 100 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(convertToQcow2(source, backend, { requestsInFlight: 0 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    } finally {
      await backend.close();
      await source.close();
    }
    expect(statSync(target).size).toBe(4);
  });
});

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.byteLength; }
  return out;
}
