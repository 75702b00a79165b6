// SPDX-License-Identifier: MIT
// The refusals of the header parser (header.ts): the reason and detail of the last failed
// check, and the status each reason comes with.

import { Status } from './status';

/**
 * Why parseHeader rejected an image: one member per check, with stable numbers. TypeScript turns
 * each into a message mirroring QEMU's (bindings/qcow2/qcow2-header.ts). The status each one comes with
 * is in brackets; "detail" is what headerErrorDetail() returns with it.
 */
export enum HeaderError {
  NONE = 0,
  /** [CORRUPT] The first four bytes are not the qcow2 magic, or the file is shorter. */
  BAD_MAGIC = 1,
  /** [CORRUPT] The file ends inside the header, an extension or the backing file name. Detail: bytes needed. */
  TRUNCATED = 2,
  /** [UNSUPPORTED] version is not 2 or 3. Detail: version. */
  UNSUPPORTED_VERSION = 3,
  /** [CORRUPT] cluster_bits < 9, or too large to address a second cluster. Detail: cluster_bits. */
  CLUSTER_BITS_INVALID = 4,
  /** [UNSUPPORTED] cluster_bits 22..55: valid, but QEMU's (and our) limit is 2 MiB. Detail: cluster_bits. */
  CLUSTER_BITS_UNSUPPORTED = 5,
  /** [CORRUPT] A version 3 header_length below 104. Detail: header_length. */
  HEADER_TOO_SHORT = 6,
  /** [CORRUPT] header_length is not a multiple of 8 (the spec requires it; QEMU does not check). Detail: header_length. */
  HEADER_LENGTH_UNALIGNED = 7,
  /** [CORRUPT] header_length exceeds the cluster size. Detail: header_length. */
  HEADER_EXCEEDS_CLUSTER = 8,
  /** [UNSUPPORTED] header_length exceeds the HEADER region (clusters above 64 KiB). Detail: header_length. */
  HEADER_PAST_REGION = 9,
  /** [CORRUPT] backing_file_offset lies beyond the first cluster. Detail: the offset. */
  BACKING_OFFSET_INVALID = 10,
  /** [UNSUPPORTED] compression_type is neither zlib (0) nor zstd (1). Detail: the type. */
  COMPRESSION_TYPE_UNKNOWN = 11,
  /** [CORRUPT] compression_type is not zlib but incompatible bit 3 is clear. Detail: the type. */
  COMPRESSION_BIT_MISSING = 12,
  /** [CORRUPT] compression_type is zlib but incompatible bit 3 is set. */
  COMPRESSION_BIT_UNEXPECTED = 13,
  /** [UNSUPPORTED] Incompatible bits the spec does not define are set: see headerUnknownIncompatible*. */
  UNKNOWN_INCOMPATIBLE = 14,
  /** [CORRUPT] refcount_order > 6. Detail: refcount_order. */
  REFCOUNT_ORDER_TOO_LARGE = 15,
  /** [CORRUPT] crypt_method > 2. Detail: crypt_method. */
  ENCRYPTION_METHOD_INVALID = 16,
  /** [UNSUPPORTED] The image is encrypted (AES or LUKS). Detail: crypt_method. */
  ENCRYPTED = 17,
  /** [CORRUPT] Extended L2 with subclusters below 512 bytes (cluster_bits < 14). Detail: subcluster bytes. */
  SUBCLUSTER_TOO_SMALL = 18,
  /** [CORRUPT] refcount_table_clusters is 0. */
  NO_REFCOUNT_TABLE = 19,
  /** [CORRUPT] The refcount table is larger than 8 MiB. Detail: refcount_table_clusters. */
  REFCOUNT_TABLE_TOO_LARGE = 20,
  /** [CORRUPT] The refcount table offset is misaligned or the table ends past INT64_MAX. Detail: the offset. */
  REFCOUNT_TABLE_OFFSET_INVALID = 21,
  /** [CORRUPT] More than 65536 snapshots. Detail: nb_snapshots. */
  SNAPSHOT_TABLE_TOO_LARGE = 22,
  /** [CORRUPT] The snapshot table offset is misaligned or the table ends past INT64_MAX. Detail: the offset. */
  SNAPSHOT_TABLE_OFFSET_INVALID = 23,
  /** [CORRUPT] The active L1 table is larger than 32 MiB. Detail: l1_size. */
  L1_TOO_LARGE = 24,
  /** [CORRUPT] The L1 table offset is misaligned or the table ends past INT64_MAX. Detail: the offset. */
  L1_OFFSET_INVALID = 25,
  /** [CORRUPT] The L1 index of the end of the disk exceeds INT_MAX. Detail: the virtual size. */
  IMAGE_TOO_BIG = 26,
  /** [CORRUPT] l1_size cannot map the virtual size. Detail: entries needed. */
  L1_TOO_SMALL = 27,
  /** [UNSUPPORTED] The virtual size exceeds 2^53 bytes. Detail: the virtual size. */
  VIRTUAL_SIZE_UNSUPPORTED = 28,
  /** [UNSUPPORTED] The L1, refcount or snapshot table reaches past 2^53 bytes. Detail: its offset. */
  TABLE_BEYOND_2_53 = 29,
  /** [CORRUPT] An extension's data runs past the extension area. Detail: its type. */
  EXTENSION_TOO_LARGE = 30,
  /** [CORRUPT] An extension type appears twice (the spec allows each at most once). Detail: its type. */
  EXTENSION_DUPLICATE = 31,
  /** [UNSUPPORTED] The extension area continues past the HEADER region (clusters above 64 KiB). Detail: bytes needed. */
  EXTENSIONS_PAST_REGION = 32,
  /** [UNSUPPORTED] More unknown extensions than MAX_UNKNOWN_EXTENSIONS. Detail: that limit. */
  TOO_MANY_EXTENSIONS = 33,
  /** [CORRUPT] The backing format name is 16 bytes or longer. Detail: its length. */
  BACKING_FORMAT_TOO_LONG = 34,
  /** [CORRUPT] A full-disk-encryption extension in an image not encrypted with LUKS. */
  CRYPTO_EXT_WITHOUT_LUKS = 35,
  /** [CORRUPT] The bitmaps extension is not 24 bytes. Detail: its length. */
  BITMAPS_EXT_LENGTH = 36,
  /** [CORRUPT] The bitmaps extension's reserved field is not zero. */
  BITMAPS_EXT_RESERVED = 37,
  /** [CORRUPT] More than 65535 bitmaps. Detail: nb_bitmaps. */
  BITMAPS_TOO_MANY = 38,
  /** [CORRUPT] A bitmaps extension with zero bitmaps. */
  BITMAPS_NONE = 39,
  /** [CORRUPT] The bitmap directory offset is not cluster-aligned. Detail: the offset. */
  BITMAPS_DIRECTORY_OFFSET = 40,
  /** [CORRUPT] The bitmap directory is larger than 1024 * 65535 bytes. Detail: its size. */
  BITMAPS_DIRECTORY_TOO_LARGE = 41,
  /** [CORRUPT] The bitmap directory size is zero. */
  BITMAPS_DIRECTORY_EMPTY = 42,
  /** [CORRUPT] Autoclear bit data-file-raw without the external data file bit. */
  DATA_FILE_RAW_WITHOUT_DATA_FILE = 43,
  /** [CORRUPT] The backing file name is longer than 1023 bytes or leaves the first cluster. Detail: its length. */
  BACKING_NAME_TOO_LONG = 44,
  /** [UNSUPPORTED] The backing file name lies past the HEADER region. Detail: bytes needed. */
  BACKING_NAME_PAST_REGION = 45,
}

let errorReason: HeaderError = HeaderError.NONE;
let errorDetail: u64 = 0;

/** Clears the last refusal (a parse begins). */
export function resetHeaderError(): void {
  errorReason = HeaderError.NONE;
  errorDetail = 0;
}

/** Records a failed check and returns the status that goes with it. */
export function fail(reason: HeaderError, detail: u64): i32 {
  errorReason = reason;
  errorDetail = detail;
  switch (reason) {
    case HeaderError.UNSUPPORTED_VERSION:
    case HeaderError.CLUSTER_BITS_UNSUPPORTED:
    case HeaderError.HEADER_PAST_REGION:
    case HeaderError.COMPRESSION_TYPE_UNKNOWN:
    case HeaderError.UNKNOWN_INCOMPATIBLE:
    case HeaderError.ENCRYPTED:
    case HeaderError.VIRTUAL_SIZE_UNSUPPORTED:
    case HeaderError.TABLE_BEYOND_2_53:
    case HeaderError.EXTENSIONS_PAST_REGION:
    case HeaderError.TOO_MANY_EXTENSIONS:
    case HeaderError.BACKING_NAME_PAST_REGION:
      return Status.UNSUPPORTED;
    default:
      return Status.CORRUPT;
  }
}

/** Which check failed (HeaderError.NONE after success). */
export function headerErrorReason(): i32 { return errorReason; }
/** The number the failed check's message needs (see HeaderError); 0 when it needs none. */
export function headerErrorDetail(): f64 { return <f64>errorDetail; }
/** The low and high 32 bits of the detail, for messages that print a 64-bit value exactly. */
export function headerErrorDetailLow(): u32 { return <u32>errorDetail; }
export function headerErrorDetailHigh(): u32 { return <u32>(errorDetail >> 32); }
