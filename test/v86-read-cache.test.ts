// SPDX-License-Identifier: MIT
// The v86 adapter's read cache (bindings/emulators/v86-read-cache.ts): v86's get is answered
// before it returns when the bytes are cached, later when they are not, always with the image's
// bytes; writes never leave a stale block behind, failures reach onerror without a throw into
// v86.

import { describe, it, expect, vi } from 'vitest';
import { toV86Disk, V86Disk, type V86DiskOperation } from '../bindings/v86.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { RawImage } from '../bindings/raw/raw-image.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { wrapFaultyBackend, type FaultCallInfo } from './helpers/faulty-backend.js';

const KiB = 1024;
const MiB = 1024 * 1024;
const SECTOR = 512;
const BLOCK = 64 * KiB;

const filled = (length: number, byte: number) => new Uint8Array(length).fill(byte);
const quietErrors = () => ({ onerror: vi.fn<(error: Error, operation: V86DiskOperation) => void>() });

/** Bytes that differ at every offset (so a block read from the wrong place shows). */
function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

/** One get as v86 issues it: whether fn ran before get returned, and the bytes fn got. */
function getNow(disk: V86Disk, start: number, len: number): { atOnce: boolean; data: Promise<Uint8Array> } {
  let returned = false;
  let atOnce = false;
  const data = new Promise<Uint8Array>((resolve) => {
    disk.get(start, len, (bytes) => {
      atOnce = !returned;
      resolve(bytes);
    });
  });
  returned = true;
  return { atOnce, data };
}

describe('toV86Disk read cache', () => {
  it('a cached read answers before get returns, a miss answers later; the bytes are the image\'s', async () => {
    const image = await Qcow2Image.create(createMemoryBackend(0), { virtualSize: 2 * MiB, clusterSize: 4 * KiB });
    await image.write(0, pattern(1 * MiB, 7));
    const disk = toV86Disk(image, { readCache: { blockBytes: BLOCK, neighbourhoodBytes: 0, maxAheadBytes: 4 * BLOCK, cacheBytes: 16 * BLOCK } });
    const expectImageBytes = async (start: number, got: Uint8Array) => expect(got).toEqual(await image.read(start, got.byteLength));

    const miss = getNow(disk, 4 * KiB, 8 * KiB);
    expect(miss.atOnce).toBe(false);
    await expectImageBytes(4 * KiB, await miss.data);

    const hit = getNow(disk, 20 * KiB, 2 * SECTOR); // the same block
    expect(hit.atOnce).toBe(true);
    await expectImageBytes(20 * KiB, await hit.data);

    const straddling = getNow(disk, 8 * BLOCK - 4 * KiB, 8 * KiB); // two blocks not read yet
    expect(straddling.atOnce).toBe(false);
    await expectImageBytes(8 * BLOCK - 4 * KiB, await straddling.data);

    // Reading forward opens the read-ahead window: the following block arrives unasked.
    const forward = getNow(disk, 9 * BLOCK, 4 * KiB);
    expect(forward.atOnce).toBe(false);
    await expectImageBytes(9 * BLOCK, await forward.data);
    await vi.waitFor(async () => {
      const ahead = getNow(disk, 10 * BLOCK, 4 * KiB);
      await ahead.data;
      expect(ahead.atOnce).toBe(true);
    });
    const both = getNow(disk, 9 * BLOCK + 60 * KiB, 8 * KiB);
    expect(both.atOnce).toBe(true);
    await expectImageBytes(9 * BLOCK + 60 * KiB, await both.data);
    // The disk's last sector (unallocated in the image) reads as the image reads it.
    const tail = getNow(disk, 2 * MiB - SECTOR, SECTOR);
    await expectImageBytes(2 * MiB - SECTOR, await tail.data);
    await disk.close();
  });

  it('a miss reads the rest of its aligned neighbourhood too', async () => {
    const image = await RawImage.open(createMemoryBackend(2 * MiB));
    await image.write(0, pattern(2 * MiB, 3));
    const disk = toV86Disk(image, { readCache: { blockBytes: BLOCK, neighbourhoodBytes: 8 * BLOCK, maxAheadBytes: 0 } });
    const miss = getNow(disk, 5 * BLOCK + SECTOR, SECTOR); // in the run of blocks 0..7
    expect(miss.atOnce).toBe(false);
    await miss.data;
    await vi.waitFor(async () => {
      for (const block of [0, 7]) {
        const near = getNow(disk, block * BLOCK, 4 * KiB);
        expect(await near.data).toEqual(await image.read(block * BLOCK, 4 * KiB));
        expect(near.atOnce).toBe(true);
      }
    });
    expect(getNow(disk, 8 * BLOCK, SECTOR).atOnce).toBe(false); // the next run was not read
    await disk.close();
  });

  it('a miss reads its block by itself and each run of the rest of its neighbourhood with one image read', async () => {
    const image = await RawImage.open(createMemoryBackend(2 * MiB));
    await image.write(0, pattern(2 * MiB, 4));
    const disk = toV86Disk(image, { readCache: { blockBytes: BLOCK, neighbourhoodBytes: 8 * BLOCK, maxAheadBytes: 0 } });
    const reads: [number, number][] = [];
    const read = image.read.bind(image);
    image.read = (offset, length) => {
      reads.push([offset / BLOCK, length / BLOCK]);
      return read(offset, length);
    };
    const miss = getNow(disk, 5 * BLOCK + SECTOR, SECTOR);
    expect(await miss.data).toEqual(await read(5 * BLOCK + SECTOR, SECTOR));
    await vi.waitFor(() => expect(getNow(disk, 7 * BLOCK, SECTOR).atOnce).toBe(true));
    expect(reads).toEqual([[5, 1], [0, 5], [6, 2]]);
    for (const block of [0, 4, 6, 7]) {
      const near = getNow(disk, block * BLOCK, BLOCK);
      expect(near.atOnce).toBe(true);
      expect(await near.data).toEqual(await read(block * BLOCK, BLOCK));
    }
    await disk.close();
  });

  it('load() reads the first sector through the cache, with its neighbourhood', async () => {
    const image = await RawImage.open(createMemoryBackend(2 * MiB));
    await image.write(0, pattern(2 * MiB, 5));
    const disk = toV86Disk(image, { readCache: { blockBytes: BLOCK, neighbourhoodBytes: 4 * BLOCK } });
    await disk.load();
    expect(disk.get_from_cache(0, SECTOR)).toEqual(await image.read(0, SECTOR));
    await vi.waitFor(async () => {
      const near = getNow(disk, 3 * BLOCK, 8 * KiB);
      expect(await near.data).toEqual(await image.read(3 * BLOCK, 8 * KiB));
      expect(near.atOnce).toBe(true);
    });
    await disk.close();
  });

  it('with readCache false every read answers later, as before', async () => {
    const image = await RawImage.open(createMemoryBackend(1 * MiB));
    const disk = toV86Disk(image, { readCache: false });
    for (let i = 0; i < 3; i++) {
      const read = getNow(disk, 0, SECTOR);
      expect(read.atOnce).toBe(false);
      expect(await read.data).toEqual(filled(SECTOR, 0));
    }
    await disk.close();
  });

  it('a write followed by a read of the same sectors never answers stale bytes from the cache', async () => {
    const image = await RawImage.open(createMemoryBackend(1 * MiB));
    await image.write(0, filled(BLOCK, 0x11));
    const disk = toV86Disk(image, { readCache: { blockBytes: BLOCK, maxAheadBytes: 0 } });
    await getNow(disk, 0, SECTOR).data; // block 0 cached

    // Through the adapter: the cached block takes the write at once (v86 then reuses its buffer).
    const ideBuffer = filled(2 * SECTOR, 0x22);
    disk.set(SECTOR, ideBuffer, () => {});
    ideBuffer.fill(0x99);
    const after = getNow(disk, 0, 4 * SECTOR);
    expect(after.atOnce).toBe(true);
    const expected = filled(4 * SECTOR, 0x11).fill(0x22, SECTOR, 3 * SECTOR);
    expect(await after.data).toEqual(expected);
    await disk.flush();
    expect(await image.read(0, 4 * SECTOR)).toEqual(expected);
    await disk.close();
  });

  it('a write while the block is being read: the read in flight is not cached, the next read sees the write', async () => {
    let holdReads = false;
    const backend = wrapFaultyBackend(createMemoryBackend(1 * MiB), {
      decide: (call: FaultCallInfo) => (call.op === 'preadv' && holdReads ? { hold: true } : undefined),
    });
    const image = await RawImage.open(backend);
    await image.write(0, filled(BLOCK, 0x11));
    const disk = toV86Disk(image, { readCache: { blockBytes: BLOCK, maxAheadBytes: 0 } });
    holdReads = true;
    const before = getNow(disk, 0, SECTOR); // block 0's read is held with the old bytes
    await backend.whenHeld(1);
    holdReads = false;
    const written: string[] = [];
    disk.set(0, filled(SECTOR, 0x33), () => written.push('set'));
    backend.releaseAll();
    expect(before.atOnce).toBe(false);
    await before.data; // issued before the write: either content is right for it
    const next = getNow(disk, 0, 2 * SECTOR);
    expect(next.atOnce).toBe(false); // the held read's old bytes were not cached
    expect(await next.data).toEqual(filled(2 * SECTOR, 0x11).fill(0x33, 0, SECTOR));
    const again = getNow(disk, 0, 2 * SECTOR);
    expect(again.atOnce).toBe(true);
    expect(await again.data).toEqual(filled(2 * SECTOR, 0x11).fill(0x33, 0, SECTOR));
    await disk.close();
    expect(written).toEqual(['set']);
  });

  it('a failed write drops the cached block: later reads answer what the image holds', async () => {
    let failWrites = false;
    const backend = wrapFaultyBackend(createMemoryBackend(1 * MiB), {
      decide: (call: FaultCallInfo) => (call.op === 'pwritev' && failWrites ? { fail: true } : undefined),
    });
    const image = await RawImage.open(backend);
    await image.write(0, filled(BLOCK, 0x11));
    const options = quietErrors();
    const disk = toV86Disk(image, { ...options, readCache: { blockBytes: BLOCK, maxAheadBytes: 0 } });
    await getNow(disk, 0, SECTOR).data;
    failWrites = true;
    disk.set(0, filled(SECTOR, 0x44), () => {});
    await expect(disk.flush()).rejects.toMatchObject({ code: 'IMAGE_IO_ERROR' });
    expect(options.onerror).toHaveBeenCalledWith(expect.anything(), 'write');
    const read = getNow(disk, 0, SECTOR);
    expect(read.atOnce).toBe(false);
    expect(await read.data).toEqual(filled(SECTOR, 0x11));
    failWrites = false;
    await disk.close();
  });

  it('a failed read reaches onerror without a throw into the caller, is not cached, and the next read succeeds', async () => {
    let failReads = true;
    const backend = wrapFaultyBackend(createMemoryBackend(1 * MiB), {
      decide: (call: FaultCallInfo) => (call.op === 'preadv' && failReads ? { fail: true } : undefined),
    });
    const image = await RawImage.open(backend);
    const options = quietErrors();
    const disk = toV86Disk(image, { ...options, readCache: { blockBytes: BLOCK, maxAheadBytes: 4 * BLOCK } });
    const got: Uint8Array[] = [];
    expect(() => disk.get(0, SECTOR, (data) => got.push(data))).not.toThrow();
    await vi.waitFor(() => expect(options.onerror).toHaveBeenCalledTimes(1));
    expect(options.onerror.mock.calls[0]![1]).toBe('read');
    expect(options.onerror.mock.calls[0]![0]).toMatchObject({ code: 'IMAGE_IO_ERROR' });
    expect(got).toEqual([]);
    failReads = false;
    const retry = getNow(disk, 0, SECTOR);
    expect(retry.atOnce).toBe(false);
    expect(await retry.data).toEqual(filled(SECTOR, 0));
    expect(options.onerror).toHaveBeenCalledTimes(1);
    await disk.close();
  });

  it('refresh() drops the cache (the image changed other than through set)', async () => {
    const image = await RawImage.open(createMemoryBackend(1 * MiB));
    const disk = toV86Disk(image, { readCache: { blockBytes: BLOCK, neighbourhoodBytes: 0 } });
    await getNow(disk, 2 * BLOCK, SECTOR).data;
    await image.write(2 * BLOCK, filled(SECTOR, 0x55));
    expect(await getNow(disk, 2 * BLOCK, SECTOR).data).toEqual(filled(SECTOR, 0)); // cached, as documented
    await disk.refresh();
    const read = getNow(disk, 2 * BLOCK, SECTOR);
    expect(read.atOnce).toBe(false);
    expect(await read.data).toEqual(filled(SECTOR, 0x55));
    await disk.close();
  });

  it('reads larger than a quarter of the cache, and ranges outside the disk, go to the image', async () => {
    const image = await RawImage.open(createMemoryBackend(1 * MiB));
    const options = quietErrors();
    const disk = toV86Disk(image, { ...options, readCache: { blockBytes: BLOCK, cacheBytes: 8 * BLOCK } });
    const large = getNow(disk, 0, 4 * BLOCK);
    await large.data;
    expect(getNow(disk, 0, SECTOR).atOnce).toBe(false); // the large read left nothing cached
    disk.get(1 * MiB - SECTOR, 2 * SECTOR, () => {});
    await vi.waitFor(() => expect(options.onerror).toHaveBeenCalledTimes(1));
    expect(options.onerror.mock.calls[0]![0]).toMatchObject({ code: 'IMAGE_OUT_OF_RANGE' });
    expect(() => toV86Disk(image, { readCache: { blockBytes: 0 } })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    await disk.close();
  });
});
