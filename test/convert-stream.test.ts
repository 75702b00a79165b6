// SPDX-License-Identifier: MIT
// convertToQcow2Stream against qemu-img 7.2: the image written into a stream that only appends
// (it refuses seeks and positioned writes, and keeps every chunk until it closes, so a chunk the
// writer reused would show) passes qemu-img check with no leaks and qemu-img compare finds it
// equal to the source: flat copies of a qcow2 and of a chain, an overlay (-B), compat 0.10,
// extended L2, sizes that are not whole clusters, a larger target. Stream errors abort the export.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openImageFile } from '../bindings/node.js';
import { convertToQcow2Stream, type ConvertToQcow2StreamOptions } from '../bindings/tools/convert-stream.js';
import type { ConvertResult } from '../bindings/tools/convert.js';
import { describeWithQemu, makeImage, qemuCheck, qemuImg, qemuMap, type ImageOp } from './helpers/qemu.js';

const MiB = 1 << 20;
let dir: string;

/** A stream that only appends: anything but a Uint8Array chunk (a seek, a positioned write) fails it. Chunks are kept until close. */
function appendOnlyStream(path: string): { stream: WritableStream<Uint8Array>; chunkCount: () => number } {
  const chunks: Uint8Array[] = [];
  const stream = new WritableStream<Uint8Array>({
    write(chunk: unknown) {
      if (!(chunk instanceof Uint8Array)) throw new TypeError(`this stream only appends bytes, got ${JSON.stringify(chunk)}`);
      chunks.push(chunk);
    },
    close() {
      writeFileSync(path, Buffer.concat(chunks));
    },
  });
  return { stream, chunkCount: () => chunks.length };
}

/** Streams `sourcePath` into `targetName` (in the test folder); returns the target's path and the result. */
async function streamed(sourcePath: string, targetName: string, options: ConvertToQcow2StreamOptions = {}): Promise<{ path: string; result: ConvertResult; announcedBytes: number }> {
  const path = join(dir, targetName);
  const source = await openImageFile(sourcePath, { readOnly: true });
  let announcedBytes = -1;
  try {
    const { stream } = appendOnlyStream(path);
    const result = await convertToQcow2Stream(source, stream, { ...options, onFileBytes: (bytes) => { announcedBytes = bytes; } });
    return { path, result, announcedBytes };
  } finally {
    await source.close();
  }
}

function expectCleanAndEqual(source: string, target: string, sourceFormat = 'qcow2'): void {
  const check = qemuCheck(target);
  expect(check.exitCode).toBe(0);
  expect(check.corruptions ?? 0).toBe(0);
  expect(check.leaks ?? 0).toBe(0);
  const compare = qemuImg(['compare', '-f', sourceFormat, '-F', 'qcow2', source, target]);
  expect(compare.stdout + compare.stderr).toContain('Images are identical');
}

/** Guest bytes qemu-img map reports as data stored in the image itself (depth 0). */
function ownDataBytes(path: string): number {
  return qemuMap(path).filter((e) => e.data && e.depth === 0).reduce((n, e) => n + e.length, 0);
}

describeWithQemu('convertToQcow2Stream (qemu-img as the oracle)', () => {
  let mixed: string;
  let overlay: string;
  const write = (offset: number, length: number, pattern: number): ImageOp => ({ op: 'write', offset, length, pattern });
  const zero = (offset: number, length: number): ImageOp => ({ op: 'zero', offset, length });

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-convert-stream-'));
    mixed = makeImage(dir, 'mixed.qcow2', {
      size: 700 * MiB,
      ops: [write(0, MiB, 0x11), write(2 * MiB, MiB, 0), zero(4 * MiB, MiB), write(33 * MiB, 100 << 10, 0x22), write(511 * MiB, 2 * MiB, 0x33), write(699 * MiB, MiB, 0x44)],
    });
    makeImage(dir, 'base.qcow2', { size: 64 * MiB, ops: [write(0, 8 * MiB, 0x44), write(30 * MiB, 2 * MiB, 0x45)] });
    overlay = makeImage(dir, 'overlay.qcow2', {
      size: 64 * MiB, clusterSize: 4096, backingFile: 'base.qcow2', backingFormat: 'qcow2',
      ops: [write(MiB, 4096, 0x55), zero(2 * MiB, 4096), zero(2052 << 10, 8192), write(40 * MiB, MiB, 0x66), zero(30 * MiB, 64 << 10)],
    });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('streams a qcow2 (two L2 tables apart) into a flat image qemu-img checks clean and finds identical', async () => {
    const { path, result, announcedBytes } = await streamed(mixed, 'flat.qcow2');
    expectCleanAndEqual(mixed, path);
    expect(announcedBytes).toBe(statSync(path).size);
    expect(result.qcow2?.fileBytes).toBe(statSync(path).size);
    // Mapped data is kept even where it holds zeros (2M..3M); zero clusters of a new image are left out.
    expect(ownDataBytes(path)).toBe(ownDataBytes(mixed));
    expect(result.dataBytes).toBe(ownDataBytes(mixed));
  });

  it('flattens a chain, writes an overlay of the top layer (-B), and compat 0.10 and extended L2 images', async () => {
    const flat = await streamed(overlay, 'chain-flat.qcow2', { create: { clusterSize: 16384 } });
    expectCleanAndEqual(overlay, flat.path);

    const top = await streamed(overlay, 'top.qcow2', { create: { backingFile: 'base.qcow2', backingFormat: 'qcow2' } });
    expectCleanAndEqual(overlay, top.path);
    expect(qemuMap(top.path).filter((e) => e.depth === 0 && e.zero && !e.data).length).toBeGreaterThan(0); // zero-flagged over the base

    const old = await streamed(overlay, 'top-v2.qcow2', { create: { compat: '0.10', backingFile: 'base.qcow2', backingFormat: 'qcow2' } });
    expectCleanAndEqual(overlay, old.path);
    expect(old.result.qcow2?.zeroClusters).toBe(0);

    const extended = await streamed(overlay, 'extended.qcow2', { create: { extendedL2: true, clusterSize: 32768, refcountBits: 64 } });
    expectCleanAndEqual(overlay, extended.path);
  });

  it('handles a size that is not whole clusters and a larger target; -S 0 stores every cluster', async () => {
    const raw = makeImage(dir, 'odd.raw', { size: 3 * MiB + 512, format: 'raw', ops: [write(0, 4096, 0x77), write(3 * MiB, 512, 0x78)] });
    const odd = await streamed(raw, 'odd.qcow2');
    expectCleanAndEqual(raw, odd.path, 'raw');

    const larger = await streamed(mixed, 'larger.qcow2', { create: { virtualSize: 800 * MiB } });
    expect(qemuImg(['compare', mixed, larger.path]).stdout).toContain('Images are identical');
    expect(qemuCheck(larger.path).exitCode).toBe(0);

    const full = await streamed(overlay, 'full.qcow2', { minSparseBytes: 0, create: { clusterSize: 1 << 20 } });
    expectCleanAndEqual(overlay, full.path);
    expect(ownDataBytes(full.path)).toBe(64 * MiB);
  });

  it('reports progress in guest order up to the virtual size', async () => {
    const progress: number[] = [];
    await streamed(overlay, 'progress.qcow2', { onProgress: (done) => progress.push(done) });
    expect(progress[progress.length - 1]).toBe(64 * MiB);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
  });

  it('aborts the export with the stream\'s error; refuses preallocation, a smaller target and a locked stream before writing', async () => {
    const source = await openImageFile(mixed, { readOnly: true });
    try {
      let writes = 0;
      let abortedWith: unknown;
      const failing = new WritableStream<Uint8Array>({
        write() {
          if (++writes === 3) throw new Error('disk full');
        },
        abort(reason) { abortedWith = reason; },
      });
      await expect(convertToQcow2Stream(source, failing)).rejects.toThrow('disk full');
      expect(writes).toBe(3);
      expect(abortedWith).toBeUndefined(); // the stream erred itself; nothing left to abort

      let written = 0;
      const untouched = new WritableStream<Uint8Array>({ write() { written++; } });
      await expect(convertToQcow2Stream(source, untouched, { create: { preallocation: 'metadata' } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(convertToQcow2Stream(source, untouched, { create: { virtualSize: MiB } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      const locked = new WritableStream<Uint8Array>();
      const holder = locked.getWriter();
      await expect(convertToQcow2Stream(source, locked)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      holder.releaseLock();
      expect(written).toBe(0);
    } finally {
      await source.close();
    }
  });
});
