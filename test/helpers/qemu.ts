// SPDX-License-Identifier: MIT
// QEMU as the test oracle: runs qemu-img and qemu-io, builds images with known content, and builds
// the deterministic image zoo (every qemu-img create option this library reads). Tests that need
// QEMU ask requireQemu(): without it they skip loudly, and where CI is set they fail instead.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { describe, it } from 'vitest';
import type { MapEntry } from '../../bindings/tools/qcow2-map.js';

/** What a QEMU tool printed and how it exited. */
export interface CommandResult {
  stdout: string;
  stderr: string;
  /** Exit code (-1 when the tool could not be started or was killed). */
  code: number;
}

const TOOL_TIMEOUT_MS = 60_000;

function runTool(tool: string, args: readonly string[], cwd?: string): CommandResult {
  const result = spawnSync(tool, args, { cwd, encoding: 'utf8', timeout: TOOL_TIMEOUT_MS, maxBuffer: 64 << 20 });
  return { stdout: result.stdout ?? '', stderr: result.stderr ?? (result.error ? String(result.error) : ''), code: result.status ?? -1 };
}

/** Runs `qemu-img args...` (in `cwd`, if given). Never throws on a non-zero exit: check `code`. */
export function qemuImg(args: readonly string[], cwd?: string): CommandResult {
  return runTool('qemu-img', args, cwd);
}

/** Runs `qemu-io args...` (in `cwd`, if given). Never throws on a non-zero exit: check `code`. */
export function qemuIo(args: readonly string[], cwd?: string): CommandResult {
  return runTool('qemu-io', args, cwd);
}

// QEMU 7.2 resolves a relative external data file name against the working directory (unlike a
// backing file name, which it resolves next to the image), so tools run in the image's directory.
const besideImage = (path: string) => dirname(resolve(path));

/** Runs a tool and throws, with its stderr, unless it exits with one of `okCodes`. */
function mustRun(result: CommandResult, what: string, okCodes: readonly number[] = [0]): CommandResult {
  if (!okCodes.includes(result.code)) {
    throw new Error(`${what} exited with ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`);
  }
  return result;
}

let available: boolean | undefined;

/** True when qemu-img and qemu-io (Debian: qemu-utils) both run. Cached. */
export function hasQemuImg(): boolean {
  if (available === undefined) {
    available = qemuImg(['--version']).code === 0 && qemuIo(['--version']).code === 0;
  }
  return available;
}

function isCi(): boolean {
  const ci = process.env.CI;
  return ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false';
}

const MISSING = 'qemu-img/qemu-io not found on PATH (install qemu-utils)';
const ciFailure = (suite: string) => `${suite}: ${MISSING}. CI must run the QEMU oracle tests, so this fails instead of skipping.`;
const warnSkip = (suite: string) =>
  console.warn(`\n*** SKIPPING ${suite}: ${MISSING}. These are QEMU oracle tests; install qemu-utils to run them. ***\n`);

/**
 * Whether the QEMU oracle tests of `suite` may run. With qemu-img present: true. Without it:
 * where the CI environment variable is set, throws (CI must never silently skip the oracle);
 * elsewhere warns on the console and returns false, and the caller skips.
 */
export function requireQemu(suite: string): boolean {
  if (hasQemuImg()) return true;
  if (isCi()) throw new Error(ciFailure(suite));
  warnSkip(suite);
  return false;
}

/**
 * `describe` for QEMU oracle tests. Without QEMU it skips them with a console warning, or, where
 * CI is set, replaces them with one failing test (the file's other tests still run).
 */
export function describeWithQemu(name: string, body: () => void): void {
  if (hasQemuImg()) {
    describe(name, body);
  } else if (isCi()) {
    describe(name, () => {
      it('has qemu-img and qemu-io (required where CI is set)', () => { throw new Error(ciFailure(name)); });
    });
  } else {
    warnSkip(name);
    describe.skip(name, body);
  }
}

// ---------------------------------------------------------------------------------------------
// Building images.
// ---------------------------------------------------------------------------------------------

/** One qemu-io operation on an image (applied in order). */
export type ImageOp =
  /** `write -P pattern`: every byte of the range becomes `pattern`. */
  | { op: 'write'; offset: number; length: number; pattern: number }
  /** `write -c -P pattern`: a compressed write (whole, aligned clusters only). */
  | { op: 'compressed'; offset: number; length: number; pattern: number }
  /** `write -z` (with -u: may unmap): the range reads as zeros. */
  | { op: 'zero'; offset: number; length: number; unmap?: boolean }
  /** `discard`: reads as zeros afterwards on images without a backing file (and on v3 overlays). */
  | { op: 'discard'; offset: number; length: number };

/** How makeImage creates an image; names are relative to the image's directory. */
export interface MakeImageOptions {
  /** Virtual size in bytes. */
  size: number;
  format?: 'qcow2' | 'raw';
  compat?: '0.10' | '1.1';
  clusterSize?: number;
  refcountBits?: number;
  extendedL2?: boolean;
  lazyRefcounts?: boolean;
  compressionType?: 'zlib' | 'zstd';
  preallocation?: 'off' | 'metadata' | 'falloc' | 'full';
  backingFile?: string;
  backingFormat?: 'qcow2' | 'raw';
  dataFile?: string;
  dataFileRaw?: boolean;
  /** qemu-io operations run on the new image, in order. */
  ops?: readonly ImageOp[];
}

/** The `-o` list of qemu-img create/convert for these options (backing file excluded). */
export function createOptions(o: Omit<MakeImageOptions, 'size'>): string[] {
  const list: string[] = [];
  if (o.compat) list.push(`compat=${o.compat}`);
  if (o.clusterSize !== undefined) list.push(`cluster_size=${o.clusterSize}`);
  if (o.refcountBits !== undefined) list.push(`refcount_bits=${o.refcountBits}`);
  if (o.extendedL2) list.push('extended_l2=on');
  if (o.lazyRefcounts) list.push('lazy_refcounts=on');
  if (o.compressionType) list.push(`compression_type=${o.compressionType}`);
  if (o.preallocation) list.push(`preallocation=${o.preallocation}`);
  if (o.dataFile) list.push(`data_file=${o.dataFile}`);
  if (o.dataFileRaw) list.push('data_file_raw=on');
  return list.length > 0 ? ['-o', list.join(',')] : [];
}

const hexByte = (n: number) => `0x${n.toString(16).padStart(2, '0')}`;

/** The qemu-io `-c` command for one operation. */
export function qemuIoCommand(op: ImageOp): string {
  switch (op.op) {
    case 'write': return `write -q -P ${hexByte(op.pattern)} ${op.offset} ${op.length}`;
    case 'compressed': return `write -q -c -P ${hexByte(op.pattern)} ${op.offset} ${op.length}`;
    case 'zero': return `write -q -z${op.unmap ? ' -u' : ''} ${op.offset} ${op.length}`;
    case 'discard': return `discard -q ${op.offset} ${op.length}`;
  }
}

/** Runs `ops` on an existing image with one qemu-io process (run in the image's directory). */
export function runImageOps(path: string, format: 'qcow2' | 'raw', ops: readonly ImageOp[]): void {
  if (ops.length === 0) return;
  const args = ['-f', format];
  for (const op of ops) args.push('-c', qemuIoCommand(op));
  mustRun(qemuIo([...args, resolve(path)], besideImage(path)), `qemu-io on ${path}`);
}

/**
 * Creates `dir/name` with `qemu-img create` and runs `o.ops` on it with qemu-io. Commands run in
 * `dir`, so relative backing and data file names are stored as given. Returns the image's path.
 */
export function makeImage(dir: string, name: string, o: MakeImageOptions): string {
  const format = o.format ?? 'qcow2';
  const args = ['create', '-q', '-f', format, ...createOptions(o)];
  if (o.backingFile) args.push('-b', o.backingFile, '-F', o.backingFormat ?? 'qcow2');
  args.push(name, String(o.size));
  mustRun(qemuImg(args, dir), `qemu-img create ${name}`);
  const path = join(dir, name);
  runImageOps(path, format, o.ops ?? []);
  return path;
}

/** The guest-visible content of an image (its whole backing chain), via `qemu-img convert -O raw`. */
export function convertToRaw(image: string, format?: 'qcow2' | 'raw'): Uint8Array {
  const scratch = mkdtempSync(join(tmpdir(), 'qcow2-raw-'));
  try {
    const out = join(scratch, 'out.raw');
    mustRun(qemuImg(['convert', ...(format ? ['-f', format] : []), '-O', 'raw', resolve(image), out], besideImage(image)), `qemu-img convert ${image}`);
    return new Uint8Array(readFileSync(out));
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** `qemu-img check --output=json` (keys as QEMU prints them) plus the exit code. */
export interface QemuCheckReport {
  /** 0 clean, 2 corruptions, 3 leaked clusters (only), 1 the check could not run. */
  exitCode: number;
  'check-errors': number;
  corruptions?: number;
  leaks?: number;
  'corruptions-fixed'?: number;
  'leaks-fixed'?: number;
  'image-end-offset'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'fragmented-clusters'?: number;
  'compressed-clusters'?: number;
  filename: string;
  format: string;
}

/** Runs `qemu-img check --output=json` on a qcow2 image. Throws when the check cannot run at all. */
export function qemuCheck(path: string): QemuCheckReport {
  const result = mustRun(qemuImg(['check', '-f', 'qcow2', '--output=json', resolve(path)], besideImage(path)), `qemu-img check ${path}`, [0, 2, 3]);
  return { ...(JSON.parse(result.stdout) as Omit<QemuCheckReport, 'exitCode'>), exitCode: result.code };
}

/** One entry of `qemu-img map --output=json` (the shape bindings/tools/qcow2-map.ts produces too). */
export type QemuMapEntry = MapEntry;

/** `qemu-img map --output=json`, parsed. */
export function qemuMap(path: string, format?: 'qcow2' | 'raw'): QemuMapEntry[] {
  const args = ['map', ...(format ? ['-f', format] : []), '--output=json', resolve(path)];
  return JSON.parse(mustRun(qemuImg(args, besideImage(path)), `qemu-img map ${path}`).stdout) as QemuMapEntry[];
}

/** `qemu-img info --output=json` (the fields tests compare; QEMU prints more). */
export interface QemuInfo {
  'virtual-size': number;
  filename: string;
  format: string;
  'cluster-size'?: number;
  'actual-size'?: number;
  'dirty-flag'?: boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  snapshots?: { id: string; name: string }[];
  'format-specific'?: {
    type: string;
    data: {
      compat?: '0.10' | '1.1';
      'compression-type'?: 'zlib' | 'zstd';
      'lazy-refcounts'?: boolean;
      'refcount-bits'?: number;
      corrupt?: boolean;
      'extended-l2'?: boolean;
      'data-file'?: string;
      'data-file-raw'?: boolean;
    };
  };
}

/** `qemu-img info --output=json`, parsed (the image alone, not its backing chain). */
export function qemuInfo(path: string, format?: 'qcow2' | 'raw'): QemuInfo {
  const args = ['info', ...(format ? ['-f', format] : []), '--output=json', resolve(path)];
  return JSON.parse(mustRun(qemuImg(args, besideImage(path)), `qemu-img info ${path}`).stdout) as QemuInfo;
}

// ---------------------------------------------------------------------------------------------
// The image zoo.
// ---------------------------------------------------------------------------------------------

/** One image of the zoo and how it was made. */
export interface ZooImage {
  name: string;
  path: string;
  format: 'qcow2' | 'raw';
  /** Virtual size in bytes. */
  size: number;
  /** What the image adds on top of `base` (or of zeros), in order. */
  ops: readonly ImageOp[];
  /** The zoo image whose content this one starts from: its backing file, or its convert source. */
  base?: string;
  /** Two builds give byte-identical files (false only where QEMU stores a wall-clock date). */
  deterministic: boolean;
  /** What the image exercises, for test names. */
  about: string;
}

const KiB = 1024;
const MiB = 1024 * 1024;

// The zoo's images, with small writes added to the images it leaves empty (so every image has
// content to read back) and a three-layer chain qcow2 -> qcow2 -> raw.
const V3_OPS: readonly ImageOp[] = [
  { op: 'write', offset: 0, length: 64 * KiB, pattern: 0xab },
  { op: 'write', offset: 512, length: 4 * KiB, pattern: 0xcd },
  { op: 'write', offset: 200 * KiB, length: 8 * KiB, pattern: 0xef },
  { op: 'zero', offset: 1 * MiB, length: 64 * KiB },
  { op: 'write', offset: 2 * MiB, length: 128 * KiB, pattern: 0x11 },
  { op: 'discard', offset: 2 * MiB, length: 64 * KiB },
];

/**
 * Builds the deterministic image zoo in `dir` (about 1 s): every kind of image the engine must
 * read like QEMU does. Images are 1-8 MiB virtual; commands run in `dir`, so backing and data
 * file names are stored relative. Returns the images in build order (bases before overlays).
 */
export function zoo(dir: string): ZooImage[] {
  const images: ZooImage[] = [];
  const add = (name: string, about: string, o: MakeImageOptions & { deterministic?: boolean; base?: string }) => {
    const path = makeImage(dir, name, o);
    images.push({
      name, path, format: o.format ?? 'qcow2', size: o.size, ops: o.ops ?? [], about,
      deterministic: o.deterministic ?? true, ...(o.base ? { base: o.base } : {}),
    });
  };
  const convert = (name: string, about: string, source: string, o: Omit<MakeImageOptions, 'size'>) => {
    mustRun(qemuImg(['convert', '-c', '-O', 'qcow2', ...createOptions(o), source, name], dir), `qemu-img convert -c ${name}`);
    const sourceImage = images.find((image) => image.name === source)!;
    images.push({ name, path: join(dir, name), format: 'qcow2', size: sourceImage.size, ops: [], base: source, deterministic: true, about });
  };

  add('v3.qcow2', 'version 3: data, zero clusters, discard', { size: 4 * MiB, clusterSize: 64 * KiB, ops: V3_OPS });
  add('v2.qcow2', 'version 2 (compat 0.10): no zero flag', { size: 4 * MiB, compat: '0.10', clusterSize: 64 * KiB, ops: V3_OPS });
  add('comp_io.qcow2', 'compressed clusters written by qemu-io', {
    size: 4 * MiB, clusterSize: 64 * KiB, ops: [
      { op: 'compressed', offset: 0, length: 64 * KiB, pattern: 0x5a },
      { op: 'compressed', offset: 64 * KiB, length: 64 * KiB, pattern: 0x00 },
      { op: 'write', offset: 128 * KiB, length: 64 * KiB, pattern: 0x77 },
    ],
  });
  add('src.raw', 'raw image: convert source and raw backing file', {
    size: 4 * MiB, format: 'raw', ops: [
      { op: 'write', offset: 0, length: 1 * MiB, pattern: 0x61 },
      { op: 'write', offset: 1 * MiB, length: 512 * KiB, pattern: 0x62 },
      { op: 'write', offset: 3 * MiB, length: 64 * KiB, pattern: 0x00 },
    ],
  });
  convert('comp_conv.qcow2', 'compressed with zlib by convert -c', 'src.raw', { clusterSize: 64 * KiB });
  convert('comp_zstd.qcow2', 'compressed with zstd by convert -c', 'src.raw', { clusterSize: 64 * KiB, compressionType: 'zstd' });
  add('base.qcow2', 'backing file of overlay.qcow2', {
    size: 4 * MiB, clusterSize: 64 * KiB, ops: [{ op: 'write', offset: 0, length: 1 * MiB, pattern: 0x42 }],
  });
  add('overlay.qcow2', 'overlay on a qcow2 backing file', {
    size: 4 * MiB, clusterSize: 64 * KiB, backingFile: 'base.qcow2', backingFormat: 'qcow2', base: 'base.qcow2', ops: [
      { op: 'write', offset: 4096, length: 4 * KiB, pattern: 0x43 },
      { op: 'zero', offset: 128 * KiB, length: 64 * KiB },
      { op: 'write', offset: 2 * MiB, length: 64 * KiB, pattern: 0x44 },
    ],
  });
  add('overlay_rawbase.qcow2', 'overlay on a raw backing file', {
    size: 4 * MiB, clusterSize: 64 * KiB, backingFile: 'src.raw', backingFormat: 'raw', base: 'src.raw',
  });
  add('chain_top.qcow2', 'top of a chain qcow2 -> qcow2 -> raw', {
    size: 4 * MiB, clusterSize: 64 * KiB, backingFile: 'overlay_rawbase.qcow2', backingFormat: 'qcow2',
    base: 'overlay_rawbase.qcow2', ops: [
      { op: 'write', offset: 1 * MiB - 2 * KiB, length: 4 * KiB, pattern: 0x46 },
      { op: 'zero', offset: 3 * MiB, length: 128 * KiB },
    ],
  });
  add('xl2.qcow2', 'extended L2 entries (32 subclusters of 2 KiB)', {
    size: 4 * MiB, clusterSize: 64 * KiB, extendedL2: true, ops: [
      { op: 'write', offset: 512, length: 4 * KiB, pattern: 0xab },
      { op: 'zero', offset: 64 * KiB, length: 2 * KiB },
      { op: 'write', offset: 130 * KiB, length: 1 * KiB, pattern: 0xcd },
    ],
  });
  add('big_cluster.qcow2', '2 MiB clusters', {
    size: 8 * MiB, clusterSize: 2 * MiB, ops: [
      { op: 'write', offset: 512, length: 4 * KiB, pattern: 0xab },
      { op: 'write', offset: 4 * MiB, length: 2 * MiB, pattern: 0xcd },
    ],
  });
  add('c512_rb1.qcow2', '512-byte clusters, 1-bit refcounts', {
    size: 1 * MiB, clusterSize: 512, refcountBits: 1, ops: [
      { op: 'write', offset: 1000, length: 3000, pattern: 0x5c },
      { op: 'write', offset: 512 * KiB, length: 64 * KiB, pattern: 0x5d },
    ],
  });
  add('c4k_rb64.qcow2', '4 KiB clusters, 64-bit refcounts', {
    size: 1 * MiB, clusterSize: 4 * KiB, refcountBits: 64, ops: [
      { op: 'write', offset: 6 * KiB, length: 8 * KiB, pattern: 0x6e },
      { op: 'zero', offset: 8 * KiB, length: 4 * KiB },
    ],
  });
  add('prealloc_meta.qcow2', 'preallocation=metadata', {
    size: 4 * MiB, clusterSize: 64 * KiB, preallocation: 'metadata', ops: [
      { op: 'write', offset: 64 * KiB + 100, length: 1000, pattern: 0x7a },
    ],
  });
  add('extdata.qcow2', 'external data file (ext.data, data_file_raw)', {
    size: 4 * MiB, clusterSize: 64 * KiB, dataFile: 'ext.data', dataFileRaw: true, ops: [
      { op: 'write', offset: 192 * KiB, length: 64 * KiB, pattern: 0x7e },
    ],
  });
  add('lazy.qcow2', 'lazy_refcounts=on', {
    size: 4 * MiB, clusterSize: 64 * KiB, lazyRefcounts: true, ops: [
      { op: 'write', offset: 0, length: 96 * KiB, pattern: 0x1a },
    ],
  });
  // A snapshot, then writes that must copy-on-write the clusters it shares.
  add('snap.qcow2', 'internal snapshot with writes after it', {
    size: 4 * MiB, clusterSize: 64 * KiB, deterministic: false, ops: [
      { op: 'write', offset: 0, length: 128 * KiB, pattern: 0x01 },
    ],
  });
  mustRun(qemuImg(['snapshot', '-c', 's1', 'snap.qcow2'], dir), 'qemu-img snapshot -c');
  const after: ImageOp[] = [
    { op: 'write', offset: 64 * KiB, length: 128 * KiB, pattern: 0x02 },
    { op: 'zero', offset: 0, length: 4 * KiB },
  ];
  runImageOps(join(dir, 'snap.qcow2'), 'qcow2', after);
  const snap = images[images.length - 1];
  snap.ops = [...snap.ops, ...after];
  return images;
}

/** Applies `ops` to a flat copy of `content` (what the image reads as afterwards). */
export function applyOps(content: Uint8Array, ops: readonly ImageOp[]): Uint8Array {
  const out = content.slice();
  for (const op of ops) {
    const end = Math.min(op.offset + op.length, out.length);
    out.fill(op.op === 'write' || op.op === 'compressed' ? op.pattern : 0, op.offset, end);
  }
  return out;
}

/**
 * The content a zoo image should read as: its base's content (zeros past the base's end), then
 * its own operations. Valid for this zoo, whose discards are all on images without a backing file.
 */
export function zooContent(images: readonly ZooImage[], name: string): Uint8Array {
  const image = images.find((i) => i.name === name);
  if (!image) throw new Error(`no zoo image ${name}`);
  const start = new Uint8Array(image.size);
  if (image.base) start.set(zooContent(images, image.base).subarray(0, image.size));
  return applyOps(start, image.ops);
}
