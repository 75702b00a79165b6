// SPDX-License-Identifier: MIT
// qcow2 header parsing (assembly/header.ts via bindings/qcow2/qcow2-header.ts): every zoo image parses
// and agrees with `qemu-img info`; hand-built bad headers each fail the right check, with QEMU's
// message where QEMU has one (checked against qemu-io itself); hostile input stays bounded.

import { mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, readSync, closeSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { instantiateCore, type CoreInstance } from '../bindings/core/wasm.js';
import { parseQcow2Header, qcow2HeaderBytesNeeded, Qcow2HeaderError, type Qcow2Header, type HeaderErrorReason } from '../bindings/qcow2/qcow2-header.js';
import type { ErrorCode } from '../bindings/base/errors.js';
import { describeWithQemu, zoo, qemuInfo, qemuIo, type ZooImage } from './helpers/qemu.js';
import { makePrng } from './helpers/prng.js';

let core: CoreInstance;
beforeAll(async () => { core = await instantiateCore(); });

// ---------------------------------------------------------------------------------------------
// A small header builder: a valid 64 KiB version 3 image start (4 MiB virtual, 64 KiB clusters,
// refcount table at 0x10000, L1 at 0x30000), with optional extensions and backing file name.
// ---------------------------------------------------------------------------------------------

interface Extension {
  type: number;
  data?: Uint8Array | string;
  /** Overrides the stored length (the data written stays `data`). */
  length?: number;
}

interface HeaderSpec {
  version?: number;
  clusterBits?: number;
  size?: bigint;
  cryptMethod?: number;
  l1Size?: number;
  l1TableOffset?: bigint;
  refcountTableOffset?: bigint;
  refcountTableClusters?: number;
  snapshotCount?: number;
  snapshotsOffset?: bigint;
  incompatible?: bigint;
  compatible?: bigint;
  autoclear?: bigint;
  refcountOrder?: number;
  headerLength?: number;
  compressionType?: number;
  extensions?: Extension[];
  /** Stored right after the extensions unless backingFileOffset says where. */
  backingFile?: string;
  backingFileOffset?: bigint;
  backingFileSize?: number;
  /** Bytes of the built header (default 64 KiB). */
  bytes?: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const enc = new TextEncoder();
const EXT = { BACKING_FORMAT: 0xe2792aca, FEATURE_TABLE: 0x6803f857, BITMAPS: 0x23852875, CRYPTO: 0x0537be77, DATA_FILE: 0x44415441 };

function buildHeader(spec: HeaderSpec = {}): Uint8Array {
  const bytes = new Uint8Array(spec.bytes ?? 64 * KiB);
  const view = new DataView(bytes.buffer);
  const version = spec.version ?? 3;
  const headerLength = spec.headerLength ?? (version === 2 ? 72 : 112);
  view.setUint32(0, 0x514649fb);
  view.setUint32(4, version);
  view.setUint32(20, spec.clusterBits ?? 16);
  view.setBigUint64(24, spec.size ?? BigInt(4 * MiB));
  view.setUint32(32, spec.cryptMethod ?? 0);
  view.setUint32(36, spec.l1Size ?? 1);
  view.setBigUint64(40, spec.l1TableOffset ?? 0x30000n);
  view.setBigUint64(48, spec.refcountTableOffset ?? 0x10000n);
  view.setUint32(56, spec.refcountTableClusters ?? 1);
  view.setUint32(60, spec.snapshotCount ?? 0);
  view.setBigUint64(64, spec.snapshotsOffset ?? 0n);
  if (version !== 2) {
    view.setBigUint64(72, spec.incompatible ?? 0n);
    view.setBigUint64(80, spec.compatible ?? 0n);
    view.setBigUint64(88, spec.autoclear ?? 0n);
    view.setUint32(96, spec.refcountOrder ?? 4);
    view.setUint32(100, headerLength);
    if (spec.compressionType !== undefined) bytes[104] = spec.compressionType;
  }
  let at = Math.min(headerLength, bytes.length);
  for (const ext of spec.extensions ?? []) {
    const data = typeof ext.data === 'string' ? enc.encode(ext.data) : ext.data ?? new Uint8Array(0);
    view.setUint32(at, ext.type);
    view.setUint32(at + 4, ext.length ?? data.length);
    bytes.set(data.subarray(0, Math.max(0, bytes.length - at - 8)), at + 8);
    at += 8 + Math.ceil(data.length / 8) * 8;
  }
  at += 8; // end-of-extensions marker (zeros)
  if (spec.backingFile !== undefined) {
    const name = enc.encode(spec.backingFile);
    const offset = spec.backingFileOffset ?? BigInt(at);
    view.setBigUint64(8, offset);
    view.setUint32(16, spec.backingFileSize ?? name.length);
    if (offset + BigInt(name.length) <= BigInt(bytes.length)) bytes.set(name, Number(offset));
  } else if (spec.backingFileOffset !== undefined) {
    view.setBigUint64(8, spec.backingFileOffset);
    view.setUint32(16, spec.backingFileSize ?? 0);
  }
  return bytes;
}

/** A feature name table extension from [type, bit, name] entries. */
function featureTable(entries: [number, number, string][]): Extension {
  const data = new Uint8Array(entries.length * 48);
  entries.forEach(([type, bit, name], i) => {
    data[i * 48] = type;
    data[i * 48 + 1] = bit;
    data.set(enc.encode(name).subarray(0, 46), i * 48 + 2);
  });
  return { type: EXT.FEATURE_TABLE, data };
}

/** A bitmaps extension payload. */
function bitmapsExt(count: number, reserved: number, directoryBytes: bigint, directoryOffset: bigint): Extension {
  const data = new Uint8Array(24);
  const view = new DataView(data.buffer);
  view.setUint32(0, count);
  view.setUint32(4, reserved);
  view.setBigUint64(8, directoryBytes);
  view.setBigUint64(16, directoryOffset);
  return { type: EXT.BITMAPS, data };
}

const parse = (bytes: Uint8Array, fileSize = bytes.length): Qcow2Header => parseQcow2Header(core, bytes, fileSize);

function parseError(bytes: Uint8Array, fileSize = bytes.length): Qcow2HeaderError {
  try {
    parse(bytes, fileSize);
  } catch (error) {
    if (error instanceof Qcow2HeaderError) return error;
    throw error;
  }
  throw new Error('the header parsed');
}

// ---------------------------------------------------------------------------------------------

describe('a valid header', () => {
  it('parses the builder\'s default header', () => {
    const h = parse(buildHeader());
    expect(h).toMatchObject({
      version: 3, clusterBits: 16, clusterSize: 65536, virtualSize: 4 * MiB, l1Size: 1,
      l1TableOffset: 0x30000, refcountTableOffset: 0x10000, refcountTableClusters: 1, refcountOrder: 4,
      snapshotCount: 0, snapshotsOffset: 0, incompatibleFeatures: 0n, compatibleFeatures: 0n,
      autoclearFeatures: 0n, compressionType: 'zlib', headerLength: 112, featureNames: [], unknownExtensions: [],
      flags: { dirty: false, corrupt: false, lazyRefcounts: false, extendedL2: false, externalDataFile: false, dataFileRaw: false },
    });
    expect(h.backingFile).toBeUndefined();
    expect(h.backingFormat).toBeUndefined();
    expect(h.dataFile).toBeUndefined();
  });

  it('reads names, the feature table, flags and keeps unknown extensions', () => {
    const h = parse(buildHeader({
      incompatible: 0b11111n, compatible: 1n | (1n << 40n), autoclear: 2n | (1n << 63n), compressionType: 1,
      extensions: [
        { type: EXT.BACKING_FORMAT, data: 'qcow2' },
        featureTable([[0, 0, 'dirty bit'], [1, 0, 'lazy refcounts'], [2, 1, 'raw external data'], [7, 1, 'bad type'], [0, 9, '']]),
        { type: 0x12345678, data: new Uint8Array([1, 2, 3]) },
        { type: EXT.DATA_FILE, data: 'disk.data' },
        { type: 0xfedcba98, data: '' },
      ],
      backingFile: 'base image.qcow2',
    }));
    expect(h.incompatibleFeatures).toBe(0b11111n);
    expect(h.compatibleFeatures).toBe(1n | (1n << 40n));
    expect(h.autoclearFeatures).toBe(2n | (1n << 63n));
    expect(h.compressionType).toBe('zstd');
    expect(h.flags).toEqual({ dirty: true, corrupt: true, lazyRefcounts: true, extendedL2: true, externalDataFile: true, dataFileRaw: true });
    expect(h.backingFile).toBe('base image.qcow2');
    expect(h.backingFormat).toBe('qcow2');
    expect(h.dataFile).toBe('disk.data');
    expect(h.featureNames).toEqual([
      { type: 'incompatible', bit: 0, name: 'dirty bit' },
      { type: 'compatible', bit: 0, name: 'lazy refcounts' },
      { type: 'autoclear', bit: 1, name: 'raw external data' },
    ]);
    expect(h.unknownExtensions).toEqual([
      { type: 0x12345678, data: new Uint8Array([1, 2, 3]) },
      { type: 0xfedcba98, data: new Uint8Array(0) },
    ]);
  });

  it('version 2: 72-byte header, 16-bit refcounts, no feature bits; bytes 72.. are extensions', () => {
    const bytes = buildHeader({ version: 2, extensions: [{ type: EXT.BACKING_FORMAT, data: 'raw' }], backingFile: 'b.raw' });
    const h = parse(bytes);
    expect(h).toMatchObject({ version: 2, headerLength: 72, refcountOrder: 4, incompatibleFeatures: 0n, backingFile: 'b.raw', backingFormat: 'raw' });
  });

  it('a data file name without the external data file bit is ignored, as QEMU does', () => {
    expect(parse(buildHeader({ extensions: [{ type: EXT.DATA_FILE, data: 'x.data' }] })).dataFile).toBeUndefined();
  });

  it('names end at their first NUL; an empty backing name means none', () => {
    expect(parse(buildHeader({ backingFile: 'a\0b' })).backingFile).toBe('a');
    expect(parse(buildHeader({ backingFile: '' })).backingFile).toBeUndefined();
  });

  it('accepts unknown compatible and autoclear bits, the dirty and corrupt bits, and a zero-length header tail', () => {
    const h = parse(buildHeader({ compatible: 1n << 33n, autoclear: 1n << 5n, incompatible: 3n, headerLength: 104 }));
    expect(h.flags.dirty && h.flags.corrupt).toBe(true);
  });

  it('keeps the bitmaps extension for writing back, checked only when its autoclear bit is set', () => {
    const stale = bitmapsExt(0, 7, 0n, 1n); // nonsense, but autoclear bit 0 is clear: ignored
    expect(parse(buildHeader({ extensions: [stale] })).unknownExtensions.map((e) => e.type)).toEqual([EXT.BITMAPS]);
    const good = bitmapsExt(2, 0, 4096n, 0x40000n);
    expect(parse(buildHeader({ autoclear: 1n, extensions: [good] })).unknownExtensions).toHaveLength(1);
  });

  it('needs only the first min(fileSize, 64 KiB) bytes; clusters above 64 KiB parse when the header fits', () => {
    expect(qcow2HeaderBytesNeeded(core, 10 * MiB)).toBe(64 * KiB);
    expect(qcow2HeaderBytesNeeded(core, 1000)).toBe(1000);
    const h = parse(buildHeader({ clusterBits: 21, l1TableOffset: 0x400000n, refcountTableOffset: 0x200000n, backingFile: 'x' }), 8 * MiB);
    expect(h.clusterSize).toBe(2 * MiB);
    expect(h.backingFile).toBe('x');
  });

  it('rejects arguments outside the contract', () => {
    expect(() => parse(buildHeader(), -1)).toThrow(/not a byte count/);
    expect(() => parse(buildHeader(), 1.5)).toThrow(/not a byte count/);
    expect(() => parse(buildHeader().subarray(0, 100), 64 * KiB)).toThrow(/needs the file's first 65536 bytes/);
  });
});

// ---------------------------------------------------------------------------------------------
// Bad headers. `qemu: true` cases are also given to qemu-io, whose error must contain our message.
// ---------------------------------------------------------------------------------------------

interface BadCase {
  name: string;
  bytes: () => Uint8Array;
  fileSize?: number;
  code: ErrorCode;
  reason: HeaderErrorReason;
  message: string | RegExp;
  qemu?: boolean;
}

const CORRUPT: ErrorCode = 'QCOW2_CORRUPT';
const UNSUPPORTED: ErrorCode = 'QCOW2_UNSUPPORTED_FEATURE';
const set32 = (bytes: Uint8Array, offset: number, value: number) => { new DataView(bytes.buffer).setUint32(offset, value); return bytes; };
const with32 = (offset: number, value: number, spec: HeaderSpec = {}) => () => set32(buildHeader(spec), offset, value);
const many = (n: number): Extension[] => Array.from({ length: n }, (_, i) => ({ type: 0x10000000 + i }));

const BAD_CASES: BadCase[] = [
  { name: 'bad magic', bytes: with32(0, 0x514649fa), code: 'IMAGE_FORMAT_UNKNOWN', reason: 'BAD_MAGIC', message: 'Image is not in qcow2 format', qemu: true },
  { name: 'a 3-byte file', bytes: () => buildHeader().subarray(0, 3), code: 'IMAGE_FORMAT_UNKNOWN', reason: 'BAD_MAGIC', message: 'Image is not in qcow2 format' },
  { name: 'version 1', bytes: () => buildHeader({ version: 1 }), code: UNSUPPORTED, reason: 'UNSUPPORTED_VERSION', message: 'Unsupported qcow2 version 1', qemu: true },
  { name: 'version 4', bytes: () => buildHeader({ version: 4 }), code: UNSUPPORTED, reason: 'UNSUPPORTED_VERSION', message: 'Unsupported qcow2 version 4', qemu: true },
  { name: 'version 0', bytes: () => buildHeader({ version: 0 }), code: UNSUPPORTED, reason: 'UNSUPPORTED_VERSION', message: 'Unsupported qcow2 version 0', qemu: true },
  { name: 'cluster_bits 8', bytes: () => buildHeader({ clusterBits: 8 }), code: CORRUPT, reason: 'CLUSTER_BITS_INVALID', message: 'Unsupported cluster size: 2^8', qemu: true },
  { name: 'cluster_bits 22', bytes: () => buildHeader({ clusterBits: 22 }), code: UNSUPPORTED, reason: 'CLUSTER_BITS_UNSUPPORTED', message: 'Unsupported cluster size: 2^22', qemu: true },
  { name: 'cluster_bits 63', bytes: () => buildHeader({ clusterBits: 63 }), code: CORRUPT, reason: 'CLUSTER_BITS_INVALID', message: 'Unsupported cluster size: 2^63', qemu: true },
  { name: 'extended L2 with cluster_bits 13', bytes: () => buildHeader({ clusterBits: 13, incompatible: 16n }),
    code: CORRUPT, reason: 'SUBCLUSTER_TOO_SMALL', message: 'Unsupported subcluster size: 256', qemu: true },
  { name: 'header_length 96 (< 104)', bytes: () => buildHeader({ headerLength: 96 }), code: CORRUPT, reason: 'HEADER_TOO_SHORT', message: 'qcow2 header too short', qemu: true },
  { name: 'header_length 108 (not a multiple of 8)', bytes: () => buildHeader({ headerLength: 108 }),
    code: CORRUPT, reason: 'HEADER_LENGTH_UNALIGNED', message: 'qcow2 header length 108 is not a multiple of 8' },
  { name: 'header_length larger than the cluster', bytes: () => buildHeader({ headerLength: 65544 }),
    code: CORRUPT, reason: 'HEADER_EXCEEDS_CLUSTER', message: 'qcow2 header exceeds cluster size', qemu: true },
  { name: 'header_length 2^32 - 8', bytes: () => buildHeader({ headerLength: 0xfffffff8 }),
    code: CORRUPT, reason: 'HEADER_EXCEEDS_CLUSTER', message: 'qcow2 header exceeds cluster size', qemu: true },
  { name: 'unknown incompatible bit named in the feature table', bytes: () => buildHeader({
    incompatible: (1n << 5n) | (1n << 9n) | (1n << 40n),
    extensions: [featureTable([[0, 0, 'dirty bit'], [1, 5, 'compatible five'], [0, 5, 'shiny new thing'], [0, 40, 'x'.repeat(50)]])],
  }), code: UNSUPPORTED, reason: 'UNKNOWN_INCOMPATIBLE',
  message: `Unsupported qcow2 feature(s): shiny new thing, ${'x'.repeat(46)}, Unknown incompatible feature: 200`, qemu: true },
  { name: 'unknown incompatible bit without a name', bytes: () => buildHeader({ incompatible: 1n << 63n }),
    code: UNSUPPORTED, reason: 'UNKNOWN_INCOMPATIBLE', message: 'Unsupported qcow2 feature(s): Unknown incompatible feature: 8000000000000000', qemu: true },
  { name: 'AES encryption', bytes: () => buildHeader({ cryptMethod: 1 }), code: UNSUPPORTED, reason: 'ENCRYPTED', message: /not supported \(encryption method aes\)/ },
  { name: 'LUKS encryption', bytes: () => buildHeader({ cryptMethod: 2, extensions: [{ type: EXT.CRYPTO, data: new Uint8Array(16) }] }),
    code: UNSUPPORTED, reason: 'ENCRYPTED', message: /not supported \(encryption method luks\)/ },
  { name: 'crypt_method 3', bytes: () => buildHeader({ cryptMethod: 3 }), code: CORRUPT, reason: 'ENCRYPTION_METHOD_INVALID', message: 'Unsupported encryption method 3', qemu: true },
  { name: 'encryption header extension without LUKS', bytes: () => buildHeader({ extensions: [{ type: EXT.CRYPTO, data: new Uint8Array(16) }] }),
    code: CORRUPT, reason: 'CRYPTO_EXT_WITHOUT_LUKS', message: 'CRYPTO header extension only expected with LUKS encryption method', qemu: true },
  { name: 'refcount_order 7', bytes: () => buildHeader({ refcountOrder: 7 }), code: CORRUPT, reason: 'REFCOUNT_ORDER_TOO_LARGE',
    message: 'Reference count entry width too large; may not exceed 64 bits', qemu: true },
  { name: 'refcount_order 0xffffffff', bytes: () => buildHeader({ refcountOrder: 0xffffffff }), code: CORRUPT, reason: 'REFCOUNT_ORDER_TOO_LARGE',
    message: 'Reference count entry width too large; may not exceed 64 bits', qemu: true },
  { name: 'L1 too small for the virtual size', bytes: () => buildHeader({ l1Size: 0 }), code: CORRUPT, reason: 'L1_TOO_SMALL', message: 'L1 table is too small', qemu: true },
  { name: 'L1 too small (one entry short at 2 MiB clusters)', bytes: () => buildHeader({ clusterBits: 21, size: (1n << 39n) + 1n, l1Size: 1, l1TableOffset: 0x400000n, refcountTableOffset: 0x200000n }),
    code: CORRUPT, reason: 'L1_TOO_SMALL', message: 'L1 table is too small', qemu: true },
  { name: 'L1 larger than 32 MiB', bytes: () => buildHeader({ l1Size: 4 * MiB + 1 }), code: CORRUPT, reason: 'L1_TOO_LARGE', message: 'Active L1 table too large', qemu: true },
  { name: 'virtual size whose L1 index exceeds INT_MAX', bytes: () => buildHeader({ size: 1n << 62n }), code: CORRUPT, reason: 'IMAGE_TOO_BIG', message: 'Image is too big', qemu: true },
  { name: 'misaligned L1 offset', bytes: () => buildHeader({ l1TableOffset: 0x30200n }), code: CORRUPT, reason: 'L1_OFFSET_INVALID', message: 'Active L1 table offset invalid', qemu: true },
  { name: 'L1 offset near 2^64', bytes: () => buildHeader({ l1TableOffset: 0xffffffffffff0000n }), code: CORRUPT, reason: 'L1_OFFSET_INVALID', message: 'Active L1 table offset invalid', qemu: true },
  { name: 'misaligned refcount table offset', bytes: () => buildHeader({ refcountTableOffset: 0x10008n }),
    code: CORRUPT, reason: 'REFCOUNT_TABLE_OFFSET_INVALID', message: 'Reference count table offset invalid', qemu: true },
  { name: 'refcount table offset near 2^64', bytes: () => buildHeader({ refcountTableOffset: 0xffffffffffff0000n }),
    code: CORRUPT, reason: 'REFCOUNT_TABLE_OFFSET_INVALID', message: 'Reference count table offset invalid', qemu: true },
  { name: 'no refcount table', bytes: () => buildHeader({ refcountTableClusters: 0 }), code: CORRUPT, reason: 'NO_REFCOUNT_TABLE',
    message: 'Image does not contain a reference count table', qemu: true },
  { name: 'refcount table larger than 8 MiB', bytes: () => buildHeader({ refcountTableClusters: 129 }), code: CORRUPT, reason: 'REFCOUNT_TABLE_TOO_LARGE',
    message: 'Reference count table too large', qemu: true },
  { name: 'misaligned snapshot table offset (even with no snapshots)', bytes: () => buildHeader({ snapshotsOffset: 0x50001n }),
    code: CORRUPT, reason: 'SNAPSHOT_TABLE_OFFSET_INVALID', message: 'Snapshot table offset invalid', qemu: true },
  { name: 'snapshot table offset near 2^64', bytes: () => buildHeader({ snapshotCount: 1, snapshotsOffset: 0xffffffffffff0000n }),
    code: CORRUPT, reason: 'SNAPSHOT_TABLE_OFFSET_INVALID', message: 'Snapshot table offset invalid', qemu: true },
  { name: 'too many snapshots', bytes: () => buildHeader({ snapshotCount: 65537, snapshotsOffset: 0x50000n }),
    code: CORRUPT, reason: 'SNAPSHOT_TABLE_TOO_LARGE', message: 'Snapshot table too large', qemu: true },
  { name: 'backing file name of 1024 bytes', bytes: () => buildHeader({ backingFile: 'b'.repeat(1024) }),
    code: CORRUPT, reason: 'BACKING_NAME_TOO_LONG', message: 'Backing file name too long', qemu: true },
  { name: 'backing file name leaving cluster 0', bytes: () => buildHeader({ backingFile: 'abcdefgh', backingFileOffset: 65532n }),
    code: CORRUPT, reason: 'BACKING_NAME_TOO_LONG', message: 'Backing file name too long', qemu: true },
  { name: 'backing file offset beyond cluster 0', bytes: () => buildHeader({ backingFileOffset: 65537n, backingFileSize: 4 }),
    code: CORRUPT, reason: 'BACKING_OFFSET_INVALID', message: 'Invalid backing file offset', qemu: true },
  { name: 'backing file offset near 2^64', bytes: () => buildHeader({ backingFileOffset: 0xfffffffffffffff0n, backingFileSize: 32 }),
    code: CORRUPT, reason: 'BACKING_OFFSET_INVALID', message: 'Invalid backing file offset', qemu: true },
  { name: 'duplicate backing format extension', bytes: () => buildHeader({ extensions: [{ type: EXT.BACKING_FORMAT, data: 'raw' }, { type: EXT.BACKING_FORMAT, data: 'qcow2' }] }),
    code: CORRUPT, reason: 'EXTENSION_DUPLICATE', message: 'Header extension 0xe2792aca appears more than once' },
  { name: 'duplicate unknown extension', bytes: () => buildHeader({ extensions: [{ type: 0x1234, data: 'a' }, { type: 0x99 }, { type: 0x1234, data: 'a' }] }),
    code: CORRUPT, reason: 'EXTENSION_DUPLICATE', message: 'Header extension 0x00001234 appears more than once' },
  { name: 'extension larger than the area', bytes: () => buildHeader({ extensions: [{ type: 0x1234, length: 65536 }] }),
    code: CORRUPT, reason: 'EXTENSION_TOO_LARGE', message: 'Header extension too large', qemu: true },
  { name: 'extension of length 0xffffffff', bytes: () => buildHeader({ extensions: [{ type: EXT.FEATURE_TABLE, length: 0xffffffff }] }),
    code: CORRUPT, reason: 'EXTENSION_TOO_LARGE', message: 'Header extension too large', qemu: true },
  { name: 'extension running into the backing file name', bytes: () => buildHeader({ extensions: [{ type: 0x1234, data: 'abcdefgh', length: 200 }], backingFile: 'base', backingFileOffset: 200n }),
    code: CORRUPT, reason: 'EXTENSION_TOO_LARGE', message: 'Header extension too large', qemu: true },
  { name: 'end marker claiming data past the area', bytes: () => buildHeader({ extensions: [{ type: 0, length: 65536 }] }),
    code: CORRUPT, reason: 'EXTENSION_TOO_LARGE', message: 'Header extension too large', qemu: true },
  { name: 'backing format name of 16 bytes', bytes: () => buildHeader({ extensions: [{ type: EXT.BACKING_FORMAT, data: 'q'.repeat(16) }] }),
    code: CORRUPT, reason: 'BACKING_FORMAT_TOO_LONG', message: 'ERROR: ext_backing_format: len=16 too large (>=16)', qemu: true },
  { name: 'bitmaps extension of the wrong length', bytes: () => buildHeader({ extensions: [{ type: EXT.BITMAPS, data: new Uint8Array(16) }] }),
    code: CORRUPT, reason: 'BITMAPS_EXT_LENGTH', message: 'bitmaps_ext: Invalid extension length', qemu: true },
  { name: 'bitmaps extension with reserved bits', bytes: () => buildHeader({ autoclear: 1n, extensions: [bitmapsExt(1, 1, 16n, 0x40000n)] }),
    code: CORRUPT, reason: 'BITMAPS_EXT_RESERVED', message: 'bitmaps_ext: Reserved field is not zero', qemu: true },
  { name: 'bitmaps extension with 65536 bitmaps', bytes: () => buildHeader({ autoclear: 1n, extensions: [bitmapsExt(65536, 0, 16n, 0x40000n)] }),
    code: CORRUPT, reason: 'BITMAPS_TOO_MANY', message: 'bitmaps_ext: Image has 65536 bitmaps, exceeding the QEMU supported maximum of 65535', qemu: true },
  { name: 'bitmaps extension with no bitmaps', bytes: () => buildHeader({ autoclear: 1n, extensions: [bitmapsExt(0, 0, 16n, 0x40000n)] }),
    code: CORRUPT, reason: 'BITMAPS_NONE', message: 'found bitmaps extension with zero bitmaps', qemu: true },
  { name: 'misaligned bitmap directory', bytes: () => buildHeader({ autoclear: 1n, extensions: [bitmapsExt(1, 0, 16n, 0x40001n)] }),
    code: CORRUPT, reason: 'BITMAPS_DIRECTORY_OFFSET', message: 'bitmaps_ext: invalid bitmap directory offset', qemu: true },
  { name: 'bitmap directory above 64 MiB', bytes: () => buildHeader({ autoclear: 1n, extensions: [bitmapsExt(1, 0, 67107841n, 0x40000n)] }),
    code: CORRUPT, reason: 'BITMAPS_DIRECTORY_TOO_LARGE', message: 'bitmaps_ext: bitmap directory size (67107841) exceeds the maximum supported size (67107840)', qemu: true },
  { name: 'empty bitmap directory', bytes: () => buildHeader({ autoclear: 1n, extensions: [bitmapsExt(1, 0, 0n, 0x40000n)] }),
    code: CORRUPT, reason: 'BITMAPS_DIRECTORY_EMPTY', message: 'Requested bitmap directory size is zero', qemu: true },
  { name: 'compression type zstd without incompatible bit 3', bytes: () => buildHeader({ compressionType: 1 }),
    code: CORRUPT, reason: 'COMPRESSION_BIT_MISSING', message: 'qcow2: Compression type incompatible feature bit must be set', qemu: true },
  { name: 'incompatible bit 3 with compression type zlib', bytes: () => buildHeader({ incompatible: 8n }),
    code: CORRUPT, reason: 'COMPRESSION_BIT_UNEXPECTED', message: 'qcow2: Compression type incompatible feature bit must not be set', qemu: true },
  { name: 'compression type zstd in a 104-byte header (absent: bit 3 is then unexpected)', bytes: () => buildHeader({ compressionType: 1, incompatible: 8n, headerLength: 104 }),
    code: CORRUPT, reason: 'COMPRESSION_BIT_UNEXPECTED', message: 'qcow2: Compression type incompatible feature bit must not be set', qemu: true },
  { name: 'compression type 2', bytes: () => buildHeader({ compressionType: 2, incompatible: 8n }),
    code: UNSUPPORTED, reason: 'COMPRESSION_TYPE_UNKNOWN', message: 'qcow2: unknown compression type: 2', qemu: true },
  { name: 'data-file-raw without an external data file', bytes: () => buildHeader({ autoclear: 2n }),
    code: CORRUPT, reason: 'DATA_FILE_RAW_WITHOUT_DATA_FILE', message: 'data-file-raw requires a data file', qemu: true },
  { name: 'truncated: a v3 header cut at 100 bytes', bytes: () => buildHeader().subarray(0, 100),
    code: CORRUPT, reason: 'TRUNCATED', message: 'qcow2 header truncated: the file has 100 bytes, the header needs 104' },
  { name: 'truncated: fewer bytes than header_length', bytes: () => buildHeader({ headerLength: 120 }).subarray(0, 112),
    code: CORRUPT, reason: 'TRUNCATED', message: 'qcow2 header truncated: the file has 112 bytes, the header needs 120' },
  { name: 'truncated: a v2 header cut at 50 bytes', bytes: () => buildHeader({ version: 2 }).subarray(0, 50),
    code: CORRUPT, reason: 'TRUNCATED', message: /the file has 50 bytes, the header needs 72$/ },
  { name: 'truncated: the file ends inside an extension', bytes: () => buildHeader({ extensions: [{ type: 0x1234, data: 'x'.repeat(100) }] }).subarray(0, 150),
    code: CORRUPT, reason: 'TRUNCATED', message: /the file has 150 bytes, the header needs 220$/ },
  { name: 'truncated: the file ends inside the backing file name', bytes: () => buildHeader({ backingFile: 'base.qcow2' }).subarray(0, 125),
    code: CORRUPT, reason: 'TRUNCATED', message: /the file has 125 bytes, the header needs 130$/ },
  { name: 'extensions continuing past 64 KiB of a 2 MiB cluster', fileSize: 8 * MiB,
    bytes: () => buildHeader({ clusterBits: 21, l1TableOffset: 0x400000n, refcountTableOffset: 0x200000n, extensions: [{ type: 0x1234, length: 70000 }] }),
    code: UNSUPPORTED, reason: 'EXTENSIONS_PAST_REGION', message: /header extensions continue past the 65536 bytes/ },
  { name: 'header_length past 64 KiB of a 2 MiB cluster', fileSize: 8 * MiB,
    bytes: () => buildHeader({ clusterBits: 21, l1TableOffset: 0x400000n, refcountTableOffset: 0x200000n, headerLength: 70000 }),
    code: UNSUPPORTED, reason: 'HEADER_PAST_REGION', message: /header length 70000 exceeds the 65536 bytes/ },
  { name: 'backing file name past 64 KiB of a 2 MiB cluster', fileSize: 8 * MiB,
    bytes: () => buildHeader({ clusterBits: 21, l1TableOffset: 0x400000n, refcountTableOffset: 0x200000n, backingFileOffset: 70000n, backingFileSize: 10 }),
    code: UNSUPPORTED, reason: 'BACKING_NAME_PAST_REGION', message: /ends at byte 70010, past the 65536 bytes/ },
  { name: 'virtual size beyond 2^53', bytes: () => buildHeader({ clusterBits: 21, size: 1n << 54n, l1Size: 1 << 15, l1TableOffset: 0x400000n, refcountTableOffset: 0x200000n }),
    fileSize: 64 * KiB, code: UNSUPPORTED, reason: 'VIRTUAL_SIZE_UNSUPPORTED', message: /Virtual size 18014398509481984 exceeds 2\^53/ },
  { name: 'L1 table beyond 2^53', bytes: () => buildHeader({ l1TableOffset: 1n << 53n }),
    code: UNSUPPORTED, reason: 'TABLE_BEYOND_2_53', message: /host offset 9007199254740992 reaches past 2\^53/ },
  { name: 'more unknown extensions than the parser keeps', bytes: () => buildHeader({ extensions: many(257) }),
    code: UNSUPPORTED, reason: 'TOO_MANY_EXTENSIONS', message: 'More than 256 unknown qcow2 header extensions' },
];

// Headers with two faults, and the one QEMU reports (each confirmed with qemu-io below).
const ORDER_CASES: [HeaderSpec, HeaderErrorReason][] = [
  [{ backingFileOffset: 65537n, compressionType: 1 }, 'BACKING_OFFSET_INVALID'],
  [{ incompatible: 1n << 5n, compressionType: 1 }, 'COMPRESSION_BIT_MISSING'],
  [{ incompatible: 1n << 5n, refcountOrder: 7 }, 'UNKNOWN_INCOMPATIBLE'],
  [{ refcountOrder: 7, cryptMethod: 3 }, 'REFCOUNT_ORDER_TOO_LARGE'],
  [{ clusterBits: 13, incompatible: 16n, refcountOrder: 7 }, 'SUBCLUSTER_TOO_SMALL'],
  [{ clusterBits: 13, incompatible: 16n | 32n }, 'UNKNOWN_INCOMPATIBLE'],
  [{ refcountTableClusters: 0, refcountOrder: 7 }, 'REFCOUNT_ORDER_TOO_LARGE'],
  [{ cryptMethod: 3, refcountTableClusters: 0 }, 'NO_REFCOUNT_TABLE'],
  [{ cryptMethod: 3, l1Size: 0 }, 'L1_TOO_SMALL'],
  [{ cryptMethod: 3, extensions: [{ type: 0x1234, length: 65536 }] }, 'ENCRYPTION_METHOD_INVALID'],
  [{ cryptMethod: 1, l1Size: 0 }, 'L1_TOO_SMALL'],
  [{ cryptMethod: 1, extensions: [{ type: 0x1234, length: 65536 }] }, 'EXTENSION_TOO_LARGE'],
  [{ cryptMethod: 1, autoclear: 2n }, 'DATA_FILE_RAW_WITHOUT_DATA_FILE'],
  [{ cryptMethod: 1, backingFile: 'b'.repeat(1024) }, 'ENCRYPTED'],
  [{ size: 1n << 62n, refcountTableClusters: 0 }, 'NO_REFCOUNT_TABLE'],
  [{ refcountTableOffset: 1n, snapshotsOffset: 1n }, 'REFCOUNT_TABLE_OFFSET_INVALID'],
  [{ snapshotsOffset: 1n, l1Size: 0 }, 'SNAPSHOT_TABLE_OFFSET_INVALID'],
  [{ l1TableOffset: 1n, size: 1n << 62n }, 'L1_OFFSET_INVALID'],
  [{ l1Size: 0, extensions: [{ type: 0x1234, length: 65536 }] }, 'L1_TOO_SMALL'],
  [{ autoclear: 2n, extensions: [{ type: 0x1234, length: 65536 }] }, 'EXTENSION_TOO_LARGE'],
  [{ autoclear: 2n, backingFile: 'b'.repeat(1024) }, 'DATA_FILE_RAW_WITHOUT_DATA_FILE'],
];

const describeSpec = (spec: HeaderSpec) => Object.entries(spec)
  .map(([key, value]) => `${key}=${typeof value === 'string' && value.length > 12 ? `${value.slice(0, 4)}...(${value.length})` : Array.isArray(value) ? `[${value.length}]` : String(value)}`)
  .join(' ');

describe('bad headers', () => {
  for (const c of BAD_CASES) {
    it(`${c.name}: ${c.code} ${c.reason}`, () => {
      const bytes = c.bytes();
      const error = parseError(bytes, c.fileSize ?? bytes.length);
      expect({ code: error.code, reason: error.reason }).toEqual({ code: c.code, reason: c.reason });
      if (typeof c.message === 'string') expect(error.message).toBe(c.message);
      else expect(error.message).toMatch(c.message);
    });
  }

  for (const [spec, expected] of ORDER_CASES) {
    it(`several faults, QEMU's first is reported: ${describeSpec(spec)} -> ${expected}`, () => {
      expect(parseError(buildHeader(spec)).reason).toBe(expected);
    });
  }

  it('names the unknown features found before a fault later in the extension walk', () => {
    const error = parseError(buildHeader({
      incompatible: 1n << 6n,
      extensions: [featureTable([[0, 6, 'six']]), { type: 0x1234, length: 65536 }],
    }));
    expect(error.message).toBe('Unsupported qcow2 feature(s): six');
  });
});

// The oracle: qemu-io must refuse each `qemu: true` header with the message we give.
describeWithQemu('bad headers against qemu-io', () => {
  let dir: string;
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-header-')); });
  afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

  it('the builder\'s default header opens in QEMU', () => {
    const path = join(dir, 'good.qcow2');
    writeFileSync(path, buildHeader());
    const result = qemuIo(['-f', 'qcow2', '-r', '-c', 'read -q 0 512', path]);
    expect(result.stderr.trim()).toBe('');
    expect(result.code).toBe(0);
  });

  for (const c of BAD_CASES.filter((c) => c.qemu)) {
    it(c.name, () => {
      const path = join(dir, 'bad.qcow2');
      writeFileSync(path, c.bytes());
      const result = qemuIo(['-f', 'qcow2', '-r', '-c', 'read -q 0 512', path]);
      expect(result.code).not.toBe(0);
      const ours = parseError(readFileSync(path)).message;
      expect(result.stderr).toContain(`: ${ours}`);
    });
  }

  for (const [spec, expected] of ORDER_CASES) {
    // QEMU fails an encrypted image by asking for its key; that message is not ours to mirror.
    if (expected === 'ENCRYPTED') continue;
    it(`several faults: ${describeSpec(spec)}`, () => {
      const path = join(dir, 'bad2.qcow2');
      writeFileSync(path, buildHeader(spec));
      const result = qemuIo(['-f', 'qcow2', '-r', '-c', 'read -q 0 512', path]);
      expect(result.stderr).toContain(`: ${parseError(readFileSync(path)).message}`);
    });
  }
});

// ---------------------------------------------------------------------------------------------

describeWithQemu('zoo images against qemu-img info', () => {
  let dir: string;
  let images: ZooImage[] = [];
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-header-zoo-'));
    images = zoo(dir).filter((image) => image.format === 'qcow2');
  }, 60_000);
  afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

  const readStart = (path: string): [Uint8Array, number] => {
    const fileSize = statSync(path).size;
    const bytes = new Uint8Array(qcow2HeaderBytesNeeded(core, fileSize));
    const fd = openSync(path, 'r');
    try { readSync(fd, bytes, 0, bytes.length, 0); } finally { closeSync(fd); }
    return [bytes, fileSize];
  };

  it('every qcow2 image\'s header parses and agrees with qemu-img info', () => {
    expect(images.length).toBeGreaterThanOrEqual(15);
    for (const image of images) {
      const header = parseQcow2Header(core, ...readStart(image.path));
      const info = qemuInfo(image.path);
      const data = info['format-specific']!.data;
      const ours = {
        name: image.name,
        virtualSize: header.virtualSize,
        clusterSize: header.clusterSize,
        compat: header.version === 2 ? '0.10' : '1.1',
        refcountBits: 2 ** header.refcountOrder,
        lazyRefcounts: header.flags.lazyRefcounts,
        extendedL2: header.flags.extendedL2,
        corrupt: header.flags.corrupt,
        dirty: header.flags.dirty,
        compressionType: header.compressionType,
        backingFile: header.backingFile,
        backingFormat: header.backingFormat,
        dataFile: header.dataFile,
        dataFileRaw: header.flags.dataFileRaw,
        snapshotCount: header.snapshotCount,
      };
      const theirs = {
        name: image.name,
        virtualSize: info['virtual-size'],
        clusterSize: info['cluster-size'],
        compat: data.compat,
        refcountBits: data['refcount-bits'],
        lazyRefcounts: data['lazy-refcounts'] ?? false,
        extendedL2: data['extended-l2'] ?? false,
        corrupt: data.corrupt ?? false,
        dirty: info['dirty-flag'] ?? false,
        compressionType: data['compression-type'],
        backingFile: info['backing-filename'],
        backingFormat: info['backing-filename-format'],
        dataFile: data['data-file'],
        dataFileRaw: data['data-file-raw'] ?? false,
        snapshotCount: info.snapshots?.length ?? 0,
      };
      expect(ours).toEqual(theirs);
      // QEMU writes only the extensions above, and (in some version 3 images) a feature name table.
      expect(header.unknownExtensions, image.name).toEqual([]);
      if (header.featureNames.length > 0) {
        expect(header.featureNames, image.name).toContainEqual({ type: 'incompatible', bit: 0, name: 'dirty bit' });
      }
      if (image.name === 'v3.qcow2') expect(header.featureNames.length).toBeGreaterThanOrEqual(5);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('hostile input', () => {
  it('random mutations of a header either parse or fail with a typed error', () => {
    const prng = makePrng(0x5eed);
    const seedHeader = buildHeader({
      extensions: [{ type: EXT.BACKING_FORMAT, data: 'qcow2' }, featureTable([[0, 0, 'dirty bit']]), { type: 0x42, data: 'abc' }],
      backingFile: 'base.qcow2',
    });
    const codes = new Set<string>();
    for (let round = 0; round < 3000; round++) {
      const bytes = seedHeader.slice();
      const flips = 1 + prng.int(8);
      for (let i = 0; i < flips; i++) {
        // Mostly the fields and the extension area; sometimes whole words of 0xff.
        const at = prng.int(prng.int(4) === 0 ? bytes.length : 320);
        if (prng.int(3) === 0) bytes.fill(0xff, at, at + 4);
        else bytes[at] = prng.next() & 0xff;
      }
      // The file ends inside the region (truncation) or goes on past it.
      const fileSize = prng.int(2) === 0 ? prng.int(bytes.length + 1) : bytes.length + prng.int(1 << 30);
      try {
        parse(bytes, fileSize);
        codes.add('OK');
      } catch (error) {
        if (error instanceof Qcow2HeaderError) codes.add(error.reason);
        else throw new Error(`round ${round} (seed 0x5eed): ${String(error)}`);
      }
    }
    expect(codes.size).toBeGreaterThan(10);
  });

  it('keeps up to 256 unknown extensions from a region packed with them', () => {
    // 255 distinct empty extensions, then one filling most of the rest of the 64 KiB.
    const h = parse(buildHeader({ extensions: [...many(255), { type: 0x7777, data: new Uint8Array(60000) }] }), 10 * MiB);
    expect(h.unknownExtensions).toHaveLength(256);
    expect(h.unknownExtensions[255]).toMatchObject({ type: 0x7777 });
    expect(h.unknownExtensions[255].data.length).toBe(60000);
  });

  it('a 2 MiB cluster whose first 64 KiB are all extensions without an end marker', () => {
    // 8-byte empty extensions of 300 cycling types: the 257th distinct one stops the walk...
    const bytes = buildHeader({ clusterBits: 21, l1TableOffset: 0x400000n, refcountTableOffset: 0x200000n });
    const view = new DataView(bytes.buffer);
    for (let at = 112; at < bytes.length; at += 8) view.setUint32(at, 0x20000000 + ((at - 112) / 8) % 300);
    expect(parseError(bytes, 8 * MiB).reason).toBe('TOO_MANY_EXTENSIONS');
    // ...and with known types that may repeat only once, it stops at the first repeat.
    for (let at = 112; at < bytes.length; at += 8) view.setUint32(at, EXT.DATA_FILE);
    expect(parseError(bytes, 8 * MiB).reason).toBe('EXTENSION_DUPLICATE');
  });
});
