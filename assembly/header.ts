// SPDX-License-Identifier: MIT
// qcow2 header parsing and validation. Reads the first bytes of an image file, which TypeScript
// places in the HEADER region, runs every check QEMU runs when it opens an image, in QEMU's order
// (so an image with several faults reports the fault QEMU reports), and keeps the fields in
// module globals behind exported getters. It reads no table (L1, refcount, snapshot), only checks
// where they lie and how large they are; names stay in the region and TypeScript decodes them.

import { Region, regionOffset, regionBytes } from './layout';
import { Status } from './status';
import { HeaderError, fail, resetHeaderError } from './header-error';
import {
  HeaderField, QCOW_MAGIC, V2_HEADER_BYTES, V3_MIN_HEADER_BYTES, INCOMPAT_DIRTY, INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE, INCOMPAT_COMPRESSION, INCOMPAT_EXTL2, INCOMPAT_KNOWN_MASK, COMPAT_LAZY_REFCOUNTS,
  AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW, CRYPT_NONE, CRYPT_LUKS, CompressionType,
  EXT_HEADER_BYTES, EXT_END, EXT_BACKING_FORMAT, EXT_FEATURE_TABLE, EXT_BITMAPS, EXT_CRYPTO_HEADER,
  EXT_DATA_FILE, FEATURE_ENTRY_BYTES, FEATURE_NAME_BYTES, BITMAPS_EXT_BYTES, MAX_BITMAPS,
  MAX_BITMAP_DIRECTORY_BYTES, L1E_BYTES, SNAPSHOT_HEADER_BYTES, SUBCLUSTERS_PER_CLUSTER, MIN_CLUSTER_BITS,
  MAX_CLUSTER_BITS, MAX_SPEC_CLUSTER_BITS, MIN_EXTL2_CLUSTER_BITS, MAX_REFCOUNT_ORDER, V2_REFCOUNT_ORDER,
  MAX_L1_BYTES, MAX_REFTABLE_BYTES, MAX_SNAPSHOTS, MAX_BACKING_FILE_NAME_BYTES,
  MAX_BACKING_FORMAT_NAME_BYTES, MAX_L1_VM_STATE_INDEX, MAX_TABLE_END, MAX_EXACT_POSITION, loadBE32,
  loadBE64,
} from './format';


/** Most extensions parseHeader keeps for writing back (beyond it: TOO_MANY_EXTENSIONS). */
export const MAX_UNKNOWN_EXTENSIONS: i32 = 256;

// Kept extensions: u32 type, u32 data offset (host offset = offset into HEADER), u32 data bytes.
const UNKNOWN_EXTENSION_STRIDE: i32 = 12;
const unknownExtensions: usize = memory.data(MAX_UNKNOWN_EXTENSIONS * UNKNOWN_EXTENSION_STRIDE, 4);

// Bits of seenExtensions, one per extension type parseHeader interprets.
const SEEN_BACKING_FORMAT: u32 = 1;
const SEEN_FEATURE_TABLE: u32 = 2;
const SEEN_DATA_FILE: u32 = 4;
const SEEN_BITMAPS: u32 = 8;
const SEEN_CRYPTO_HEADER: u32 = 16;

// Input of the current parse.
let regionPtr: usize = 0; // file position 0
let availableBytes: u64 = 0; // file bytes present in the region
let fileEndsInRegion: bool = false; // a byte past availableBytes is past the end of the file

// Parsed fields (valid after parseHeader returned OK; partly filled after a failure).
let version: u32 = 0;
let clusterBits: u32 = 0;
let clusterBytes: u64 = 0;
let virtualSize: u64 = 0;
let cryptMethod: u32 = 0;
let l1Size: u32 = 0;
let l1TableOffset: u64 = 0;
let refcountTableOffset: u64 = 0;
let refcountTableClusters: u32 = 0;
let snapshotCount: u32 = 0;
let snapshotsOffset: u64 = 0;
let incompatibleFeatures: u64 = 0;
let compatibleFeatures: u64 = 0;
let autoclearFeatures: u64 = 0;
let refcountOrder: u32 = 0;
let headerLength: u32 = 0;
let compressionType: u32 = 0;
let backingFileOffset: u64 = 0;
let backingFileBytes: u32 = 0;
let backingFormatOffset: u32 = 0;
let backingFormatBytes: u32 = 0;
let dataFileOffset: u32 = 0;
let dataFileBytes: u32 = 0;
let featureTableOffset: u32 = 0;
let featureCount: u32 = 0;
let unknownExtensionCount: i32 = 0;
let seenExtensions: u32 = 0;
let unknownIncompatible: u64 = 0;
let walkDetail: u64 = 0;

/**
 * Parses and validates a qcow2 header.
 *
 * Input: HEADER holds the first `byteCount` bytes of the image file, which must be
 * min(fileSize, regionBytes(HEADER)) bytes; `fileSize` is the file's size in bytes (an integer
 * up to 2^53). A byte the parser needs beyond `byteCount` is then either past the end of the file
 * (TRUNCATED) or past the region (the *_PAST_REGION reasons, for clusters larger than the region).
 *
 * Checks, in QEMU's order (QEMU 7.2's open, confirmed by giving qemu-io images with two faults):
 * magic, version, cluster_bits, header_length, backing_file_offset, compression type and
 * incompatible bit 3, unknown incompatible bits (after reading the feature name table),
 * subcluster size, refcount_order, refcount table, snapshot table, L1 table and virtual size,
 * crypt_method; then this engine's 2^53 limits, the header extensions, the external data file
 * bits, encryption, and the backing file name. Reads only the region; runs in time bounded by
 * its size.
 *
 * On return the header* getters describe the image (and headerErrorReason() is NONE), or
 * headerErrorReason()/headerErrorDetail() say which check failed.
 *
 * Returns:
 * - Status.OK: the header is valid and supported.
 * - Status.CORRUPT: the header is invalid (QEMU refuses it, or it breaks a rule of the spec).
 * - Status.UNSUPPORTED: valid, but uses something this engine does not implement (encryption,
 *   unknown incompatible bits, an unknown compression type, clusters above 2 MiB, metadata
 *   that does not fit the region, sizes beyond 2^53).
 * - Status.INVALID: `byteCount` or `fileSize` break the contract above (a caller bug).
 */
export function parseHeader(byteCount: i32, fileSize: f64): i32 {
  resetFields();
  const regionSize = <u64>regionBytes(Region.HEADER);
  if (!(fileSize >= 0) || fileSize > <f64>MAX_EXACT_POSITION || floor<f64>(fileSize) != fileSize) return Status.INVALID;
  const fileBytes = <u64>fileSize;
  if (byteCount < 0 || <u64>byteCount != min<u64>(fileBytes, regionSize)) return Status.INVALID;
  regionPtr = regionOffset(Region.HEADER);
  availableBytes = <u64>byteCount;
  fileEndsInRegion = fileBytes <= regionSize;

  // 1. Magic and version, then the fields every version has.
  if (availableBytes < 4 || loadBE32(regionPtr) != QCOW_MAGIC) return fail(HeaderError.BAD_MAGIC, 0);
  let missing = missingBytes(V2_HEADER_BYTES, HeaderError.HEADER_PAST_REGION);
  if (missing != HeaderError.NONE) return fail(missing, V2_HEADER_BYTES);
  version = loadBE32(regionPtr + HeaderField.VERSION);
  backingFileOffset = loadBE64(regionPtr + HeaderField.BACKING_FILE_OFFSET);
  backingFileBytes = loadBE32(regionPtr + HeaderField.BACKING_FILE_SIZE);
  clusterBits = loadBE32(regionPtr + HeaderField.CLUSTER_BITS);
  virtualSize = loadBE64(regionPtr + HeaderField.SIZE);
  cryptMethod = loadBE32(regionPtr + HeaderField.CRYPT_METHOD);
  l1Size = loadBE32(regionPtr + HeaderField.L1_SIZE);
  l1TableOffset = loadBE64(regionPtr + HeaderField.L1_TABLE_OFFSET);
  refcountTableOffset = loadBE64(regionPtr + HeaderField.REFCOUNT_TABLE_OFFSET);
  refcountTableClusters = loadBE32(regionPtr + HeaderField.REFCOUNT_TABLE_CLUSTERS);
  snapshotCount = loadBE32(regionPtr + HeaderField.NB_SNAPSHOTS);
  snapshotsOffset = loadBE64(regionPtr + HeaderField.SNAPSHOTS_OFFSET);
  if (version != 2 && version != 3) return fail(HeaderError.UNSUPPORTED_VERSION, version);

  // 2. Cluster size. Beyond 55 bits no second cluster is addressable, so the value is nonsense.
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_SPEC_CLUSTER_BITS) {
    return fail(HeaderError.CLUSTER_BITS_INVALID, clusterBits);
  }
  if (clusterBits > MAX_CLUSTER_BITS) return fail(HeaderError.CLUSTER_BITS_UNSUPPORTED, clusterBits);
  clusterBytes = <u64>1 << clusterBits;

  // 3. Version 3 fields; version 2 has no feature bits, 16-bit refcounts and a 72-byte header.
  if (version == 3) {
    missing = missingBytes(V3_MIN_HEADER_BYTES, HeaderError.HEADER_PAST_REGION);
    if (missing != HeaderError.NONE) return fail(missing, V3_MIN_HEADER_BYTES);
    incompatibleFeatures = loadBE64(regionPtr + HeaderField.INCOMPATIBLE_FEATURES);
    compatibleFeatures = loadBE64(regionPtr + HeaderField.COMPATIBLE_FEATURES);
    autoclearFeatures = loadBE64(regionPtr + HeaderField.AUTOCLEAR_FEATURES);
    refcountOrder = loadBE32(regionPtr + HeaderField.REFCOUNT_ORDER);
    headerLength = loadBE32(regionPtr + HeaderField.HEADER_LENGTH);
    if (headerLength < V3_MIN_HEADER_BYTES) return fail(HeaderError.HEADER_TOO_SHORT, headerLength);
    if ((headerLength & 7) != 0) return fail(HeaderError.HEADER_LENGTH_UNALIGNED, headerLength);
  } else {
    refcountOrder = V2_REFCOUNT_ORDER;
    headerLength = V2_HEADER_BYTES;
  }
  if (<u64>headerLength > clusterBytes) return fail(HeaderError.HEADER_EXCEEDS_CLUSTER, headerLength);
  missing = missingBytes(headerLength, HeaderError.HEADER_PAST_REGION);
  if (missing != HeaderError.NONE) return fail(missing, headerLength);

  // 4. The extension area ends where the backing file name starts, else at the end of cluster 0.
  if (backingFileOffset > clusterBytes) return fail(HeaderError.BACKING_OFFSET_INVALID, backingFileOffset);
  if (headerLength > <u32>HeaderField.COMPRESSION_TYPE) compressionType = <u32>load<u8>(regionPtr + HeaderField.COMPRESSION_TYPE);

  // 5. Walk the extensions now: the unknown-feature report below needs the feature name table.
  // Like QEMU, report a fault found in the walk only after the table checks (step 11).
  const extensionsEnd = backingFileOffset != 0 ? backingFileOffset : clusterBytes;
  const walkError = walkExtensions(<u64>headerLength, extensionsEnd);

  // 6. Compression type, which must agree with incompatible bit 3.
  if (compressionType != <u32>CompressionType.ZLIB && compressionType != <u32>CompressionType.ZSTD) {
    return fail(HeaderError.COMPRESSION_TYPE_UNKNOWN, compressionType);
  }
  const hasCompressionBit = (incompatibleFeatures & INCOMPAT_COMPRESSION) != 0;
  if (compressionType == <u32>CompressionType.ZLIB && hasCompressionBit) return fail(HeaderError.COMPRESSION_BIT_UNEXPECTED, 0);
  if (compressionType != <u32>CompressionType.ZLIB && !hasCompressionBit) return fail(HeaderError.COMPRESSION_BIT_MISSING, compressionType);

  // 7. Feature bits and encodings this reader must understand.
  unknownIncompatible = incompatibleFeatures & ~INCOMPAT_KNOWN_MASK;
  if (unknownIncompatible != 0) return fail(HeaderError.UNKNOWN_INCOMPATIBLE, unknownIncompatible);
  const hasExtendedL2 = (incompatibleFeatures & INCOMPAT_EXTL2) != 0;
  if (hasExtendedL2 && clusterBits < MIN_EXTL2_CLUSTER_BITS) {
    return fail(HeaderError.SUBCLUSTER_TOO_SMALL, clusterBytes / SUBCLUSTERS_PER_CLUSTER);
  }
  if (refcountOrder > MAX_REFCOUNT_ORDER) return fail(HeaderError.REFCOUNT_ORDER_TOO_LARGE, refcountOrder);

  // 8. Where the tables lie and how large they are (QEMU's validate_table: aligned, and the end
  // at most INT64_MAX; the sizes are bounded first, so offset + bytes cannot wrap).
  if (refcountTableClusters == 0) return fail(HeaderError.NO_REFCOUNT_TABLE, 0);
  if (<u64>refcountTableClusters > (MAX_REFTABLE_BYTES >> clusterBits)) {
    return fail(HeaderError.REFCOUNT_TABLE_TOO_LARGE, refcountTableClusters);
  }
  const refcountTableBytes = <u64>refcountTableClusters << clusterBits;
  if (!isValidTable(refcountTableOffset, refcountTableBytes)) {
    return fail(HeaderError.REFCOUNT_TABLE_OFFSET_INVALID, refcountTableOffset);
  }
  if (snapshotCount > MAX_SNAPSHOTS) return fail(HeaderError.SNAPSHOT_TABLE_TOO_LARGE, snapshotCount);
  const snapshotTableMinBytes = <u64>snapshotCount * SNAPSHOT_HEADER_BYTES;
  if (!isValidTable(snapshotsOffset, snapshotTableMinBytes)) {
    return fail(HeaderError.SNAPSHOT_TABLE_OFFSET_INVALID, snapshotsOffset);
  }
  const l1Bytes = <u64>l1Size * L1E_BYTES;
  if (l1Bytes > MAX_L1_BYTES) return fail(HeaderError.L1_TOO_LARGE, l1Size);
  if (!isValidTable(l1TableOffset, l1Bytes)) return fail(HeaderError.L1_OFFSET_INVALID, l1TableOffset);

  // 9. The L1 table must map the whole virtual size: one entry per L2 table's worth of bytes.
  // QEMU checks crypt_method's range only after this.
  const l2Bits = clusterBits - (hasExtendedL2 ? 4 : 3);
  const l1EntryShift = clusterBits + l2Bits; // at most 21 + 18 = 39
  // Rounds up without adding to virtualSize, which may be near 2^64.
  const l1Needed = (virtualSize >> l1EntryShift) + <u64>((virtualSize & ((<u64>1 << l1EntryShift) - 1)) != 0);
  if (l1Needed > MAX_L1_VM_STATE_INDEX) return fail(HeaderError.IMAGE_TOO_BIG, virtualSize);
  if (<u64>l1Size < l1Needed) return fail(HeaderError.L1_TOO_SMALL, l1Needed);
  if (cryptMethod > CRYPT_LUKS) return fail(HeaderError.ENCRYPTION_METHOD_INVALID, cryptMethod);

  // 10. This engine's limits: every byte position must cross to TypeScript as an exact f64.
  if (virtualSize > MAX_EXACT_POSITION) return fail(HeaderError.VIRTUAL_SIZE_UNSUPPORTED, virtualSize);
  if (refcountTableOffset + refcountTableBytes > MAX_EXACT_POSITION) {
    return fail(HeaderError.TABLE_BEYOND_2_53, refcountTableOffset);
  }
  if (l1TableOffset + l1Bytes > MAX_EXACT_POSITION) return fail(HeaderError.TABLE_BEYOND_2_53, l1TableOffset);
  if (snapshotsOffset + snapshotTableMinBytes > MAX_EXACT_POSITION) {
    return fail(HeaderError.TABLE_BEYOND_2_53, snapshotsOffset);
  }

  // 11. Faults found in the extension walk, then the external data file's bits. An encrypted
  // image fails here in QEMU too (it would ask for the key next).
  if (walkError != HeaderError.NONE) return fail(walkError, walkDetail);
  if ((autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) != 0 && (incompatibleFeatures & INCOMPAT_DATA_FILE) == 0) {
    return fail(HeaderError.DATA_FILE_RAW_WITHOUT_DATA_FILE, 0);
  }
  if (cryptMethod != CRYPT_NONE) return fail(HeaderError.ENCRYPTED, cryptMethod);

  // 12. The backing file name: at most 1023 bytes, inside cluster 0 (the offset is checked above).
  if (backingFileOffset != 0) {
    const maxNameBytes = min<u64>(MAX_BACKING_FILE_NAME_BYTES, clusterBytes - backingFileOffset);
    if (<u64>backingFileBytes > maxNameBytes) return fail(HeaderError.BACKING_NAME_TOO_LONG, backingFileBytes);
    const nameEnd = backingFileOffset + backingFileBytes;
    missing = missingBytes(nameEnd, HeaderError.BACKING_NAME_PAST_REGION);
    if (missing != HeaderError.NONE) return fail(missing, nameEnd);
  } else {
    backingFileBytes = 0;
  }
  return Status.OK;
}

function resetFields(): void {
  version = 0; clusterBits = 0; clusterBytes = 0; virtualSize = 0; cryptMethod = 0;
  l1Size = 0; l1TableOffset = 0; refcountTableOffset = 0; refcountTableClusters = 0;
  snapshotCount = 0; snapshotsOffset = 0; incompatibleFeatures = 0; compatibleFeatures = 0;
  autoclearFeatures = 0; refcountOrder = 0; headerLength = 0; compressionType = 0;
  backingFileOffset = 0; backingFileBytes = 0; backingFormatOffset = 0; backingFormatBytes = 0;
  dataFileOffset = 0; dataFileBytes = 0; featureTableOffset = 0; featureCount = 0;
  unknownExtensionCount = 0; seenExtensions = 0; unknownIncompatible = 0;
  walkDetail = 0;
  resetHeaderError();
}


/**
 * NONE when the file bytes [0, end) are in the region; otherwise TRUNCATED when the file ends
 * before `end`, or `pastRegion` when the file goes on beyond the region.
 */
function missingBytes(end: u64, pastRegion: HeaderError): HeaderError {
  if (end <= availableBytes) return HeaderError.NONE;
  return fileEndsInRegion ? HeaderError.TRUNCATED : pastRegion;
}

/** QEMU's table rule: cluster-aligned, and offset + bytes <= INT64_MAX (`bytes` is at most 32 MiB). */
function isValidTable(hostOffset: u64, bytes: u64): bool {
  return (hostOffset & (clusterBytes - 1)) == 0 && hostOffset <= MAX_TABLE_END - bytes;
}

/**
 * Walks the header extensions in [startOffset, endOffset) (qcow2 spec, "Header extensions"),
 * recording the ones parseHeader interprets and keeping the others for writing back. Stops at
 * the end-of-extensions marker or at endOffset. Returns the first fault (detail in walkDetail).
 */
function walkExtensions(startOffset: u64, endOffset: u64): HeaderError {
  let at = startOffset;
  // Each pass advances at least 8 bytes and never reads past the region, so the loop runs at
  // most regionBytes(HEADER) / 8 times.
  while (at < endOffset) {
    let missing = missingBytes(at + EXT_HEADER_BYTES, HeaderError.EXTENSIONS_PAST_REGION);
    if (missing != HeaderError.NONE) {
      walkDetail = at + EXT_HEADER_BYTES;
      return missing;
    }
    const type = loadBE32(regionPtr + <usize>at);
    const dataBytes = loadBE32(regionPtr + <usize>at + 4);
    at += EXT_HEADER_BYTES;
    // Like QEMU, even the end marker must not claim data past the area. Compared as
    // `dataBytes > endOffset - at` so nothing can wrap.
    if (at > endOffset || <u64>dataBytes > endOffset - at) {
      walkDetail = type;
      return HeaderError.EXTENSION_TOO_LARGE;
    }
    if (type == EXT_END) return HeaderError.NONE;
    missing = missingBytes(at + dataBytes, HeaderError.EXTENSIONS_PAST_REGION);
    if (missing != HeaderError.NONE) {
      walkDetail = at + dataBytes;
      return missing;
    }
    const fault = takeExtension(type, <u32>at, dataBytes);
    if (fault != HeaderError.NONE) return fault;
    at += (<u64>dataBytes + 7) & ~<u64>7;
  }
  return HeaderError.NONE;
}

/** Records one extension whose data, [dataOffset, dataOffset + dataBytes), is in the region. */
function takeExtension(type: u32, dataOffset: u32, dataBytes: u32): HeaderError {
  if (type == EXT_BACKING_FORMAT) {
    if (!markSeen(SEEN_BACKING_FORMAT, type)) return HeaderError.EXTENSION_DUPLICATE;
    if (dataBytes > MAX_BACKING_FORMAT_NAME_BYTES) {
      walkDetail = dataBytes;
      return HeaderError.BACKING_FORMAT_TOO_LONG;
    }
    backingFormatOffset = dataOffset;
    backingFormatBytes = dataBytes;
    return HeaderError.NONE;
  }
  if (type == EXT_FEATURE_TABLE) {
    if (!markSeen(SEEN_FEATURE_TABLE, type)) return HeaderError.EXTENSION_DUPLICATE;
    featureTableOffset = dataOffset;
    featureCount = dataBytes / FEATURE_ENTRY_BYTES; // a partial last entry is ignored
    return HeaderError.NONE;
  }
  if (type == EXT_DATA_FILE) {
    if (!markSeen(SEEN_DATA_FILE, type)) return HeaderError.EXTENSION_DUPLICATE;
    dataFileOffset = dataOffset;
    dataFileBytes = dataBytes;
    return HeaderError.NONE;
  }
  if (type == EXT_CRYPTO_HEADER) {
    if (!markSeen(SEEN_CRYPTO_HEADER, type)) return HeaderError.EXTENSION_DUPLICATE;
    if (cryptMethod != CRYPT_LUKS) return HeaderError.CRYPTO_EXT_WITHOUT_LUKS;
  } else if (type == EXT_BITMAPS) {
    if (!markSeen(SEEN_BITMAPS, type)) return HeaderError.EXTENSION_DUPLICATE;
    const fault = checkBitmapsExtension(dataOffset, dataBytes);
    if (fault != HeaderError.NONE) return fault;
  } else {
    for (let i = 0; i < unknownExtensionCount; i++) {
      if (load<u32>(unknownExtensions + <usize>(i * UNKNOWN_EXTENSION_STRIDE)) == type) {
        walkDetail = type;
        return HeaderError.EXTENSION_DUPLICATE;
      }
    }
  }
  // Bitmaps, the encryption header and unknown types are not interpreted here: keep them.
  if (unknownExtensionCount == MAX_UNKNOWN_EXTENSIONS) {
    walkDetail = <u64>MAX_UNKNOWN_EXTENSIONS;
    return HeaderError.TOO_MANY_EXTENSIONS;
  }
  const record = unknownExtensions + <usize>(unknownExtensionCount * UNKNOWN_EXTENSION_STRIDE);
  store<u32>(record, type);
  store<u32>(record, dataOffset, 4);
  store<u32>(record, dataBytes, 8);
  unknownExtensionCount++;
  return HeaderError.NONE;
}

/** Sets `bit` in seenExtensions; false (detail: type) when it was already set. */
function markSeen(bit: u32, type: u32): bool {
  if ((seenExtensions & bit) != 0) {
    walkDetail = type;
    return false;
  }
  seenExtensions |= bit;
  return true;
}

/**
 * QEMU's checks of the bitmaps extension. Without autoclear bit 0 the bitmaps are stale and
 * only the length is checked (QEMU then ignores them; a writer clears the bit).
 */
function checkBitmapsExtension(dataOffset: u32, dataBytes: u32): HeaderError {
  if (dataBytes != BITMAPS_EXT_BYTES) {
    walkDetail = dataBytes;
    return HeaderError.BITMAPS_EXT_LENGTH;
  }
  if ((autoclearFeatures & AUTOCLEAR_BITMAPS) == 0) return HeaderError.NONE;
  const data = regionPtr + <usize>dataOffset;
  const bitmapCount = loadBE32(data);
  const directoryBytes = loadBE64(data + 8);
  const directoryOffset = loadBE64(data + 16);
  if (loadBE32(data + 4) != 0) return HeaderError.BITMAPS_EXT_RESERVED;
  if (bitmapCount > MAX_BITMAPS) {
    walkDetail = bitmapCount;
    return HeaderError.BITMAPS_TOO_MANY;
  }
  if (bitmapCount == 0) return HeaderError.BITMAPS_NONE;
  if ((directoryOffset & (clusterBytes - 1)) != 0) {
    walkDetail = directoryOffset;
    return HeaderError.BITMAPS_DIRECTORY_OFFSET;
  }
  if (directoryBytes > MAX_BITMAP_DIRECTORY_BYTES) {
    walkDetail = directoryBytes;
    return HeaderError.BITMAPS_DIRECTORY_TOO_LARGE;
  }
  if (directoryBytes == 0) return HeaderError.BITMAPS_DIRECTORY_EMPTY;
  return HeaderError.NONE;
}

// ---------------------------------------------------------------------------------------------
// Getters. Valid after parseHeader returned Status.OK. Host offsets and sizes are f64 (exact:
// parseHeader rejects anything beyond 2^53); u32 results reach JavaScript as signed i32, so
// TypeScript reads them with `>>> 0`. Offsets of names and extension data are host offsets
// inside cluster 0, which are also byte offsets into the HEADER region.
// ---------------------------------------------------------------------------------------------


/** 2 or 3. */
export function headerVersion(): u32 { return version; }
/** log2 of the cluster size, 9..21. */
export function headerClusterBits(): u32 { return clusterBits; }
/** Virtual disk size in bytes. */
export function headerVirtualSize(): f64 { return <f64>virtualSize; }
/** Entries of the active L1 table. */
export function headerL1Size(): u32 { return l1Size; }
/** Host offset of the active L1 table (cluster-aligned). */
export function headerL1TableOffset(): f64 { return <f64>l1TableOffset; }
/** Host offset of the refcount table (cluster-aligned). */
export function headerRefcountTableOffset(): f64 { return <f64>refcountTableOffset; }
/** Size of the refcount table in clusters (>= 1). */
export function headerRefcountTableClusters(): u32 { return refcountTableClusters; }
/** log2 of the refcount width in bits, 0..6 (4 for version 2). */
export function headerRefcountOrder(): u32 { return refcountOrder; }
/** Number of internal snapshots. */
export function headerSnapshotCount(): u32 { return snapshotCount; }
/** Host offset of the snapshot table (cluster-aligned). */
export function headerSnapshotsOffset(): f64 { return <f64>snapshotsOffset; }
/** header_length: 72 for version 2; bytes past 112 are unknown fields to keep. */
export function headerLengthBytes(): u32 { return headerLength; }
/** 0 = zlib (deflate), 1 = zstd. */
export function headerCompressionType(): u32 { return compressionType; }

export function headerIncompatibleFeaturesLow(): u32 { return <u32>incompatibleFeatures; }
export function headerIncompatibleFeaturesHigh(): u32 { return <u32>(incompatibleFeatures >> 32); }
export function headerCompatibleFeaturesLow(): u32 { return <u32>compatibleFeatures; }
export function headerCompatibleFeaturesHigh(): u32 { return <u32>(compatibleFeatures >> 32); }
export function headerAutoclearFeaturesLow(): u32 { return <u32>autoclearFeatures; }
export function headerAutoclearFeaturesHigh(): u32 { return <u32>(autoclearFeatures >> 32); }
/** Incompatible bits no spec defines (set after UNKNOWN_INCOMPATIBLE), low and high halves. */
export function headerUnknownIncompatibleLow(): u32 { return <u32>unknownIncompatible; }
export function headerUnknownIncompatibleHigh(): u32 { return <u32>(unknownIncompatible >> 32); }

/** Incompatible bit 0: refcounts may be stale. */
export function headerIsDirty(): bool { return (incompatibleFeatures & INCOMPAT_DIRTY) != 0; }
/** Incompatible bit 1: the image must not be written (except by a repair). */
export function headerIsCorrupt(): bool { return (incompatibleFeatures & INCOMPAT_CORRUPT) != 0; }
/** Compatible bit 0. */
export function headerHasLazyRefcounts(): bool { return (compatibleFeatures & COMPAT_LAZY_REFCOUNTS) != 0; }
/** Incompatible bit 4: 128-bit L2 entries with subclusters. */
export function headerHasExtendedL2(): bool { return (incompatibleFeatures & INCOMPAT_EXTL2) != 0; }
/** Incompatible bit 2: guest data lives in an external data file. */
export function headerHasExternalDataFile(): bool { return (incompatibleFeatures & INCOMPAT_DATA_FILE) != 0; }
/** Autoclear bit 1: the external data file reads as a raw image on its own. */
export function headerIsDataFileRaw(): bool { return (autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) != 0; }

/** Where the backing file name starts (0 = no backing file), and its length in bytes. */
export function headerBackingFileNameOffset(): u32 { return <u32>backingFileOffset; }
export function headerBackingFileNameBytes(): u32 { return backingFileBytes; }
/** Where the backing format name starts (0 = no backing format extension), and its length. */
export function headerBackingFormatOffset(): u32 { return backingFormatOffset; }
export function headerBackingFormatBytes(): u32 { return backingFormatBytes; }
/** Where the external data file name starts (0 = no data file extension), and its length. */
export function headerDataFileNameOffset(): u32 { return dataFileOffset; }
export function headerDataFileNameBytes(): u32 { return dataFileBytes; }

/** Where the feature name table's data starts (0 = none). Valid after OK and after UNKNOWN_INCOMPATIBLE. */
export function headerFeatureTableOffset(): u32 { return featureTableOffset; }
/** Entries in the feature name table. */
export function headerFeatureNameCount(): u32 { return featureCount; }
/** Entry `index`'s feature type (0 incompatible, 1 compatible, 2 autoclear), or -1 out of range. */
export function headerFeatureNameType(index: i32): i32 {
  return <u32>index < featureCount ? <i32>load<u8>(featureEntry(index)) : -1;
}
/** Entry `index`'s bit number (0..255 as stored; only 0..63 name real bits), or -1 out of range. */
export function headerFeatureNameBit(index: i32): i32 {
  return <u32>index < featureCount ? <i32>load<u8>(featureEntry(index) + 1) : -1;
}
/** Where entry `index`'s name starts (0 out of range). */
export function headerFeatureNameOffset(index: i32): u32 {
  return <u32>index < featureCount ? featureTableOffset + <u32>index * FEATURE_ENTRY_BYTES + 2 : 0;
}
/** Length of entry `index`'s name: up to its first NUL, at most 46 bytes (0 out of range). */
export function headerFeatureNameBytes(index: i32): u32 {
  if (<u32>index >= featureCount) return 0;
  const name = featureEntry(index) + 2;
  let length: u32 = 0;
  while (length < FEATURE_NAME_BYTES && load<u8>(name + <usize>length) != 0) length++;
  return length;
}

@inline function featureEntry(index: i32): usize {
  return regionPtr + <usize>featureTableOffset + <usize>(<u32>index * FEATURE_ENTRY_BYTES);
}

/** Extensions parseHeader does not interpret (unknown types, bitmaps), in file order, to write back. */
export function headerUnknownExtensionCount(): i32 { return unknownExtensionCount; }
/** Extension `index`'s type (0 out of range). */
export function headerUnknownExtensionType(index: i32): u32 { return unknownExtensionField(index, 0); }
/** Where extension `index`'s data starts (0 out of range). */
export function headerUnknownExtensionOffset(index: i32): u32 { return unknownExtensionField(index, 4); }
/** Length of extension `index`'s data in bytes, without padding (0 out of range). */
export function headerUnknownExtensionBytes(index: i32): u32 { return unknownExtensionField(index, 8); }

function unknownExtensionField(index: i32, fieldOffset: usize): u32 {
  if (<u32>index >= <u32>unknownExtensionCount) return 0;
  return load<u32>(unknownExtensions + <usize>(index * UNKNOWN_EXTENSION_STRIDE) + fieldOffset);
}
