// SPDX-License-Identifier: MIT
// Writing qcow2 headers for the metadata tools, in the HEADER region (the "window", holding the
// image file's bytes from position 0): patching the fields that say where the tables are and the
// incompatible feature bits of a header TypeScript read there, or rendering a whole header as
// QEMU 7.2 rewrites one (qcow2_update_header): the fixed fields, then extensions, the end marker
// and the backing file name. A patch records the byte range it changed, which TypeScript writes.

import {
  FeatureType, HeaderField, AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, EXT_FEATURE_TABLE, EXT_HEADER_BYTES,
  FEATURE_ENTRY_BYTES, INCOMPAT_COMPRESSION, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY,
  INCOMPAT_EXTL2, AUTOCLEAR_BITMAPS, QCOW_MAGIC, V2_HEADER_BYTES, V3_HEADER_BYTES, storeBE32, storeBE64,
  loadBE64,
} from './format';
import { HEADER_REGION_BYTES, Region, regionOffset } from './layout';
import { Status } from './status';

/** Feature name table entries QEMU 7.2 writes (one per feature bit it knows). */
const FEATURE_NAME_COUNT: u32 = 8;

let patchStart: i32 = 0;
let patchEnd: i32 = 0;
let renderCursor: u32 = 0;

@inline function window(): usize { return regionOffset(Region.HEADER); }

function recordPatch(start: u32, end: u32): void {
  if (patchEnd == 0 || <i32>start < patchStart) patchStart = <i32>start;
  if (<i32>end > patchEnd) patchEnd = <i32>end;
}

/** Header bytes TypeScript places in the window (from file position 0) before patching them. */
export function headerPatchSourceBytes(): i32 { return <i32>V3_HEADER_BYTES; }

/** Starts a patch: no byte changed yet. */
export function headerPatchBegin(): void {
  patchStart = 0;
  patchEnd = 0;
}

/** First window byte the patches since headerPatchBegin changed. */
export function headerPatchStart(): i32 { return patchStart; }
/** One past the last window byte the patches changed (0: none). */
export function headerPatchEnd(): i32 { return patchEnd; }

/**
 * Stores where the tables are: the virtual size, the active L1 table (entries, host offset), the
 * refcount table (host offset, clusters) and the snapshot table (entries, host offset). These
 * fields all lie in the first 512-byte sector, so one write of the patched range switches an
 * image to new tables atomically.
 */
export function patchHeaderTables(virtualSize: f64, l1Entries: i32, l1TableOffset: f64, reftableOffset: f64,
                                  reftableClusters: i32, snapshotCount: i32, snapshotsOffset: f64): void {
  const at = window();
  storeBE64(at + HeaderField.SIZE, <u64>virtualSize);
  storeBE32(at + HeaderField.L1_SIZE, <u32>l1Entries);
  storeBE64(at + HeaderField.L1_TABLE_OFFSET, <u64>l1TableOffset);
  storeBE64(at + HeaderField.REFCOUNT_TABLE_OFFSET, <u64>reftableOffset);
  storeBE32(at + HeaderField.REFCOUNT_TABLE_CLUSTERS, <u32>reftableClusters);
  storeBE32(at + HeaderField.NB_SNAPSHOTS, <u32>snapshotCount);
  storeBE64(at + HeaderField.SNAPSHOTS_OFFSET, <u64>snapshotsOffset);
  recordPatch(HeaderField.SIZE, HeaderField.SNAPSHOTS_OFFSET + 8);
}

/**
 * Stores where the refcount table is (host offset, clusters): the two adjacent fields a
 * refcount-table growth switches, inside the first 512-byte sector.
 */
export function patchHeaderReftable(reftableOffset: f64, reftableClusters: i32): void {
  const at = window();
  storeBE64(at + HeaderField.REFCOUNT_TABLE_OFFSET, <u64>reftableOffset);
  storeBE32(at + HeaderField.REFCOUNT_TABLE_CLUSTERS, <u32>reftableClusters);
  recordPatch(HeaderField.REFCOUNT_TABLE_OFFSET, HeaderField.REFCOUNT_TABLE_CLUSTERS + 4);
}

/**
 * Sets the corrupt bit of a version 3 header's incompatible features (QEMU's
 * qcow2_mark_corrupt). Returns 1 when it was clear, else 0 (nothing patched).
 */
export function patchHeaderSetCorrupt(): i32 {
  const at = window() + HeaderField.INCOMPATIBLE_FEATURES;
  const features = loadBE64(at);
  if ((features & INCOMPAT_CORRUPT) != 0) return 0;
  storeBE64(at, features | INCOMPAT_CORRUPT);
  recordPatch(HeaderField.INCOMPATIBLE_FEATURES, HeaderField.INCOMPATIBLE_FEATURES + 8);
  return 1;
}

/**
 * Clears every autoclear feature bit of a version 3 header, as the spec requires of a writer
 * that does not maintain them. Returns 1 when one was set, else 0 (nothing patched).
 */
export function patchHeaderClearAutoclear(): i32 {
  const at = window() + HeaderField.AUTOCLEAR_FEATURES;
  if (loadBE64(at) == 0) return 0;
  storeBE64(at, 0);
  recordPatch(HeaderField.AUTOCLEAR_FEATURES, HeaderField.AUTOCLEAR_FEATURES + 8);
  return 1;
}

/**
 * Clears the dirty bit (when `dirty` is nonzero) and the corrupt bit (when `corrupt` is) of a
 * version 3 header's incompatible features. Returns 1 when a bit was set, else 0 (nothing patched).
 */
export function patchHeaderClearFlags(dirty: i32, corrupt: i32): i32 {
  const at = window() + HeaderField.INCOMPATIBLE_FEATURES;
  const clear = (dirty != 0 ? INCOMPAT_DIRTY : 0) | (corrupt != 0 ? INCOMPAT_CORRUPT : 0);
  const features = loadBE64(at);
  if ((features & clear) == 0) return 0;
  storeBE64(at, features & ~clear);
  recordPatch(HeaderField.INCOMPATIBLE_FEATURES, HeaderField.INCOMPATIBLE_FEATURES + 8);
  return 1;
}

/**
 * Starts rendering a whole header in the window: magic, `version` (2 or 3), cluster bits and, for
 * version 3, the feature bits (each u64 as two u32 halves), refcount order, header length and
 * compression type. The table fields are zero until patchHeaderTables; extensions follow.
 * Returns the bytes of the fixed part (72 or 112), or -INVALID for another version.
 */
export function renderHeader(version: i32, clusterBits: i32, refcountOrder: i32, compressionType: i32,
                             incompatibleLow: u32, incompatibleHigh: u32, compatibleLow: u32, compatibleHigh: u32,
                             autoclearLow: u32, autoclearHigh: u32): i32 {
  if (version != 2 && version != 3) return -Status.INVALID;
  const at = window();
  const fixed = version == 3 ? V3_HEADER_BYTES : V2_HEADER_BYTES;
  memory.fill(at, 0, fixed);
  storeBE32(at, QCOW_MAGIC);
  storeBE32(at + HeaderField.VERSION, <u32>version);
  storeBE32(at + HeaderField.CLUSTER_BITS, <u32>clusterBits);
  if (version == 3) {
    storeBE64(at + HeaderField.INCOMPATIBLE_FEATURES, (<u64>incompatibleHigh << 32) | <u64>incompatibleLow);
    storeBE64(at + HeaderField.COMPATIBLE_FEATURES, (<u64>compatibleHigh << 32) | <u64>compatibleLow);
    storeBE64(at + HeaderField.AUTOCLEAR_FEATURES, (<u64>autoclearHigh << 32) | <u64>autoclearLow);
    storeBE32(at + HeaderField.REFCOUNT_ORDER, <u32>refcountOrder);
    storeBE32(at + HeaderField.HEADER_LENGTH, V3_HEADER_BYTES);
    store<u8>(at + HeaderField.COMPRESSION_TYPE, <u8>compressionType);
  }
  renderCursor = fixed;
  return <i32>fixed;
}

/** Window byte where the next extension's data goes: TypeScript places it there, then appends. */
export function headerExtensionDataAt(): i32 { return <i32>(renderCursor + EXT_HEADER_BYTES); }

/**
 * Appends a header extension of `type` whose `dataBytes` bytes were placed at
 * headerExtensionDataAt(), padded with zeros to 8 bytes. Returns the header's length so far, or
 * -INVALID when it would not fit in the window.
 */
export function appendHeaderExtension(type: u32, dataBytes: i32): i32 {
  const padded = (<u32>dataBytes + 7) & ~<u32>7;
  if (dataBytes < 0 || <u64>renderCursor + EXT_HEADER_BYTES + padded > <u64>HEADER_REGION_BYTES) return -Status.INVALID;
  const at = window() + renderCursor;
  storeBE32(at, type);
  storeBE32(at + 4, <u32>dataBytes);
  memory.fill(at + EXT_HEADER_BYTES + <usize>dataBytes, 0, padded - <u32>dataBytes);
  renderCursor += EXT_HEADER_BYTES + padded;
  return <i32>renderCursor;
}

/** Appends QEMU 7.2's feature name table extension. Returns the header's length so far, or -INVALID. */
export function appendFeatureNameTable(): i32 {
  const bytes = FEATURE_NAME_COUNT * FEATURE_ENTRY_BYTES;
  if (<u64>renderCursor + EXT_HEADER_BYTES + bytes > <u64>HEADER_REGION_BYTES) return -Status.INVALID;
  renderFeatureNameTable(window() + renderCursor);
  renderCursor += EXT_HEADER_BYTES + bytes;
  return <i32>renderCursor;
}

/**
 * Writes the feature name table extension (its 8-byte extension header, then one 48-byte entry per
 * feature bit QEMU 7.2 names) at address `at`; returns the bytes written.
 */
export function renderFeatureNameTable(at: usize): u32 {
  storeBE32(at, EXT_FEATURE_TABLE);
  storeBE32(at + 4, FEATURE_NAME_COUNT * FEATURE_ENTRY_BYTES);
  let entry = at + EXT_HEADER_BYTES;
  entry = featureName(entry, <u32>FeatureType.INCOMPATIBLE, INCOMPAT_DIRTY, 'dirty bit');
  entry = featureName(entry, <u32>FeatureType.INCOMPATIBLE, INCOMPAT_CORRUPT, 'corrupt bit');
  entry = featureName(entry, <u32>FeatureType.INCOMPATIBLE, INCOMPAT_DATA_FILE, 'external data file');
  entry = featureName(entry, <u32>FeatureType.INCOMPATIBLE, INCOMPAT_COMPRESSION, 'compression type');
  entry = featureName(entry, <u32>FeatureType.INCOMPATIBLE, INCOMPAT_EXTL2, 'extended L2 entries');
  entry = featureName(entry, <u32>FeatureType.COMPATIBLE, COMPAT_LAZY_REFCOUNTS, 'lazy refcounts');
  entry = featureName(entry, <u32>FeatureType.AUTOCLEAR, AUTOCLEAR_BITMAPS, 'bitmaps');
  featureName(entry, <u32>FeatureType.AUTOCLEAR, AUTOCLEAR_DATA_FILE_RAW, 'raw external data');
  return EXT_HEADER_BYTES + FEATURE_NAME_COUNT * FEATURE_ENTRY_BYTES;
}

// One feature name table entry: u8 type, u8 bit number, the ASCII name padded with zeros.
function featureName(entry: usize, type: u32, mask: u64, name: string): usize {
  memory.fill(entry, 0, FEATURE_ENTRY_BYTES);
  store<u8>(entry, <u8>type);
  store<u8>(entry, <u8>ctz<u64>(mask), 1);
  for (let i = 0; i < name.length; i++) store<u8>(entry + 2 + <usize>i, <u8>name.charCodeAt(i));
  return entry + FEATURE_ENTRY_BYTES;
}

/**
 * Ends the header: the end-of-extensions marker, then (with `backingNameBytes` > 0) the backing
 * file name's position and length in the fixed fields. Returns the window byte where TypeScript
 * places the name (the header's length is that plus the name's), or -INVALID when it would not fit.
 */
export function finishHeader(backingNameBytes: i32): i32 {
  if (backingNameBytes < 0 || <u64>renderCursor + EXT_HEADER_BYTES + <u64>backingNameBytes > <u64>HEADER_REGION_BYTES) {
    return -Status.INVALID;
  }
  const at = window();
  memory.fill(at + renderCursor, 0, EXT_HEADER_BYTES);
  const nameAt = renderCursor + EXT_HEADER_BYTES;
  storeBE64(at + HeaderField.BACKING_FILE_OFFSET, backingNameBytes > 0 ? <u64>nameAt : 0);
  storeBE32(at + HeaderField.BACKING_FILE_SIZE, <u32>backingNameBytes);
  renderCursor = nameAt;
  return <i32>nameAt;
}
