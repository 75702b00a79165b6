// SPDX-License-Identifier: MIT
// qcow2 on-disk constants (qcow2 spec, docs/interop/qcow2.rst; QEMU's limits from block/qcow2.h)
// and big-endian field loaders. Constants and one-line helpers only: no state, no validation.
// Names keep the spec's and QEMU's vocabulary so readers can cross-reference.

// ---------------------------------------------------------------------------------------------
// Header (qcow2 spec, "Header"). Byte offsets of the fields from the start of the file.
// ---------------------------------------------------------------------------------------------

/** "QFI\xfb", the first four bytes of every qcow2 image (big-endian u32). */
export const QCOW_MAGIC: u32 = 0x514649fb;

/**
 * Byte offsets of the header fields from the start of the file, exported so every TypeScript
 * file that patches a header field names it from here.
 */
export enum HeaderField {
  MAGIC = 0, // u32
  VERSION = 4, // u32: 2 or 3
  BACKING_FILE_OFFSET = 8, // u64: host offset of the name, 0 = none
  BACKING_FILE_SIZE = 16, // u32: name length in bytes, no NUL
  CLUSTER_BITS = 20, // u32
  SIZE = 24, // u64: virtual disk size in bytes
  CRYPT_METHOD = 32, // u32: CRYPT_*
  L1_SIZE = 36, // u32: active L1 entries
  L1_TABLE_OFFSET = 40, // u64: host offset, cluster-aligned
  REFCOUNT_TABLE_OFFSET = 48, // u64: host offset, cluster-aligned
  REFCOUNT_TABLE_CLUSTERS = 56, // u32
  NB_SNAPSHOTS = 60, // u32
  SNAPSHOTS_OFFSET = 64, // u64: host offset, cluster-aligned
  // Version 3 only (a version 2 header ends at byte 72):
  INCOMPATIBLE_FEATURES = 72, // u64
  COMPATIBLE_FEATURES = 80, // u64
  AUTOCLEAR_FEATURES = 88, // u64
  REFCOUNT_ORDER = 96, // u32: refcount_bits = 1 << order
  HEADER_LENGTH = 100, // u32
  // Optional (present when header_length > the field's offset; an explicit 0 means absent):
  COMPRESSION_TYPE = 104, // u8: COMPRESSION_*
}

/** Bytes of a version 2 header; its extensions start right after. */
export const V2_HEADER_BYTES: u32 = 72;
/** Smallest header_length a version 3 header may have. */
export const V3_MIN_HEADER_BYTES: u32 = 104;
/** The header_length QEMU writes (104 bytes of fields, compression_type, 7 bytes of padding). */
export const V3_HEADER_BYTES: u32 = 112;

// ---------------------------------------------------------------------------------------------
// Feature bits (qcow2 spec, header bytes 72-95).
// ---------------------------------------------------------------------------------------------

/** Incompatible bit 0: refcounts may be stale (lazy refcounts); repair before writing. */
export const INCOMPAT_DIRTY: u64 = 1 << 0;
/** Incompatible bit 1: any structure may be corrupt; never write except to repair. */
export const INCOMPAT_CORRUPT: u64 = 1 << 1;
/** Incompatible bit 2: guest data lives in an external data file (extension EXT_DATA_FILE). */
export const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/** Incompatible bit 3: set if and only if compression_type is not zlib. */
export const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/** Incompatible bit 4: 128-bit L2 entries with 32 subclusters per cluster. */
export const INCOMPAT_EXTL2: u64 = 1 << 4;
/** Every incompatible bit the spec defines; a reader must refuse any other. */
export const INCOMPAT_KNOWN_MASK: u64 = 0x1f;

/** Compatible bit 0: refcount updates may be deferred while the dirty bit is set. */
export const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;

/** Autoclear bit 0: the bitmaps extension is consistent. */
export const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
/** Autoclear bit 1: the external data file is a valid raw image on its own. */
export const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

export const CRYPT_NONE: u32 = 0;
export const CRYPT_AES: u32 = 1;
export const CRYPT_LUKS: u32 = 2;

/** The header's compression_type values. */
export enum CompressionType {
  /** Raw deflate with a 4 KiB window (QEMU calls it zlib). */
  ZLIB = 0,
  ZSTD = 1,
}

// ---------------------------------------------------------------------------------------------
// Header extensions (qcow2 spec, "Header extensions"): u32 type, u32 length, data, padding to 8.
// ---------------------------------------------------------------------------------------------

export const EXT_HEADER_BYTES: u32 = 8;
export const EXT_END: u32 = 0x00000000;
export const EXT_BACKING_FORMAT: u32 = 0xe2792aca;
export const EXT_FEATURE_TABLE: u32 = 0x6803f857;
export const EXT_BITMAPS: u32 = 0x23852875;
export const EXT_CRYPTO_HEADER: u32 = 0x0537be77;
export const EXT_DATA_FILE: u32 = 0x44415441; // "DATA"

/** Feature name table entry: u8 type, u8 bit number, 46 bytes of name padded with zeros. */
export const FEATURE_ENTRY_BYTES: u32 = 48;
export const FEATURE_NAME_BYTES: u32 = 46;
/** The type byte of a feature name table entry: which feature bits its bit number names. */
export enum FeatureType {
  INCOMPATIBLE = 0,
  COMPATIBLE = 1,
  AUTOCLEAR = 2,
}

/** Bitmaps extension: u32 nb_bitmaps, u32 reserved, u64 directory size, u64 directory offset. */
export const BITMAPS_EXT_BYTES: u32 = 24;
export const MAX_BITMAPS: u32 = 65535;
export const MAX_BITMAP_DIRECTORY_BYTES: u64 = 1024 * 65535;

// ---------------------------------------------------------------------------------------------
// Tables (qcow2 spec, "Cluster mapping", "Host cluster management").
// ---------------------------------------------------------------------------------------------

export const L1E_BYTES: u32 = 8;
export const L2E_BYTES: u32 = 8;
/** An extended L2 entry: the standard entry, then the subcluster bitmap. */
export const L2E_EXTENDED_BYTES: u32 = 16;
export const REFTABLE_ENTRY_BYTES: u32 = 8;
/** Fixed part of a snapshot table entry (id, name and extra data follow). */
export const SNAPSHOT_HEADER_BYTES: u32 = 40;
// Snapshot table entry fields (qcow2 spec, "Snapshots"): byte offsets from the entry's start.
export const SNAP_L1_TABLE_OFFSET: u32 = 0; // u64: host offset of the snapshot's L1 table
export const SNAP_L1_SIZE: u32 = 8; // u32: its entries
export const SNAP_ID_SIZE: u32 = 12; // u16: bytes of the id string
export const SNAP_NAME_SIZE: u32 = 14; // u16: bytes of the name
export const SNAP_DATE_SECONDS: u32 = 16; // u32
export const SNAP_DATE_NANOSECONDS: u32 = 20; // u32
export const SNAP_VM_CLOCK_NANOSECONDS: u32 = 24; // u64
export const SNAP_VM_STATE_SIZE: u32 = 32; // u32: bytes of saved VM state
export const SNAP_EXTRA_DATA_SIZE: u32 = 36; // u32: bytes of extra data after the fixed part
// Extra data fields, present when the extra data is long enough (offsets from the entry's start):
export const SNAP_EXTRA_VM_STATE_SIZE: u32 = 40; // u64
export const SNAP_EXTRA_DISK_SIZE: u32 = 48; // u64: virtual disk size at the snapshot
export const SNAP_EXTRA_ICOUNT: u32 = 56; // u64
export const SUBCLUSTERS_PER_CLUSTER: u32 = 32;

/** L1 entry bits 9-55: host offset of the L2 table. */
export const L1E_OFFSET_MASK: u64 = 0x00fffffffffffe00;
/** L1 entry bits that must be zero. */
export const L1E_RESERVED_MASK: u64 = 0x7f000000000001ff;
/** Standard L2 entry bits 9-55: host offset of the data cluster. */
export const L2E_OFFSET_MASK: u64 = 0x00fffffffffffe00;
/** Standard L2 entry bits that must be zero. */
export const L2E_STD_RESERVED_MASK: u64 = 0x3f000000000001fe;
/** L1/L2 bit 63: the refcount is exactly 1 (writable in place). Never set on compressed entries. */
export const QCOW_OFLAG_COPIED: u64 = 1 << 63;
/** L2 bit 62: a compressed cluster descriptor. */
export const QCOW_OFLAG_COMPRESSED: u64 = 1 << 62;
/** L2 bit 0: the cluster reads as zeros (version 3 without extended L2). */
export const QCOW_OFLAG_ZERO: u64 = 1 << 0;
/** Extended L2 bitmap: bits 0-31 allocated subclusters, bits 32-63 zero subclusters. */
export const L2_BITMAP_ALLOC_MASK: u64 = 0x00000000ffffffff;
export const L2_BITMAP_ZERO_MASK: u64 = 0xffffffff00000000;

/** Refcount table entry bits 9-63: host offset of the refcount block. */
export const REFT_OFFSET_MASK: u64 = 0xfffffffffffffe00;
/** Refcount table entry bits that must be zero. */
export const REFT_RESERVED_MASK: u64 = 0x00000000000001ff;

// ---------------------------------------------------------------------------------------------
// Limits QEMU enforces when it opens an image (block/qcow2.h; checked by assembly/header.ts).
// ---------------------------------------------------------------------------------------------

export const MIN_CLUSTER_BITS: u32 = 9;
export const MAX_CLUSTER_BITS: u32 = 21;
/** Largest cluster_bits that leaves room for a second cluster below 2^56 (L2 offsets are bits 9-55). */
export const MAX_SPEC_CLUSTER_BITS: u32 = 55;
/** Subclusters must be at least 512 bytes, so extended L2 needs cluster_bits >= 14. */
export const MIN_EXTL2_CLUSTER_BITS: u32 = 14;
export const MAX_REFCOUNT_ORDER: u32 = 6;
/** Version 2 images always use 16-bit refcounts. */
export const V2_REFCOUNT_ORDER: u32 = 4;
/** QCOW_MAX_L1_SIZE: the active L1 table may take at most 32 MiB (4 Mi entries). */
export const MAX_L1_BYTES: u64 = 32 * 1024 * 1024;
/** QCOW_MAX_REFTABLE_SIZE: the refcount table may take at most 8 MiB. */
export const MAX_REFTABLE_BYTES: u64 = 8 * 1024 * 1024;
export const MAX_SNAPSHOTS: u32 = 65536;
/** Most extra data bytes a snapshot table entry may carry. */
export const MAX_SNAPSHOT_EXTRA_DATA_BYTES: u32 = 1024;
export const MAX_BACKING_FILE_NAME_BYTES: u32 = 1023;
/** QEMU keeps the backing format in 16 bytes with a NUL, so the name has at most 15. */
export const MAX_BACKING_FORMAT_NAME_BYTES: u32 = 15;
/** The L1 index of the first byte past the disk (l1_vm_state_index) must fit a C int. */
export const MAX_L1_VM_STATE_INDEX: u64 = 0x7fffffff;
/** Tables must end at or below INT64_MAX (QEMU passes offsets as int64_t). */
export const MAX_TABLE_END: u64 = 0x7fffffffffffffff;
/** 2^53: the largest byte position an f64 holds exactly, and so the largest that crosses to TS. */
export const MAX_EXACT_POSITION: u64 = 1 << 53;

// ---------------------------------------------------------------------------------------------
// Big-endian loads and stores (every qcow2 integer is big-endian; wasm is little-endian).
// ---------------------------------------------------------------------------------------------

/** Reads a big-endian u64 at linear-memory address `ptr` (any alignment). */
@inline export function loadBE64(ptr: usize): u64 {
  return bswap<u64>(load<u64>(ptr));
}

/** Reads a big-endian u32 at linear-memory address `ptr` (any alignment). */
@inline export function loadBE32(ptr: usize): u32 {
  return bswap<u32>(load<u32>(ptr));
}

/** Reads a big-endian u16 at linear-memory address `ptr` (any alignment). */
@inline export function loadBE16(ptr: usize): u16 {
  return bswap<u16>(load<u16>(ptr));
}

/** Writes `value` as a big-endian u64 at linear-memory address `ptr`. */
@inline export function storeBE64(ptr: usize, value: u64): void {
  store<u64>(ptr, bswap<u64>(value));
}

/** Writes `value` as a big-endian u32 at linear-memory address `ptr`. */
@inline export function storeBE32(ptr: usize, value: u32): void {
  store<u32>(ptr, bswap<u32>(value));
}

/** Writes `value` as a big-endian u16 at linear-memory address `ptr`. */
@inline export function storeBE16(ptr: usize, value: u16): void {
  store<u16>(ptr, bswap<u16>(value));
}

// Compressed cluster descriptor (qcow2 spec, "Compressed Clusters Descriptor"): with
// x = 62 - (cluster_bits - 8), bits 0..x-1 hold the host byte offset and bits x..61 the number
// of 512-byte sectors after the first.

/** Host byte offset of the compressed data an L2 entry describes. */
@inline export function compressedHostOffset(entry: u64, clusterBits: u32): u64 {
  return entry & ((<u64>1 << (62 - (clusterBits - 8))) - 1);
}

/** 512-byte sectors (counting the first, partial one) the compressed data spans. */
@inline export function compressedSectorCount(entry: u64, clusterBits: u32): u64 {
  return ((entry >> (62 - (clusterBits - 8))) & ((<u64>1 << (clusterBits - 8)) - 1)) + 1;
}
