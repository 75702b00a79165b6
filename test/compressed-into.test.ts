// SPDX-License-Identifier: MIT
// Compressed clusters written into an existing, open qcow2 image (Qcow2Image.writeCompressedClusters,
// convert -c -n) against qemu-img 7.2: the same allocation map, the same compressed cluster count,
// qemu-img check clean and compare equal to the source; QEMU's refusal of a compressed write over an
// allocated cluster; packing within a 1-bit refcount; and a run cut by a power failure at every
// point leaves an image without corruption whose every cluster reads as before or as the source.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOurCli, runQemuImg, expectQemuClean } from './helpers/cli-runs.js';
import { describeWithQemu, qemuCheck, qemuImg, qemuIo, qemuMap } from './helpers/qemu.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import { CompressedOverwriteError } from '../bindings/qcow2/qcow2-compressed-write.js';
import { convertIntoCompressed } from '../bindings/tools/convert-compressed-into.js';
import { createInlineCompressor } from '../bindings/qcow2/compress.js';
import { createCrashBackend } from './helpers/crash-backend.js';
import { makePrng } from './helpers/prng.js';

const KiB = 1024;

/** Compressible text of `bytes` bytes. */
function text(bytes: number, seed: number): Uint8Array {
  let out = '';
  for (let i = 0; out.length < bytes; i++) out += `cluster ${i * seed} of guest ${seed} refcount ${i % 97}\n`;
  return new TextEncoder().encode(out.slice(0, bytes));
}

function mustQemu(dir: string, args: string[]): void {
  const result = qemuImg(args, dir);
  if (result.code !== 0) throw new Error(`qemu-img ${args.join(' ')}: ${result.stderr}`);
}

/** qemu-img map without host offsets (they differ between two writers' layouts). */
function layout(path: string): unknown[] {
  return qemuMap(path).map(({ offset: _offset, ...entry }) => entry);
}

describeWithQemu('convert -c -n (qemu-img as the oracle)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-compressed-into-'));
    // Zero-filled data, text, a zero cluster, random bytes, text ending mid-cluster, a hole.
    writeFileSync(join(dir, 'random.bin'), makePrng(5).fill(new Uint8Array(64 * KiB)));
    writeFileSync(join(dir, 'text.bin'), text(300 * KiB, 3));
    mustQemu(dir, ['create', '-f', 'qcow2', 'source.qcow2', '3M']);
    const io = qemuIo(['-c', 'write -P 0 0 64k', '-c', 'write -s text.bin 64k 300k', '-c', 'write -z 448k 64k',
      '-c', 'write -s random.bin 1M 64k', '-c', 'write -s text.bin 2000k 100k', 'source.qcow2'], dir);
    if (io.code !== 0) throw new Error(io.stderr);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('stores clusters compressed in an existing image as qemu-img does (zlib and zstd, -S default and 0, two cluster sizes)', async () => {
    for (const compressionType of ['zlib', 'zstd']) {
      for (const clusterSize of ['64k', '4k']) {
        for (const sparse of [[], ['-S', '0']]) {
          const name = `${compressionType}-${clusterSize}${sparse.length ? '-s0' : ''}`;
          for (const who of ['ours', 'qemu']) {
            mustQemu(dir, ['create', '-f', 'qcow2', '-o', `compression_type=${compressionType},cluster_size=${clusterSize}`, `${name}-${who}.qcow2`, '3M']);
          }
          const args = ['convert', '-c', '-n', ...sparse, '-O', 'qcow2', 'source.qcow2'];
          const ours = await runOurCli(dir, [...args, `${name}-ours.qcow2`]);
          const theirs = runQemuImg(dir, [...args, `${name}-qemu.qcow2`]);
          expect({ code: ours.code, stderr: ours.stderr }, name).toEqual({ code: theirs.code, stderr: '' });
          const ourPath = join(dir, `${name}-ours.qcow2`);
          const theirPath = join(dir, `${name}-qemu.qcow2`);
          expectQemuClean(ourPath, name);
          expect(qemuImg(['compare', 'source.qcow2', `${name}-ours.qcow2`], dir).code, name).toBe(0);
          expect(layout(ourPath), name).toEqual(layout(theirPath));
          expect(qemuCheck(ourPath)['compressed-clusters'], name).toBe(qemuCheck(theirPath)['compressed-clusters']);
          expect(qemuCheck(ourPath)['compressed-clusters'], name).toBeGreaterThan(0);
        }
      }
    }
  }, 120_000);

  it('refuses a compressed write over an allocated cluster with qemu-img\'s message and exit code', async () => {
    for (const who of ['ours', 'qemu']) {
      mustQemu(dir, ['create', '-f', 'qcow2', `taken-${who}.qcow2`, '3M']);
      const io = qemuIo(['-c', 'write -P 7 64k 64k', `taken-${who}.qcow2`], dir);
      if (io.code !== 0) throw new Error(io.stderr);
    }
    const ours = await runOurCli(dir, ['convert', '-c', '-n', '-O', 'qcow2', 'source.qcow2', 'taken-ours.qcow2']);
    const theirs = runQemuImg(dir, ['convert', '-c', '-n', '-O', 'qcow2', 'source.qcow2', 'taken-qemu.qcow2'], true);
    expect({ code: ours.code, stderr: ours.stderr }).toEqual({ code: theirs.code, stderr: theirs.stderr });
    expect(theirs.code).toBe(1);
    expectQemuClean(join(dir, 'taken-ours.qcow2'), 'after the refusal');
    // The allocated cluster keeps its data.
    const read = qemuIo(['-c', 'read -P 7 64k 64k', 'taken-ours.qcow2'], dir);
    expect({ code: read.code, failed: /fail|error/i.test(read.stdout) }).toEqual({ code: 0, failed: false });
  });

  it('packs compressed clusters within a 1-bit refcount and refuses bad writes before writing anything', async () => {
    mustQemu(dir, ['create', '-f', 'qcow2', '-o', 'refcount_bits=1,cluster_size=4k', 'rc1.qcow2', '1M']);
    const image = await Qcow2Image.open(await openNodeBackend(join(dir, 'rc1.qcow2'), { writable: true }));
    const compressor = createInlineCompressor();
    const clusters = text(32 * 4 * KiB, 9);
    const results = await compressor.compressClusters(image.header.compressionType, clusters, 4 * KiB);
    await image.writeCompressedClusters(results.map((compressed, i) => ({ guestOffset: i * 4 * KiB, compressed: compressed as Uint8Array })));
    await expect(image.writeCompressedClusters([{ guestOffset: 0, compressed: results[0] as Uint8Array }])).rejects.toBeInstanceOf(CompressedOverwriteError);
    await expect(image.writeCompressedClusters([{ guestOffset: 100, compressed: results[0] as Uint8Array }])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(image.writeCompressedClusters([{ guestOffset: 40 * 4 * KiB, compressed: new Uint8Array(4 * KiB) }])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(await image.read(0, clusters.length)).toEqual(clusters);
    await image.close();
    await compressor.close();
    expectQemuClean(join(dir, 'rc1.qcow2'), 'refcount_bits=1');
    expect(qemuCheck(join(dir, 'rc1.qcow2'))['compressed-clusters']).toBe(32);
    writeFileSync(join(dir, 'rc1.raw'), clusters);
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', 'rc1.raw', 'rc1.qcow2'], dir).code).toBe(0);
  });
});

describe('convert -c -n cut by a power failure', () => {
  it('leaves an image without corruption that reads, cluster by cluster, as before or as the source, at every cut', async () => {
    const clusterBytes = 4096;
    const virtualSize = 20 << 20; // three 8 MiB chunks, their compressed clusters stored in one metadata switch
    const source = await Qcow2Image.create(createMemoryBackend(), { virtualSize, clusterSize: clusterBytes });
    for (const at of [0, 9 << 20, 17 << 20]) await source.write(at, text(200 * KiB, at + 1));
    await source.write(12 << 20, makePrng(3).fill(new Uint8Array(8 * KiB)));
    // The target holds data of its own where the source has none.
    const initial = createMemoryBackend();
    const before = await Qcow2Image.create(initial, { virtualSize, clusterSize: clusterBytes });
    await before.write(5 << 20, text(16 * KiB, 77));
    await before.flush();
    const initialBytes = new Uint8Array(await initial.getSize());
    await initial.preadv(0, [initialBytes]);
    await before.close();
    const crash = createCrashBackend(initialBytes, { jitter: makePrng(4) });
    const target = await Qcow2Image.open(crash);
    const original = await (await Qcow2Image.open(createMemoryBackend(initialBytes.slice()), { readOnly: true })).read(0, virtualSize);
    const expected = await source.read(0, virtualSize);
    await convertIntoCompressed(source, target, { compressor: createInlineCompressor() });
    await target.close();
    const replay = crash.replay();
    const prng = makePrng(12);
    let states = 0;
    for (let k = 0; k < crash.writes.length; k++) {
      replay.advance(k);
      const state = replay.state(prng, 0.3);
      const image = await Qcow2Image.open(createMemoryBackend(state.bytes), { readOnly: true });
      const report = await image.check();
      // Leaks are allowed, as for every write path cut by a power failure (the zero writes take the ordinary one).
      expect({ corruptions: report.corruptions, checkErrors: report.checkErrors }, `cut after write ${k}`).toEqual({ corruptions: 0, checkErrors: 0 });
      const now = await image.read(0, virtualSize);
      for (let at = 0; at < virtualSize; at += clusterBytes) {
        const cluster = now.subarray(at, at + clusterBytes);
        const asBefore = cluster.every((byte, i) => byte === original[at + i]);
        const asSource = cluster.every((byte, i) => byte === expected[at + i]);
        if (!asBefore && !asSource) expect.fail(`cut after write ${k}: guest cluster at ${at} reads neither as before nor as the source`);
      }
      await image.close();
      states++;
    }
    expect(states).toBeGreaterThan(10);
    expect(crash.overlaps).toEqual([]);
  }, 240_000);
});
