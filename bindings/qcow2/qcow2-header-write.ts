// SPDX-License-Identifier: MIT
// Writing qcow2 headers, with the wasm core rendering every byte (assembly/header-render.ts):
// switching an image to new tables (and clearing its dirty bit) with one write inside the first
// sector, filling in the table fields of a header held in memory, pointing an image at a grown
// refcount table, setting the corrupt bit, clearing the autoclear bits, clearing the dirty and
// corrupt bits after a repair, and serializing a whole header as
// QEMU 7.2 rewrites one (qcow2_update_header): the fixed fields (72 bytes for version 2, 112 for
// version 3), then the backing format extension, the feature name table (version 3 only), any
// extensions kept from the old header, the end marker, and the backing file name. The whole
// header is used by amend (version, refcount width, lazy refcounts) and rebase (backing file).

import type { Backend } from '../backends/backend.js';
import type { Qcow2Header } from './qcow2-header.js';
import { ImageError } from '../base/errors.js';
import { sharedCore, type CoreExports, type CoreInstance } from '../core/wasm.js';
import { headerRegionView } from './qcow2-metadata-codec.js';

/** The backing format extension (qcow2 spec, "Header extensions"). */
const EXTENSION_BACKING_FORMAT = 0xe2792aca;
/** Longest backing file name QEMU accepts. */
const MAX_BACKING_NAME_BYTES = 1023;

/** What the new header says; the rest comes from the image's current header. */
export interface HeaderFields {
  version: 2 | 3;
  refcountOrder: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  /** undefined: no backing file. */
  backingFile?: string;
  backingFormat?: string;
}

/** Where an image's tables are, as its header records it: what a crash-safe update switches. */
export interface HeaderTables {
  virtualSize: number;
  l1Entries: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  snapshotCount: number;
  snapshotsOffset: number;
}

/** The shared core's header exports and its HEADER region (the file's bytes from position 0). */
function headerWindow(core: CoreInstance): { x: CoreExports; window: Uint8Array } {
  return { x: core.exports, window: headerRegionView(core) };
}

const low32 = (value: bigint) => Number(value & 0xffffffffn);
const high32 = (value: bigint) => Number((value >> 32n) & 0xffffffffn);

/**
 * Patches the header of the image in `backend` in one write of the bytes that change: reads its
 * first bytes, lets `patch` change them in the core, writes the changed range. Returns false
 * when nothing changed (nothing written).
 */
async function patchHeader(backend: Backend, patch: (x: CoreExports) => void): Promise<boolean> {
  const core = await sharedCore();
  const source = new Uint8Array(core.exports.headerPatchSourceBytes());
  await backend.preadv(0, [source]);
  const { x, window } = headerWindow(core);
  window.set(source);
  x.headerPatchBegin();
  patch(x);
  const start = x.headerPatchStart();
  const end = x.headerPatchEnd();
  if (end === 0) return false;
  await backend.pwritev(start, [window.slice(start, end)]);
  return true;
}

/** Header bytes a patch changed: where they go in the file, and the bytes. */
export interface HeaderPatch {
  headerOffset: number;
  bytes: Uint8Array;
}

/**
 * The header bytes that point an image at the refcount table at `hostOffset` (`clusters`
 * clusters), rendered in `core`'s HEADER region (which this overwrites): one write inside the
 * first sector.
 */
export function reftablePointerPatch(core: CoreInstance, hostOffset: number, clusters: number): HeaderPatch {
  const { x, window } = headerWindow(core);
  x.headerPatchBegin();
  x.patchHeaderReftable(hostOffset, clusters);
  const start = x.headerPatchStart();
  return { headerOffset: start, bytes: window.slice(start, x.headerPatchEnd()) };
}

/**
 * Writes the table fields `tables` into `header`, the first bytes of an image held in memory
 * (at least headerPatchSourceBytes long), through the shared core.
 */
export async function setHeaderTables(header: Uint8Array, tables: HeaderTables): Promise<void> {
  const { x, window } = headerWindow(await sharedCore());
  const sourceBytes = x.headerPatchSourceBytes();
  window.set(header.subarray(0, sourceBytes));
  x.headerPatchBegin();
  x.patchHeaderTables(tables.virtualSize, tables.l1Entries, tables.l1TableOffset, tables.refcountTableOffset,
    tables.refcountTableClusters, tables.snapshotCount, tables.snapshotsOffset);
  header.set(window.subarray(x.headerPatchStart(), x.headerPatchEnd()), x.headerPatchStart());
}

/**
 * Switches the image in `backend` to the tables `tables` says with one write inside the first
 * 512-byte sector (atomic), clearing the dirty bit in the same write when `clearDirty`.
 */
export async function switchHeaderTables(backend: Backend, tables: HeaderTables, clearDirty: boolean): Promise<void> {
  await patchHeader(backend, (x) => {
    x.patchHeaderTables(tables.virtualSize, tables.l1Entries, tables.l1TableOffset, tables.refcountTableOffset,
      tables.refcountTableClusters, tables.snapshotCount, tables.snapshotsOffset);
    if (clearDirty) x.patchHeaderClearFlags(1, 0);
  });
}

/**
 * Clears the dirty and corrupt bits of the (version 3) header of the image in `backend`, as
 * QEMU's mark_clean / mark_consistent after a repair (only the dirty bit when `dirtyOnly`).
 * Returns false when none of them was set (nothing written).
 */
export function markHeaderClean(backend: Backend, dirtyOnly = false): Promise<boolean> {
  return patchHeader(backend, (x) => { x.patchHeaderClearFlags(1, dirtyOnly ? 0 : 1); });
}

/**
 * Clears the autoclear feature bits of the (version 3) header of the image in `backend`, as a
 * writer that does not maintain them must before its first write. Returns false when none was
 * set (nothing written).
 */
export function clearHeaderAutoclear(backend: Backend): Promise<boolean> {
  return patchHeader(backend, (x) => { x.patchHeaderClearAutoclear(); });
}

/**
 * Sets the corrupt bit of the (version 3) header of the image in `backend`, as QEMU's
 * qcow2_mark_corrupt. Returns false when it was already set (nothing written).
 */
export function markHeaderCorrupt(backend: Backend): Promise<boolean> {
  return patchHeader(backend, (x) => { x.patchHeaderSetCorrupt(); });
}

/**
 * The bytes of a header with `fields`, the tables `tables` and everything else from `current`
 * (its unknown extensions kept). Throws INVALID_ARGUMENT when it would not fit in cluster 0 or a
 * name is too long.
 */
export async function serializeHeader(current: Qcow2Header, fields: HeaderFields, tables: HeaderTables): Promise<Uint8Array> {
  const encoder = new TextEncoder();
  const backingName = fields.backingFile === undefined ? new Uint8Array(0) : encoder.encode(fields.backingFile);
  if (backingName.length > MAX_BACKING_NAME_BYTES) throw new ImageError('INVALID_ARGUMENT', `the backing file name is longer than ${MAX_BACKING_NAME_BYTES} bytes`);
  const { x, window } = headerWindow(await sharedCore());
  const tooLarge = (bytes: number) => new ImageError('INVALID_ARGUMENT', `the header (${bytes} bytes) does not fit in cluster 0 (${current.clusterSize} bytes)`);
  x.renderHeader(fields.version, current.clusterBits, fields.refcountOrder, current.compressionType === 'zstd' ? 1 : 0,
    low32(fields.incompatibleFeatures), high32(fields.incompatibleFeatures), low32(fields.compatibleFeatures),
    high32(fields.compatibleFeatures), low32(fields.autoclearFeatures), high32(fields.autoclearFeatures));
  x.headerPatchBegin();
  x.patchHeaderTables(tables.virtualSize, tables.l1Entries, tables.l1TableOffset, tables.refcountTableOffset,
    tables.refcountTableClusters, tables.snapshotCount, tables.snapshotsOffset);
  const append = (type: number, data: Uint8Array) => {
    const at = x.headerExtensionDataAt();
    if (at + data.length > window.length || x.appendHeaderExtension(type, data.length) < 0) throw tooLarge(at + data.length);
    window.set(data, at);
  };
  if (fields.backingFile !== undefined && fields.backingFormat !== undefined) append(EXTENSION_BACKING_FORMAT, encoder.encode(fields.backingFormat));
  if (fields.version === 3 && x.appendFeatureNameTable() < 0) throw tooLarge(window.length);
  for (const e of current.unknownExtensions) append(e.type, e.data);
  const nameAt = x.finishHeader(backingName.length);
  if (nameAt < 0) throw tooLarge(window.length);
  const total = nameAt + backingName.length;
  if (total > current.clusterSize) throw tooLarge(total);
  window.set(backingName, nameAt);
  return window.slice(0, total);
}

/** The header fields of `header` as they are (to change some). */
export function currentHeaderFields(header: Qcow2Header): HeaderFields {
  return {
    version: header.version, refcountOrder: header.refcountOrder, incompatibleFeatures: header.incompatibleFeatures,
    compatibleFeatures: header.compatibleFeatures, autoclearFeatures: header.autoclearFeatures,
    backingFile: header.backingFile, backingFormat: header.backingFormat,
  };
}
