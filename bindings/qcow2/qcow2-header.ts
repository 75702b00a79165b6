// SPDX-License-Identifier: MIT
// TypeScript face of the wasm header parser (assembly/header.ts): copies an image's first bytes
// into the HEADER region, runs parseHeader, and returns a typed Qcow2Header, or throws an
// ImageError whose message mirrors QEMU's. Wasm reads every field; this file only decodes names.

import {
  byteRegion, enumNames, regionBounds, type CoreExports, type CoreInstance, CompressionType, FeatureType, HeaderError, Region, Status,
} from '../core/wasm.js';
import { ImageError, type ErrorCode } from '../base/errors.js';

/** An entry of the image's feature name table. */
export interface Qcow2FeatureName {
  type: 'incompatible' | 'compatible' | 'autoclear';
  /** Bit number, 0..63. */
  bit: number;
  name: string;
}

/** A header extension the parser does not interpret (unknown type, bitmaps), kept to write back. */
export interface Qcow2UnknownExtension {
  type: number;
  /** The extension's data without padding (a copy). */
  data: Uint8Array;
}

/** A parsed, validated qcow2 header. Offsets are host byte offsets in the image file. */
export interface Qcow2Header {
  version: 2 | 3;
  clusterBits: number;
  clusterSize: number;
  /** Guest-visible size in bytes. */
  virtualSize: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  /** refcount bits = 2 ** refcountOrder. */
  refcountOrder: number;
  snapshotCount: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  compressionType: 'zlib' | 'zstd';
  /** header_length (72 for version 2). Bytes from 112 up to it are unknown fields to keep. */
  headerLength: number;
  /** Untrusted: never resolve it without the embedder's consent. */
  backingFile?: string;
  backingFormat?: string;
  /** Untrusted, like backingFile. Only set when the external data file bit is. */
  dataFile?: string;
  featureNames: Qcow2FeatureName[];
  unknownExtensions: Qcow2UnknownExtension[];
  flags: {
    dirty: boolean;
    corrupt: boolean;
    lazyRefcounts: boolean;
    extendedL2: boolean;
    externalDataFile: boolean;
    dataFileRaw: boolean;
  };
}

/** What a message needs besides the reason. */
interface MessageContext {
  detail: number;
  /** The detail as the 64-bit value it is, for messages that print offsets and sizes. */
  exactDetail: bigint;
  fileSize: number;
  regionBytes: number;
  /** Names from the feature table and the unknown incompatible bits (UNKNOWN_INCOMPATIBLE only). */
  unsupportedFeatures: () => string;
}

const hex = (n: number): string => `0x${(n >>> 0).toString(16).padStart(8, '0')}`;

// One message per HeaderError member (assembly/header.ts), worded as QEMU 7.2 words the same
// check where it has one (checked against qemu-io's output), else in the same style.
const MESSAGES = {
  BAD_MAGIC: () => 'Image is not in qcow2 format',
  TRUNCATED: (c: MessageContext) => `qcow2 header truncated: the file has ${c.fileSize} bytes, the header needs ${c.detail}`,
  UNSUPPORTED_VERSION: (c: MessageContext) => `Unsupported qcow2 version ${c.detail}`,
  CLUSTER_BITS_INVALID: (c: MessageContext) => `Unsupported cluster size: 2^${c.detail}`,
  CLUSTER_BITS_UNSUPPORTED: (c: MessageContext) => `Unsupported cluster size: 2^${c.detail}`,
  HEADER_TOO_SHORT: () => 'qcow2 header too short',
  HEADER_LENGTH_UNALIGNED: (c: MessageContext) => `qcow2 header length ${c.detail} is not a multiple of 8`,
  HEADER_EXCEEDS_CLUSTER: () => 'qcow2 header exceeds cluster size',
  HEADER_PAST_REGION: (c: MessageContext) =>
    `qcow2 header length ${c.detail} exceeds the ${c.regionBytes} bytes of cluster 0 this engine reads`,
  BACKING_OFFSET_INVALID: () => 'Invalid backing file offset',
  COMPRESSION_TYPE_UNKNOWN: (c: MessageContext) => `qcow2: unknown compression type: ${c.detail}`,
  COMPRESSION_BIT_MISSING: () => 'qcow2: Compression type incompatible feature bit must be set',
  COMPRESSION_BIT_UNEXPECTED: () => 'qcow2: Compression type incompatible feature bit must not be set',
  UNKNOWN_INCOMPATIBLE: (c: MessageContext) => `Unsupported qcow2 feature(s): ${c.unsupportedFeatures()}`,
  REFCOUNT_ORDER_TOO_LARGE: () => 'Reference count entry width too large; may not exceed 64 bits',
  ENCRYPTION_METHOD_INVALID: (c: MessageContext) => `Unsupported encryption method ${c.detail}`,
  ENCRYPTED: (c: MessageContext) =>
    `Encrypted qcow2 images are not supported (encryption method ${c.detail === 1 ? 'aes' : 'luks'})`,
  SUBCLUSTER_TOO_SMALL: (c: MessageContext) => `Unsupported subcluster size: ${c.detail}`,
  NO_REFCOUNT_TABLE: () => 'Image does not contain a reference count table',
  REFCOUNT_TABLE_TOO_LARGE: () => 'Reference count table too large',
  REFCOUNT_TABLE_OFFSET_INVALID: () => 'Reference count table offset invalid',
  SNAPSHOT_TABLE_TOO_LARGE: () => 'Snapshot table too large',
  SNAPSHOT_TABLE_OFFSET_INVALID: () => 'Snapshot table offset invalid',
  L1_TOO_LARGE: () => 'Active L1 table too large',
  L1_OFFSET_INVALID: () => 'Active L1 table offset invalid',
  IMAGE_TOO_BIG: () => 'Image is too big',
  L1_TOO_SMALL: () => 'L1 table is too small',
  VIRTUAL_SIZE_UNSUPPORTED: (c: MessageContext) =>
    `Virtual size ${c.exactDetail} exceeds 2^53 bytes, the largest this engine addresses`,
  TABLE_BEYOND_2_53: (c: MessageContext) =>
    `A metadata table at host offset ${c.exactDetail} reaches past 2^53 bytes, the largest this engine addresses`,
  EXTENSION_TOO_LARGE: () => 'Header extension too large',
  EXTENSION_DUPLICATE: (c: MessageContext) => `Header extension ${hex(c.detail)} appears more than once`,
  EXTENSIONS_PAST_REGION: (c: MessageContext) =>
    `qcow2 header extensions continue past the ${c.regionBytes} bytes of cluster 0 this engine reads`,
  TOO_MANY_EXTENSIONS: (c: MessageContext) => `More than ${c.detail} unknown qcow2 header extensions`,
  BACKING_FORMAT_TOO_LONG: (c: MessageContext) => `ERROR: ext_backing_format: len=${c.detail} too large (>=16)`,
  CRYPTO_EXT_WITHOUT_LUKS: () => 'CRYPTO header extension only expected with LUKS encryption method',
  BITMAPS_EXT_LENGTH: () => 'bitmaps_ext: Invalid extension length',
  BITMAPS_EXT_RESERVED: () => 'bitmaps_ext: Reserved field is not zero',
  BITMAPS_TOO_MANY: (c: MessageContext) =>
    `bitmaps_ext: Image has ${c.detail} bitmaps, exceeding the QEMU supported maximum of 65535`,
  BITMAPS_NONE: () => 'found bitmaps extension with zero bitmaps',
  BITMAPS_DIRECTORY_OFFSET: () => 'bitmaps_ext: invalid bitmap directory offset',
  BITMAPS_DIRECTORY_TOO_LARGE: (c: MessageContext) =>
    `bitmaps_ext: bitmap directory size (${c.exactDetail}) exceeds the maximum supported size (67107840)`,
  BITMAPS_DIRECTORY_EMPTY: () => 'Requested bitmap directory size is zero',
  DATA_FILE_RAW_WITHOUT_DATA_FILE: () => 'data-file-raw requires a data file',
  BACKING_NAME_TOO_LONG: () => 'Backing file name too long',
  BACKING_NAME_PAST_REGION: (c: MessageContext) =>
    `The backing file name ends at byte ${c.detail}, past the ${c.regionBytes} bytes of cluster 0 this engine reads`,
} satisfies Record<Exclude<keyof typeof HeaderError, 'NONE'>, (c: MessageContext) => string>;

/** Stable names of the header checks (assembly/header.ts, enum HeaderError). */
export type HeaderErrorReason = keyof typeof MESSAGES;

/** A header that failed a check: `reason` names the check, `code` says corrupt or unsupported. */
export class Qcow2HeaderError extends ImageError {
  /** Which check failed. */
  readonly reason: HeaderErrorReason;

  constructor(code: ErrorCode, reason: HeaderErrorReason, message: string) {
    super(code, message);
    this.reason = reason;
  }
}

const HEADER_REASONS = enumNames(HeaderError);

/**
 * How many of the image file's first bytes parseQcow2Header needs: min(fileSize, the HEADER
 * region's size, 64 KiB).
 */
export function qcow2HeaderBytesNeeded(core: CoreInstance, fileSize: number): number {
  return Math.min(fileSize, regionBounds(core, Region.HEADER).bytes);
}

/**
 * Parses and validates a qcow2 header in wasm.
 *
 * `headerBytes` holds the image file's first bytes, at least qcow2HeaderBytesNeeded(fileSize)
 * of them (more are ignored); `fileSize` is the file's size in bytes. Overwrites the core's
 * HEADER region. Throws:
 * - Qcow2HeaderError QCOW2_CORRUPT: the header is invalid (QEMU would refuse it, or it breaks
 *   the spec);
 * - Qcow2HeaderError QCOW2_UNSUPPORTED_FEATURE: valid, but uses something this engine lacks
 *   (encryption, unknown incompatible features, clusters above 2 MiB, ...);
 * - Qcow2HeaderError IMAGE_FORMAT_UNKNOWN: the file is not a qcow2 image (bad magic);
 * - ImageError INVALID_ARGUMENT: `fileSize` is not a byte count or `headerBytes` is too short.
 * `reason` names the failed check; the message mirrors QEMU 7.2's for the same check.
 */
export function parseQcow2Header(core: CoreInstance, headerBytes: Uint8Array, fileSize: number): Qcow2Header {
  if (!Number.isSafeInteger(fileSize) || fileSize < 0) {
    throw new ImageError('INVALID_ARGUMENT', `file size ${fileSize} is not a byte count`);
  }
  const x = core.exports;
  const region = byteRegion(core, Region.HEADER);
  const byteCount = Math.min(fileSize, region.byteLength);
  if (headerBytes.length < byteCount) {
    throw new ImageError('INVALID_ARGUMENT', `the header needs the file's first ${byteCount} bytes, got ${headerBytes.length}`);
  }
  region.set(headerBytes.subarray(0, byteCount));

  const status = x.parseHeader(byteCount, fileSize);
  if (status !== Status.OK) throw headerError(x, region, status, fileSize);

  const u32 = (n: number) => n >>> 0;
  const u64 = (low: number, high: number) => (BigInt(high >>> 0) << 32n) | BigInt(low >>> 0);
  const name = (offset: number, length: number) => decodeName(region, u32(offset), u32(length));
  const clusterBits = u32(x.headerClusterBits());
  const header: Qcow2Header = {
    version: u32(x.headerVersion()) === 2 ? 2 : 3,
    clusterBits,
    clusterSize: 2 ** clusterBits,
    virtualSize: x.headerVirtualSize(),
    l1Size: u32(x.headerL1Size()),
    l1TableOffset: x.headerL1TableOffset(),
    refcountTableOffset: x.headerRefcountTableOffset(),
    refcountTableClusters: u32(x.headerRefcountTableClusters()),
    refcountOrder: u32(x.headerRefcountOrder()),
    snapshotCount: u32(x.headerSnapshotCount()),
    snapshotsOffset: x.headerSnapshotsOffset(),
    incompatibleFeatures: u64(x.headerIncompatibleFeaturesLow(), x.headerIncompatibleFeaturesHigh()),
    compatibleFeatures: u64(x.headerCompatibleFeaturesLow(), x.headerCompatibleFeaturesHigh()),
    autoclearFeatures: u64(x.headerAutoclearFeaturesLow(), x.headerAutoclearFeaturesHigh()),
    compressionType: x.headerCompressionType() === CompressionType.ZSTD ? 'zstd' : 'zlib',
    headerLength: u32(x.headerLengthBytes()),
    featureNames: readFeatureNames(x, region),
    unknownExtensions: [],
    flags: {
      dirty: x.headerIsDirty() !== 0,
      corrupt: x.headerIsCorrupt() !== 0,
      lazyRefcounts: x.headerHasLazyRefcounts() !== 0,
      extendedL2: x.headerHasExtendedL2() !== 0,
      externalDataFile: x.headerHasExternalDataFile() !== 0,
      dataFileRaw: x.headerIsDataFileRaw() !== 0,
    },
  };
  // Like QEMU, an empty name means none, and a name ends at its first NUL.
  const backingFile = name(x.headerBackingFileNameOffset(), x.headerBackingFileNameBytes());
  if (backingFile) header.backingFile = backingFile;
  const backingFormat = name(x.headerBackingFormatOffset(), x.headerBackingFormatBytes());
  if (backingFormat) header.backingFormat = backingFormat;
  // QEMU ignores a data file name unless the external data file bit is set.
  const dataFile = name(x.headerDataFileNameOffset(), x.headerDataFileNameBytes());
  if (dataFile && header.flags.externalDataFile) header.dataFile = dataFile;
  const extensionCount = x.headerUnknownExtensionCount();
  for (let i = 0; i < extensionCount; i++) {
    const at = u32(x.headerUnknownExtensionOffset(i));
    header.unknownExtensions.push({
      type: u32(x.headerUnknownExtensionType(i)),
      data: region.slice(at, at + u32(x.headerUnknownExtensionBytes(i))),
    });
  }
  return header;
}

const FEATURE_TYPES: Readonly<Record<number, Qcow2FeatureName['type']>> = {
  [FeatureType.INCOMPATIBLE]: 'incompatible', [FeatureType.COMPATIBLE]: 'compatible', [FeatureType.AUTOCLEAR]: 'autoclear',
} satisfies Record<FeatureType, Qcow2FeatureName['type']>;

/** The feature name table's entries with a known type and a name, in table order. */
function readFeatureNames(x: CoreExports, region: Uint8Array): Qcow2FeatureName[] {
  const names: Qcow2FeatureName[] = [];
  const count = x.headerFeatureNameCount() >>> 0;
  for (let i = 0; i < count; i++) {
    const type = FEATURE_TYPES[x.headerFeatureNameType(i)];
    const bit = x.headerFeatureNameBit(i);
    const name = decodeName(region, x.headerFeatureNameOffset(i) >>> 0, x.headerFeatureNameBytes(i) >>> 0);
    if (type !== undefined && bit < 64 && name) names.push({ type, bit, name });
  }
  return names;
}

const utf8 = new TextDecoder('utf-8');

/** The name stored at [offset, offset + length) of the region, cut at its first NUL. */
function decodeName(region: Uint8Array, offset: number, length: number): string {
  if (offset === 0 || length === 0) return '';
  const bytes = region.subarray(offset, offset + length);
  const nul = bytes.indexOf(0);
  return utf8.decode(nul === -1 ? bytes : bytes.subarray(0, nul));
}

function headerError(x: CoreExports, region: Uint8Array, status: number, fileSize: number): Error {
  if (status === Status.INVALID) {
    return new ImageError('WASM_INTERNAL', 'parseHeader rejected its arguments');
  }
  const reason = HEADER_REASONS.get(x.headerErrorReason());
  if (reason === undefined || reason === 'NONE') {
    return new ImageError('WASM_INTERNAL', `parseHeader failed (status ${status}) with an unknown reason ${x.headerErrorReason()}`);
  }
  const context: MessageContext = {
    detail: x.headerErrorDetail(),
    exactDetail: (BigInt(x.headerErrorDetailHigh() >>> 0) << 32n) | BigInt(x.headerErrorDetailLow() >>> 0),
    fileSize,
    regionBytes: region.byteLength,
    unsupportedFeatures: () => describeUnknownIncompatible(x, region),
  };
  const code: ErrorCode = reason === 'BAD_MAGIC' ? 'IMAGE_FORMAT_UNKNOWN'
    : status === Status.UNSUPPORTED ? 'QCOW2_UNSUPPORTED_FEATURE'
    : status === Status.CORRUPT ? 'QCOW2_CORRUPT' : 'WASM_INTERNAL';
  return new Qcow2HeaderError(code, reason, MESSAGES[reason](context));
}

/**
 * QEMU's list of unsupported incompatible features: the names the feature table gives the
 * unknown bits, in table order, then the bits without a name as one hex mask.
 */
function describeUnknownIncompatible(x: CoreExports, region: Uint8Array): string {
  let unnamed = (BigInt(x.headerUnknownIncompatibleHigh() >>> 0) << 32n) | BigInt(x.headerUnknownIncompatibleLow() >>> 0);
  const parts: string[] = [];
  for (const feature of readFeatureNames(x, region)) {
    const bit = 1n << BigInt(feature.bit);
    if (feature.type === 'incompatible' && (unnamed & bit) !== 0n) {
      parts.push(feature.name);
      unnamed &= ~bit;
    }
  }
  if (unnamed !== 0n) parts.push(`Unknown incompatible feature: ${unnamed.toString(16)}`);
  return parts.join(', ');
}
