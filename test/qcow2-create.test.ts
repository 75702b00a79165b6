// SPDX-License-Identifier: MIT
// Creating qcow2 images against qemu-img, for a matrix of options: check is clean, info shows the
// options, our reader and QEMU's writes work, the file equals qemu-img create's where its allocator
// lays out the same clusters; bad options give typed errors and write nothing.

import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend } from '../bindings/backends/backend.js';
import type { CreateOptions } from '../bindings/dispatch/image.js';
import { createQcow2, Qcow2CreateError, type CreateErrorReason } from '../bindings/qcow2/qcow2-create.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { createImageFile } from '../bindings/node.js';
import {
  describeWithQemu, makeImage, qemuCheck, qemuImg, qemuInfo, qemuIo, convertToRaw,
} from './helpers/qemu.js';
import { expectBytes, expectFilled } from './helpers/bytes.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

/** One create case: our options, the same for `qemu-img create`, and what to expect. */
interface CreateCase {
  name: string;
  options: CreateOptions;
  /** qemu-img create arguments giving the same image (options, -b/-F); size is appended. */
  qemuArgs: string[];
  /** qemu-img's file is byte-identical to ours (false only where its allocator recurses). */
  identical: boolean;
}

const BASE_QCOW2 = 'base.qcow2';
const BASE_RAW = 'base.raw';
const BASE_SIZE = 4 * MiB;

const CASES: CreateCase[] = [
  { name: 'v3-default', options: { virtualSize: 4 * MiB }, qemuArgs: [], identical: true },
  { name: 'v2', options: { virtualSize: 4 * MiB, compat: '0.10' }, qemuArgs: ['-o', 'compat=0.10'], identical: true },
  { name: 'empty', options: { virtualSize: 0 }, qemuArgs: [], identical: true },
  { name: 'odd-size', options: { virtualSize: 4 * MiB + 512 }, qemuArgs: [], identical: true },
  // 512-byte clusters and 1 GiB: a 256 KiB L1 table, and refcount blocks after it.
  { name: 'c512', options: { virtualSize: 1 * GiB, clusterSize: 512 }, qemuArgs: ['-o', 'cluster_size=512'], identical: true },
  { name: 'c4k', options: { virtualSize: 64 * MiB, clusterSize: 4 * KiB }, qemuArgs: ['-o', 'cluster_size=4k'], identical: true },
  { name: 'c64k', options: { virtualSize: 64 * MiB, clusterSize: 64 * KiB }, qemuArgs: ['-o', 'cluster_size=64k'], identical: true },
  { name: 'c2m', options: { virtualSize: 64 * MiB, clusterSize: 2 * MiB }, qemuArgs: ['-o', 'cluster_size=2M'], identical: true },
  ...[1, 2, 4, 8, 16, 32, 64].map((bits): CreateCase => ({
    name: `refcount-${bits}`, options: { virtualSize: 64 * MiB, clusterSize: 512, refcountBits: bits },
    qemuArgs: ['-o', `cluster_size=512,refcount_bits=${bits}`], identical: true,
  })),
  { name: 'extended-l2', options: { virtualSize: 8 * MiB, extendedL2: true }, qemuArgs: ['-o', 'extended_l2=on'], identical: true },
  { name: 'extended-l2-16k', options: { virtualSize: 8 * MiB, extendedL2: true, clusterSize: 16 * KiB },
    qemuArgs: ['-o', 'extended_l2=on,cluster_size=16k'], identical: true },
  { name: 'lazy', options: { virtualSize: 4 * MiB, lazyRefcounts: true }, qemuArgs: ['-o', 'lazy_refcounts=on'], identical: true },
  { name: 'zstd', options: { virtualSize: 4 * MiB, compressionType: 'zstd' }, qemuArgs: ['-o', 'compression_type=zstd'], identical: true },
  { name: 'backing-qcow2', options: { virtualSize: BASE_SIZE, backingFile: BASE_QCOW2, backingFormat: 'qcow2' },
    qemuArgs: ['-b', BASE_QCOW2, '-F', 'qcow2'], identical: true },
  { name: 'backing-raw-v2', options: { virtualSize: 8 * MiB, compat: '0.10', backingFile: BASE_RAW, backingFormat: 'raw' },
    qemuArgs: ['-o', 'compat=0.10', '-b', BASE_RAW, '-F', 'raw'], identical: true },
  { name: 'backing-no-format', options: { virtualSize: BASE_SIZE, backingFile: BASE_QCOW2 }, qemuArgs: [], identical: false },
  { name: 'prealloc', options: { virtualSize: 4 * MiB, preallocation: 'metadata' }, qemuArgs: ['-o', 'preallocation=metadata'], identical: true },
  { name: 'prealloc-c512-rb2', options: { virtualSize: 2 * MiB, clusterSize: 512, refcountBits: 2, preallocation: 'metadata' },
    qemuArgs: ['-o', 'cluster_size=512,refcount_bits=2,preallocation=metadata'], identical: true },
  { name: 'prealloc-c4k-v2', options: { virtualSize: 9 * MiB, clusterSize: 4 * KiB, compat: '0.10', preallocation: 'metadata' },
    qemuArgs: ['-o', 'cluster_size=4k,compat=0.10,preallocation=metadata'], identical: true },
  { name: 'prealloc-xl2-backing', options: {
    virtualSize: BASE_SIZE, extendedL2: true, preallocation: 'metadata', backingFile: BASE_QCOW2, backingFormat: 'qcow2',
  }, qemuArgs: ['-o', 'extended_l2=on,preallocation=metadata', '-b', BASE_QCOW2, '-F', 'qcow2'], identical: true },
  { name: 'everything-v3', options: {
    virtualSize: 32 * MiB, clusterSize: 32 * KiB, extendedL2: true, lazyRefcounts: true, compressionType: 'zstd', refcountBits: 4,
  }, qemuArgs: ['-o', 'cluster_size=32k,extended_l2=on,lazy_refcounts=on,compression_type=zstd,refcount_bits=4'], identical: true },
  { name: '1tib', options: { virtualSize: 1 * TiB }, qemuArgs: [], identical: true },
  // A refcount table of several clusters (qemu-img moves its table; we plan it large at once).
  { name: 'big-reftable', options: { virtualSize: 16 * GiB, clusterSize: 512, refcountBits: 64 },
    qemuArgs: ['-o', 'cluster_size=512,refcount_bits=64'], identical: false },
];

/** What `qemu-img info` should say of a case (format-specific data and backing keys). */
function expectedInfo(o: CreateOptions): Record<string, unknown> {
  const v2 = o.compat === '0.10';
  const data: Record<string, unknown> = v2
    ? { compat: '0.10', 'compression-type': 'zlib', 'refcount-bits': 16 }
    : {
        compat: '1.1', 'compression-type': o.compressionType ?? 'zlib', 'lazy-refcounts': o.lazyRefcounts ?? false,
        'refcount-bits': o.refcountBits ?? 16, corrupt: false, 'extended-l2': o.extendedL2 ?? false,
      };
  const info: Record<string, unknown> = {
    'virtual-size': o.virtualSize, 'cluster-size': o.clusterSize ?? 65536, format: 'qcow2',
    'format-specific': { type: 'qcow2', data }, 'dirty-flag': false,
  };
  if (o.backingFile) info['backing-filename'] = o.backingFile;
  if (o.backingFormat) info['backing-filename-format'] = o.backingFormat;
  return info;
}

async function createFile(path: string, options: CreateOptions) {
  const backend = await openNodeBackend(path, { writable: true, create: true });
  try {
    return await createQcow2(backend, options);
  } finally {
    await backend.close();
  }
}

async function openOurs(dir: string, path: string): Promise<Qcow2Image> {
  const backend = await openNodeBackend(path);
  return Qcow2Image.open(backend, { readOnly: true, openBacking: (name) => openNodeBackend(join(dir, name)) });
}

/** Guest ranges to read back: all of a small image, samples of a large one. */
function readRanges(virtualSize: number): [number, number][] {
  if (virtualSize <= 8 * MiB) return virtualSize === 0 ? [] : [[0, virtualSize]];
  return [[0, 4 * MiB], [Math.floor(virtualSize / 2 / 512) * 512 - 3000, 1 * MiB], [virtualSize - 2 * MiB, 2 * MiB]];
}

describeWithQemu('qcow2 create against qemu-img', () => {
  let dir: string;
  let baseContent: Uint8Array;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-create-'));
    makeImage(dir, BASE_QCOW2, { size: BASE_SIZE, ops: [{ op: 'write', offset: 0, length: 1536 * KiB, pattern: 0x42 }] });
    makeImage(dir, BASE_RAW, { size: BASE_SIZE, format: 'raw', ops: [{ op: 'write', offset: 512 * KiB, length: 2 * MiB, pattern: 0x61 }] });
    baseContent = convertToRaw(join(dir, BASE_QCOW2));
    expect(convertToRaw(join(dir, BASE_RAW), 'raw')).not.toEqual(baseContent);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** What the guest should read at [offset, offset + length) of a fresh image of this case. */
  function expectedContent(c: CreateCase, offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    if (!c.options.backingFile) return out;
    const base = c.options.backingFile === BASE_RAW ? convertToRaw(join(dir, BASE_RAW), 'raw') : baseContent;
    if (offset < base.length) out.set(base.subarray(offset, Math.min(base.length, offset + length)));
    return out;
  }

  it.each(CASES)('$name: qemu-img check is clean and info shows the options', async (c) => {
    const path = join(dir, `${c.name}.qcow2`);
    const result = await createFile(path, c.options);
    expect(statSync(path).size).toBe(result.fileBytes);

    const check = qemuCheck(path);
    expect(check.exitCode, JSON.stringify(check)).toBe(0);
    expect(check['check-errors']).toBe(0);
    expect(check.corruptions ?? 0).toBe(0);
    expect(check.leaks ?? 0).toBe(0);
    expect(check['image-end-offset']).toBe(result.clusterCount * result.clusterSize);

    const info = qemuInfo(path);
    const expected = expectedInfo(c.options);
    expect(info).toMatchObject(expected);
    expect(info['format-specific']).toEqual(expected['format-specific']);
    if (!c.options.backingFormat) expect(info['backing-filename-format']).toBeUndefined();
    if (!c.options.backingFile) expect(info['backing-filename']).toBeUndefined();
  });

  it.each(CASES.filter((c) => c.qemuArgs.length > 0 || c.identical))(
    '$name: same layout as qemu-img create', async (c) => {
      const ours = join(dir, `${c.name}.qcow2`);
      await createFile(ours, c.options);
      const theirs = join(dir, `${c.name}.qemu.qcow2`);
      const created = qemuImg(['create', '-q', '-f', 'qcow2', ...c.qemuArgs, theirs, String(c.options.virtualSize)], dir);
      expect(created.code, created.stderr).toBe(0);
      if (c.identical) {
        expectBytes(readFileSync(ours), readFileSync(theirs), `${c.name}: our file vs qemu-img create's`);
      } else {
        // Clusters in other places (qemu-img's allocator recurses), but no more of them.
        expect(statSync(ours).size).toBeLessThanOrEqual(statSync(theirs).size);
      }
    });

  it.each(CASES)('$name: our reader reads zeros or the backing file', async (c) => {
    const path = join(dir, `${c.name}.read.qcow2`);
    await createFile(path, c.options);
    const image = await openOurs(dir, path);
    try {
      expect(image.virtualSize).toBe(c.options.virtualSize);
      expect(image.header.version).toBe(c.options.compat === '0.10' ? 2 : 3);
      expect(image.header.clusterSize).toBe(c.options.clusterSize ?? 65536);
      expect(2 ** image.header.refcountOrder).toBe(c.options.refcountBits ?? 16);
      expect(image.header.backingFile).toBe(c.options.backingFile);
      expect(image.header.backingFormat).toBe(c.options.backingFormat);
      for (const [offset, length] of readRanges(c.options.virtualSize)) {
        expectBytes(await image.read(offset, length), expectedContent(c, offset, length), `${c.name} at ${offset}`);
      }
    } finally {
      await image.close();
    }
  });

  it.each(CASES.filter((c) => c.options.virtualSize >= 2 * MiB))('$name: QEMU writes into it and we read that back', async (c) => {
    const path = join(dir, `${c.name}.write.qcow2`);
    await createFile(path, c.options);
    const written = qemuIo(['-f', 'qcow2', '-c', 'write -q -P 0x5a 1M 64k', path], dir);
    expect(written.code, written.stderr).toBe(0);
    const check = qemuCheck(path);
    expect(check.exitCode, JSON.stringify(check)).toBe(0);
    const image = await openOurs(dir, path);
    try {
      expectFilled(await image.read(1 * MiB, 64 * KiB), 0x5a, `${c.name}: QEMU's write`);
      const around = 256 * KiB;
      expectBytes(await image.read(1 * MiB - around, around), expectedContent(c, 1 * MiB - around, around), `${c.name}: before the write`);
      expectBytes(await image.read(1 * MiB + 64 * KiB, around), expectedContent(c, 1 * MiB + 64 * KiB, around), `${c.name}: after the write`);
    } finally {
      await image.close();
    }
  });

  it('createImageFile overwrites an existing file and opens the new image with its backing file', async () => {
    const path = join(dir, 'by-path.qcow2');
    await createFile(path, { virtualSize: 64 * MiB, preallocation: 'metadata' });
    const image = await createImageFile(path, { virtualSize: BASE_SIZE, backingFile: BASE_QCOW2, backingFormat: 'qcow2' });
    try {
      expect(image).toBeInstanceOf(Qcow2Image);
      expectBytes(await image.read(0, BASE_SIZE), baseContent, 'overlay made by createImageFile');
    } finally {
      await image.close();
    }
    expect(statSync(path).size).toBeLessThanOrEqual(4 * 65536); // the overlay's metadata only: the old 64 MiB are gone
    expect(qemuCheck(path).exitCode).toBe(0);
  });
});

/** A backend that refuses to truncate, around a memory backend. */
function withoutTruncate(inner: Backend): Backend {
  return {
    kind: 'no-truncate', limits: inner.limits, capabilities: { ...inner.capabilities, truncate: false },
    getSize: () => inner.getSize(), preadv: (p, b) => inner.preadv(p, b), pwritev: (p, b) => inner.pwritev(p, b),
    flush: () => inner.flush(), close: () => inner.close(),
  };
}

describe('qcow2 create options', () => {
  const refusals: [string, CreateOptions, CreateErrorReason | 'OPTION_TYPE', RegExp][] = [
    ['cluster size not a power of two', { virtualSize: MiB, clusterSize: 1000 }, 'CLUSTER_SIZE_INVALID', /power of two between 512 and 2048k/],
    ['cluster size below 512', { virtualSize: MiB, clusterSize: 256 }, 'CLUSTER_SIZE_INVALID', /power of two/],
    ['cluster size above 2 MiB', { virtualSize: MiB, clusterSize: 4 * MiB }, 'CLUSTER_SIZE_INVALID', /power of two/],
    ['refcount width 3', { virtualSize: MiB, refcountBits: 3 }, 'REFCOUNT_BITS_INVALID', /Refcount width must be a power of two/],
    ['refcount width 128', { virtualSize: MiB, refcountBits: 128 }, 'REFCOUNT_BITS_INVALID', /may not exceed 64 bits/],
    ['refcount width 0', { virtualSize: MiB, refcountBits: 0 }, 'REFCOUNT_BITS_INVALID', /power of two/],
    ['compat 0.10 with refcount width 8', { virtualSize: MiB, compat: '0.10', refcountBits: 8 }, 'V2_REFCOUNT_BITS', /compatibility level 1.1/],
    ['compat 0.10 with extended L2', { virtualSize: MiB, compat: '0.10', extendedL2: true }, 'V2_EXTENDED_L2', /compatibility level 1.1/],
    ['compat 0.10 with lazy refcounts', { virtualSize: MiB, compat: '0.10', lazyRefcounts: true }, 'V2_LAZY_REFCOUNTS', /Lazy refcounts/],
    ['compat 0.10 with zstd', { virtualSize: MiB, compat: '0.10', compressionType: 'zstd' }, 'V2_COMPRESSION_TYPE', /Non-zlib/],
    ['extended L2 with 8 KiB clusters', { virtualSize: MiB, clusterSize: 8 * KiB, extendedL2: true }, 'EXTENDED_L2_CLUSTER_TOO_SMALL', /at least 16384 bytes/],
    ['backing format without file', { virtualSize: MiB, backingFormat: 'raw' }, 'BACKING_FORMAT_WITHOUT_FILE', /without backing file/],
    ['backing file with preallocation', { virtualSize: MiB, backingFile: 'b', preallocation: 'metadata' }, 'BACKING_WITH_PREALLOCATION', /extended_l2/],
    ['virtual size not a multiple of 512', { virtualSize: 1000 }, 'VIRTUAL_SIZE_UNALIGNED', /multiple of 512 .*round it up to 1024/],
    ['negative virtual size', { virtualSize: -512 }, 'VIRTUAL_SIZE_INVALID', /Invalid virtual size/],
    ['fractional virtual size', { virtualSize: 1.5 }, 'VIRTUAL_SIZE_INVALID', /Invalid virtual size/],
    ['virtual size above 2^53', { virtualSize: 2 ** 60 }, 'VIRTUAL_SIZE_INVALID', /2\^53/],
    ['L1 table above 32 MiB', { virtualSize: TiB, clusterSize: 512 }, 'L1_TOO_LARGE', /too large for file format 'qcow2'/],
    ['backing file name of 1024 bytes', { virtualSize: MiB, backingFile: 'x'.repeat(1024) }, 'BACKING_NAME_TOO_LONG', /too long/],
    ['header and name beyond a 512-byte cluster', { virtualSize: MiB, clusterSize: 512, backingFile: 'y'.repeat(400), backingFormat: 'qcow2' },
      'HEADER_EXCEEDS_CLUSTER', /more than one cluster/],
    ['compat 1.2', { virtualSize: MiB, compat: '1.2' as never }, 'OPTION_TYPE', /compat must be '0.10' or '1.1'/],
    ['compression type lz4', { virtualSize: MiB, compressionType: 'lz4' as never }, 'OPTION_TYPE', /compressionType/],
    ['preallocation full', { virtualSize: MiB, preallocation: 'full' as never }, 'OPTION_TYPE', /preallocation must be 'off' or 'metadata'/],
    ['extendedL2 as a string', { virtualSize: MiB, extendedL2: 'on' as never }, 'OPTION_TYPE', /extendedL2 must be a boolean/],
    ['backing format vmdk', { virtualSize: MiB, backingFile: 'b', backingFormat: 'vmdk' as never }, 'OPTION_TYPE', /backingFormat/],
    ['virtual size as a string', { virtualSize: '1M' as never }, 'OPTION_TYPE', /virtualSize must be a number/],
  ];

  it.each(refusals)('refuses %s with a typed error and writes nothing', async (_what, options, reason, message) => {
    const backend = createMemoryBackend();
    const error = await createQcow2(backend, options).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Qcow2CreateError);
    expect(error).toMatchObject({ code: 'INVALID_ARGUMENT', reason });
    expect((error as Error).message).toMatch(message);
    expect(await backend.getSize()).toBe(0);
  });

  it('refuses a read-only backend, and a non-empty one it cannot truncate', async () => {
    await expect(createQcow2(createMemoryBackend(new Uint8Array(10), { writable: false }), { virtualSize: MiB }))
      .rejects.toMatchObject({ code: 'BACKEND_READ_ONLY' });
    const full = withoutTruncate(createMemoryBackend(new Uint8Array(4096).fill(7)));
    await expect(createQcow2(full, { virtualSize: MiB })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const buffer = new Uint8Array(16);
    await full.preadv(0, [buffer]);
    expectFilled(buffer, 7, 'the refused backend');
    // Empty, it works without truncate: preallocated data clusters at the end are written as zeros.
    const empty = withoutTruncate(createMemoryBackend());
    const made = await createQcow2(empty, { virtualSize: 4 * MiB, preallocation: 'metadata' });
    expect(await empty.getSize()).toBe(made.fileBytes);
  });

  it('Qcow2Image.create makes an image in memory that reads as zeros with the options in its header', async () => {
    const backend = createMemoryBackend(new Uint8Array(100_000).fill(0xee)); // replaced, not reused
    const image = await Qcow2Image.create(backend, {
      virtualSize: 3 * MiB, clusterSize: 16 * KiB, extendedL2: true, lazyRefcounts: true, compressionType: 'zstd', refcountBits: 2,
    });
    try {
      expect(image.header).toMatchObject({
        version: 3, clusterSize: 16 * KiB, virtualSize: 3 * MiB, refcountOrder: 1, compressionType: 'zstd',
        flags: { extendedL2: true, lazyRefcounts: true, dirty: false, corrupt: false },
      });
      expect(image.header.featureNames.map((f) => f.name)).toContain('extended L2 entries');
      expectFilled(await image.read(0, 3 * MiB), 0, 'fresh image');
    } finally {
      await image.close();
    }
  });

  it('writes no feature name table with clusters of 4 KiB and less (as qemu-img), one above', async () => {
    for (const [clusterSize, names] of [[4096, 0], [8192, 8]] as const) {
      const image = await Qcow2Image.create(createMemoryBackend(), { virtualSize: MiB, clusterSize });
      expect(image.header.featureNames.length, `clusterSize ${clusterSize}`).toBe(names);
      await image.close();
    }
  });
});
