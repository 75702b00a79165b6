// SPDX-License-Identifier: MIT
// The table bytes of the metadata tools, written and read by the wasm core through a 64 KiB
// window (bindings/qcow2/qcow2-metadata-codec.ts): checked entry by entry against a reference decoder
// written here from the qcow2 spec, on tables larger than the window; and the tools themselves
// (snapshot with VM state, shrink cutting a compressed last cluster, grow, refcount width changes,
// compat downgrade) on images whose tables span several windows, with QEMU as the oracle.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TableCodec, type L2Geometry } from '../bindings/qcow2/qcow2-metadata-codec.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import type { Backend } from '../bindings/backends/backend.js';
import { createSnapshot, readSnapshotVmState } from '../bindings/qcow2/qcow2-snapshot-ops.js';
import { resizeQcow2 } from '../bindings/tools/resize.js';
import { amendQcow2 } from '../bindings/tools/amend.js';
import { convertToRaw, describeWithQemu, makeImage, qemuCheck, qemuImg } from './helpers/qemu.js';
import { makePrng } from './helpers/prng.js';
import { expectBytes, expectFilled } from './helpers/bytes.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const OFFSET_MASK = 0x00fffffffffffe00n;
const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;

/** Refcount `index` of a block of 2^order-bit refcounts, by the spec: sub-byte widths from each byte's low bits, else big-endian. */
function referenceRefcount(block: Uint8Array, order: number, index: number): bigint {
  const bits = 2 ** order;
  if (bits < 8) return BigInt((block[Math.floor((index * bits) / 8)] >> ((index * bits) % 8)) & ((1 << bits) - 1));
  let value = 0n;
  for (let i = 0; i < bits / 8; i++) value = (value << 8n) | BigInt(block[(index * bits) / 8 + i]);
  return value;
}

const entryAt = (table: Uint8Array, at: number) => new DataView(table.buffer, table.byteOffset).getBigUint64(at);
const setEntryAt = (table: Uint8Array, at: number, value: bigint) => new DataView(table.buffer, table.byteOffset).setBigUint64(at, value);

describe('metadata table codec (wasm) on tables larger than its window', () => {
  it('writes and reads refcount blocks of every width as the spec lays them out', async () => {
    const codec = await TableCodec.load();
    const clusterSize = 256 * KiB;
    const prng = makePrng(7);
    for (let order = 0; order <= 6; order++) {
      const bits = 2 ** order;
      const perBlock = (clusterSize * 8) / bits;
      const max = bits >= 32 ? 2 ** 32 - 1 : 2 ** bits - 1;
      const counts = new Map<number, number>();
      for (let n = 0; n < 2000; n++) counts.set(prng.int(perBlock), 1 + prng.int(max));
      counts.set(perBlock - 1, max);
      const block = codec.refcountBlock(clusterSize, order, (i) => counts.get(i) ?? 0);
      for (let i = 0; i < perBlock; i += 1 + prng.int(97)) {
        expect(referenceRefcount(block, order, i), `order ${order} index ${i}`).toBe(BigInt(counts.get(i) ?? 0));
      }
      for (const [i, count] of counts) expect(referenceRefcount(block, order, i), `order ${order} index ${i}`).toBe(BigInt(count));
      const read = new Map<number, number>();
      codec.refcounts(block, order, (i, refcount) => read.set(i, refcount));
      expect(read, `order ${order}: read back`).toEqual(counts);
    }
  });

  it('writes a refcount block from its first entries only, the rest zero, asking nothing of them', async () => {
    const codec = await TableCodec.load();
    const clusterSize = 256 * KiB;
    const order = 4;
    const entries = 70_000; // past the first window part
    const asked: number[] = [];
    const block = codec.refcountBlock(clusterSize, order, (i) => { asked.push(i); return 1 + (i % 7); }, entries);
    expect(asked.length).toBe(entries);
    expect(Math.max(...asked)).toBe(entries - 1);
    for (const i of [0, 1, 65_535, 65_536, entries - 1]) expect(referenceRefcount(block, order, i), `index ${i}`).toBe(BigInt(1 + (i % 7)));
    for (const i of [entries, entries + 1, (clusterSize * 8) / 16 - 1]) expect(referenceRefcount(block, order, i), `index ${i}`).toBe(0n);
    expect(Buffer.compare(block, codec.refcountBlock(clusterSize, order, (i) => (i < entries ? 1 + (i % 7) : 0)))).toBe(0);
  });

  it('reads and writes L1 entries and refcount table entries across window parts', async () => {
    const codec = await TableCodec.load();
    const entries = 20_000; // 160,000 bytes: three window parts
    const offsets = Array.from({ length: entries }, (_, i) => (i % 7 === 0 ? 0 : (i * 3 + 1) * 65536 + (i % 5 === 0 ? 2 ** 40 : 0)));
    const l1 = new Uint8Array(TableCodec.pointerTableBytes(entries));
    codec.setL1Offsets(l1, 0, offsets, true);
    for (let i = 0; i < entries; i++) {
      const expected = offsets[i] === 0 ? 0n : BigInt(offsets[i]) | COPIED;
      expect(entryAt(l1, i * 8), `entry ${i}`).toBe(expected);
    }
    // Reserved low bits and COPIED are not part of the offset.
    setEntryAt(l1, 8 * 9000, (5n << 16n) | COPIED | 0x1ffn);
    const read = codec.l1Offsets(l1);
    expect(read[9000]).toBe(5 * 65536);
    expect(read.filter((_, i) => i !== 9000)).toEqual(offsets.filter((_, i) => i !== 9000));
    expect(codec.l1Offset(l1, 19_999)).toBe(offsets[19_999]);

    const blocks = new Map([[0, 3 * 65536], [8191, 2 ** 45], [8192, 7 * 65536], [16_000, 9 * 65536]]);
    const reftable = codec.reftable(65536, 2, blocks);
    expect(reftable.length).toBe(2 * 65536);
    for (const [index, hostOffset] of blocks) expect(entryAt(reftable, index * 8)).toBe(BigInt(hostOffset));
    const reread = codec.reftableOffsets(reftable);
    expect(reread.flatMap((o, i) => (o === 0 ? [] : [[i, o]]))).toEqual([...blocks]);
    expect(() => codec.reftable(65536, 2, new Map([[16_384, 65536]]))).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('decodes standard, zero, compressed and extended L2 entries as the spec says', async () => {
    const codec = await TableCodec.load();
    for (const geometry of [
      { clusterBits: 21, extendedL2: false, version: 3 }, { clusterBits: 18, extendedL2: true, version: 3 }, { clusterBits: 16, extendedL2: false, version: 2 },
    ] satisfies L2Geometry[]) {
      const clusterSize = 2 ** geometry.clusterBits;
      const stride = geometry.extendedL2 ? 16 : 8;
      const table = new Uint8Array(clusterSize);
      const last = clusterSize / stride - 1;
      // Entry 1: data with COPIED; entry 2: zero flag (preallocated); the last: compressed.
      setEntryAt(table, stride, (12n << BigInt(geometry.clusterBits)) | COPIED);
      setEntryAt(table, 2 * stride, (13n << BigInt(geometry.clusterBits)) | 1n);
      if (geometry.extendedL2) setEntryAt(table, 2 * stride + 8, 0xffffffff00000000n);
      const x = 62 - (geometry.clusterBits - 8);
      const compressedOffset = 5n * 2n ** 20n + 300n;
      const extraSectors = 3n;
      setEntryAt(table, last * stride, COMPRESSED | (extraSectors << BigInt(x)) | compressedOffset);
      const ranges: [number, number][] = [];
      codec.l2References(table, geometry, (hostOffset, bytes) => ranges.push([hostOffset, bytes]));
      expect(ranges).toEqual([
        [12 * clusterSize, clusterSize], [13 * clusterSize, clusterSize], [Number(compressedOffset & ~511n), Number(extraSectors + 1n) * 512],
      ]);
      expect(codec.l2Entry(table, geometry, 2)).toEqual({ compressed: false, hostOffset: 13 * clusterSize, readsAsZeros: geometry.version === 3 });
      expect(codec.l2Entry(table, geometry, last)).toEqual({ compressed: true, hostOffset: 0, readsAsZeros: false });
      expect(codec.compressedRun(table, geometry, last)).toEqual({
        hostOffset: Number(compressedOffset), runStart: Number(compressedOffset & ~511n), runBytes: Number(extraSectors + 1n) * 512,
      });

      // COPIED follows the answer, and is never set on compressed entries.
      expect(codec.syncCopiedFlags(table, geometry, (hostOffset) => hostOffset === 13 * clusterSize)).toBe(true);
      expect(entryAt(table, stride) & COPIED).toBe(0n);
      expect(entryAt(table, 2 * stride) & COPIED).toBe(COPIED);
      expect(entryAt(table, last * stride) & COPIED).toBe(0n);
      expect(codec.syncCopiedFlags(table, geometry, (hostOffset) => hostOffset === 13 * clusterSize)).toBe(false);

      // A compressed entry moved to a data cluster becomes a plain, fully allocated one; a
      // zero-flagged one keeps its flag and bitmap.
      codec.relocateL2Entry(table, geometry, last, 40 * clusterSize);
      expect(entryAt(table, last * stride)).toBe(40n * BigInt(clusterSize));
      if (geometry.extendedL2) expect(entryAt(table, last * stride + 8)).toBe(0xffffffffn);
      codec.relocateL2Entry(table, geometry, 2, 41 * clusterSize);
      expect(entryAt(table, 2 * stride)).toBe((41n * BigInt(clusterSize)) | 1n);
      if (geometry.extendedL2) expect(entryAt(table, 2 * stride + 8)).toBe(0xffffffff00000000n);

      const replaced = codec.replaceZeroFlagged(table, geometry, () => 50 * clusterSize);
      expect(replaced).toBe(true);
      expect(entryAt(table, 2 * stride)).toBe(50n * BigInt(clusterSize));

      const data = codec.dataL2Table(geometry, [clusterSize, 2 * clusterSize]);
      expect(entryAt(data, stride) & OFFSET_MASK).toBe(2n * BigInt(clusterSize));
      expect(entryAt(data, stride) & COPIED).toBe(COPIED);
      if (geometry.extendedL2) expect(entryAt(data, 8)).toBe(0xffffffffn);
      expect(entryAt(data, 2 * stride)).toBe(0n);
    }
  });

  it('encodes data, compressed and zero L2 entries as the spec lays them out', async () => {
    const codec = await TableCodec.load();
    for (const geometry of [
      { clusterBits: 21, extendedL2: false, version: 3 }, { clusterBits: 18, extendedL2: true, version: 3 }, { clusterBits: 9, extendedL2: false, version: 3 },
    ] satisfies L2Geometry[]) {
      const clusterSize = 2 ** geometry.clusterBits;
      const stride = geometry.extendedL2 ? 16 : 8;
      const table = new Uint8Array(clusterSize);
      const last = clusterSize / stride - 1;
      // Stale bytes everywhere: each encoder must write its whole entry.
      table.fill(0xa5);
      codec.setDataL2Entry(table, geometry, 0, 7 * clusterSize);
      expect(entryAt(table, 0)).toBe(7n * BigInt(clusterSize) | COPIED);
      if (geometry.extendedL2) expect(entryAt(table, 8)).toBe(0xffffffffn);

      // Compressed data starting 300 bytes into a sector and crossing into the third one after it.
      const hostOffset = 3 * 2 ** 20 + 300;
      const compressedBytes = Math.min(clusterSize - 1, 3 * 512 - 299);
      codec.setCompressedL2Entry(table, geometry, last, hostOffset, compressedBytes);
      const x = BigInt(62 - (geometry.clusterBits - 8));
      const extraSectors = BigInt(Math.floor((hostOffset + compressedBytes - 1) / 512) - Math.floor(hostOffset / 512));
      expect(entryAt(table, last * stride)).toBe(COMPRESSED | (extraSectors << x) | BigInt(hostOffset));
      if (geometry.extendedL2) expect(entryAt(table, last * stride + 8)).toBe(0n);
      expect(codec.compressedRun(table, geometry, last)).toEqual({
        hostOffset, runStart: hostOffset - 300, runBytes: Number(extraSectors + 1n) * 512,
      });

      codec.setZeroL2Entry(table, geometry, 1);
      expect(entryAt(table, stride)).toBe(geometry.extendedL2 ? 0n : 1n);
      if (geometry.extendedL2) expect(entryAt(table, stride + 8)).toBe(0xffffffff00000000n);
      expect(codec.l2Entry(table, geometry, 1)).toEqual({ compressed: false, hostOffset: 0, readsAsZeros: true });
      expect(table[2 * stride], 'the entry after is untouched').toBe(0xa5);
    }
  });

  it('writes a run of data L2 entries, across window parts, as setDataL2Entry writes each', async () => {
    const codec = await TableCodec.load();
    for (const geometry of [{ clusterBits: 21, extendedL2: false, version: 3 }, { clusterBits: 18, extendedL2: true, version: 3 }] satisfies L2Geometry[]) {
      const clusterSize = 2 ** geometry.clusterBits;
      const stride = geometry.extendedL2 ? 16 : 8;
      const entries = clusterSize / stride;
      const first = 3;
      const count = entries - 5; // from near the start to near the end: every window part
      const hostOffset = 2 ** 41 + 5 * clusterSize;
      const run = new Uint8Array(clusterSize).fill(0xa5);
      codec.setDataL2Entries(run, geometry, first, count, hostOffset);
      const oneByOne = new Uint8Array(clusterSize).fill(0xa5);
      for (let i = 0; i < count; i++) codec.setDataL2Entry(oneByOne, geometry, first + i, hostOffset + i * clusterSize);
      expect(Buffer.compare(run, oneByOne), `${geometry.clusterBits} bits`).toBe(0);
      expect(entryAt(run, (first + count - 1) * stride)).toBe(BigInt(hostOffset + (count - 1) * clusterSize) | COPIED);
      expect(run[(first - 1) * stride], 'the entry before is untouched').toBe(0xa5);
      expect(run[(first + count) * stride], 'the entry after is untouched').toBe(0xa5);
    }
  });
});

describeWithQemu('metadata tools on tables spanning several windows', () => {
  let dir: string;
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-codec-')); });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** Runs `use` on a backend of the file at `path`, closed afterwards. */
  const onFile = async <T>(path: string, writable: boolean, use: (backend: Backend) => Promise<T>): Promise<T> => {
    const backend = await openNodeBackend(path, { writable });
    try {
      return await use(backend);
    } finally {
      await backend.close();
    }
  };

  const expectClean = (path: string, what: string) => {
    const report = qemuCheck(path);
    expect({ exitCode: report.exitCode, corruptions: report.corruptions ?? 0, leaks: report.leaks ?? 0 }, `${what}: qemu-img check`)
      .toEqual({ exitCode: 0, corruptions: 0, leaks: 0 });
  };

  for (const setting of [
    { name: '2 MiB clusters', clusterSize: 2 * MiB, extendedL2: false },
    { name: '256 KiB clusters, extended L2', clusterSize: 256 * KiB, extendedL2: true },
  ]) {
    it(`${setting.name}: snapshot with VM state, shrink through a compressed cluster, grow, refcount widths`, async () => {
      const cluster = setting.clusterSize;
      const size = 32 * cluster;
      const path = makeImage(dir, `tools-${cluster}.qcow2`, {
        size, clusterSize: cluster, extendedL2: setting.extendedL2,
        ops: [
          { op: 'write', offset: 0, length: 3 * cluster + 4096, pattern: 0x41 },
          { op: 'compressed', offset: 10 * cluster, length: cluster, pattern: 0x42 },
          { op: 'zero', offset: 4 * cluster, length: cluster },
          { op: 'write', offset: 20 * cluster, length: cluster, pattern: 0x43 },
        ],
      });
      const vmState = makePrng(3).fill(new Uint8Array(cluster + 12345));
      await onFile(path, true, (b) => createSnapshot(b, 'with-state', { vmState }));
      expectClean(path, 'snapshot');
      expectBytes(await onFile(path, false, (b) => readSnapshotVmState(b, 'with-state')), vmState, 'VM state');
      const before = convertToRaw(path);

      // The new end falls inside the compressed cluster: its head stays, the rest reads as zeros.
      const cut = 10 * cluster + 5000 + 512 - (5000 % 512);
      expect(await onFile(path, true, (b) => resizeQcow2(b, cut, { shrink: true }))).toBe(cut);
      expectClean(path, 'shrink');
      expectBytes(convertToRaw(path), before.subarray(0, cut), 'after shrink');
      await onFile(path, true, (b) => resizeQcow2(b, size));
      expectClean(path, 'grow');
      const grown = convertToRaw(path);
      expectBytes(grown.subarray(0, cut), before.subarray(0, cut), 'after grow');
      expectFilled(grown.subarray(cut), 0, 'grown part');

      // Clusters the snapshot shares count 2: the narrowest width that holds them is 2 bits.
      for (const refcountBits of [2, 64, 16]) {
        await onFile(path, true, (b) => amendQcow2(b, { refcountBits }));
        expectClean(path, `refcount_bits=${refcountBits}`);
        expectBytes(convertToRaw(path), grown, `refcount_bits=${refcountBits}`);
      }
      if (!setting.extendedL2) {
        await onFile(path, true, (b) => amendQcow2(b, { compat: '0.10' }));
        expectClean(path, 'compat=0.10');
        expectBytes(convertToRaw(path), grown, 'compat=0.10');
        expect(qemuImg(['snapshot', '-l', path]).stdout).toContain('with-state');
      }
    }, 120_000);
  }
});
