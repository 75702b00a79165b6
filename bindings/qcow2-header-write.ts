// SPDX-License-Identifier: MIT
// Serializing a whole qcow2 header as QEMU 7.2 rewrites one (qcow2_update_header): the fixed
// fields (72 bytes for version 2, 112 for version 3), then the backing format extension, the
// feature name table (version 3 only), any extensions kept from the old header, the end
// marker, and the backing file name. Used by amend (version, refcount width, lazy refcounts) and
// rebase (backing file name and format).

import type { Qcow2Header } from './qcow2-header.js';
import { ImageError } from './errors.js';

const QCOW2_MAGIC = 0x514649fb;
const EXTENSION_BACKING_FORMAT = 0xe2792aca;
const EXTENSION_FEATURE_TABLE = 0x6803f857;
const VERSION_3_HEADER_BYTES = 112;
const VERSION_2_HEADER_BYTES = 72;
const FEATURE_NAME_BYTES = 46;

/** QEMU 7.2's feature name table: [type (0 incompatible, 1 compatible, 2 autoclear), bit, name]. */
const FEATURE_NAMES: readonly [number, number, string][] = [
  [0, 0, 'dirty bit'], [0, 1, 'corrupt bit'], [0, 2, 'external data file'], [0, 3, 'compression type'],
  [0, 4, 'extended L2 entries'], [1, 0, 'lazy refcounts'], [2, 0, 'bitmaps'], [2, 1, 'raw external data'],
];

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

/**
 * The bytes of a header with `fields` and everything else from `current` (its unknown
 * extensions kept), the header bytes 24..72 taken from `switchFields` (see ShadowUpdate.commit).
 * Throws INVALID_ARGUMENT when it would not fit in cluster 0 or a name is too long.
 */
export function serializeHeader(current: Qcow2Header, fields: HeaderFields, switchFields: Uint8Array): Uint8Array {
  const encoder = new TextEncoder();
  const extensions: { type: number; data: Uint8Array }[] = [];
  if (fields.backingFile !== undefined && fields.backingFormat !== undefined) {
    extensions.push({ type: EXTENSION_BACKING_FORMAT, data: encoder.encode(fields.backingFormat) });
  }
  if (fields.version === 3) {
    const table = new Uint8Array(FEATURE_NAMES.length * 48);
    FEATURE_NAMES.forEach(([type, bit, name], i) => {
      table[i * 48] = type;
      table[i * 48 + 1] = bit;
      table.set(encoder.encode(name).subarray(0, FEATURE_NAME_BYTES), i * 48 + 2);
    });
    extensions.push({ type: EXTENSION_FEATURE_TABLE, data: table });
  }
  for (const e of current.unknownExtensions) extensions.push({ type: e.type, data: e.data });

  const fixedBytes = fields.version === 3 ? VERSION_3_HEADER_BYTES : VERSION_2_HEADER_BYTES;
  let extensionBytes = 8; // end marker
  for (const e of extensions) extensionBytes += 8 + ((e.data.length + 7) & ~7);
  const backingName = fields.backingFile === undefined ? new Uint8Array(0) : encoder.encode(fields.backingFile);
  if (backingName.length > 1023) throw new ImageError('INVALID_ARGUMENT', 'the backing file name is longer than 1023 bytes');
  const total = fixedBytes + extensionBytes + backingName.length;
  if (total > current.clusterSize) throw new ImageError('INVALID_ARGUMENT', `the header (${total} bytes) does not fit in cluster 0 (${current.clusterSize} bytes)`);

  const bytes = new Uint8Array(total);
  const view = new DataView(bytes.buffer);
  const set64 = (at: number, value: bigint) => view.setBigUint64(at, value);
  view.setUint32(0, QCOW2_MAGIC);
  view.setUint32(4, fields.version);
  if (backingName.length > 0) {
    set64(8, BigInt(fixedBytes + extensionBytes));
    view.setUint32(16, backingName.length);
  }
  view.setUint32(20, current.clusterBits);
  bytes.set(switchFields, 24);
  if (fields.version === 3) {
    set64(72, fields.incompatibleFeatures);
    set64(80, fields.compatibleFeatures);
    set64(88, fields.autoclearFeatures);
    view.setUint32(96, fields.refcountOrder);
    view.setUint32(100, VERSION_3_HEADER_BYTES);
    bytes[104] = current.compressionType === 'zstd' ? 1 : 0;
  }
  let at = fixedBytes;
  for (const e of extensions) {
    view.setUint32(at, e.type);
    view.setUint32(at + 4, e.data.length);
    bytes.set(e.data, at + 8);
    at += 8 + ((e.data.length + 7) & ~7);
  }
  at += 8;
  bytes.set(backingName, at);
  return bytes;
}

/** The header fields of `header` as they are (to change some). */
export function currentHeaderFields(header: Qcow2Header): HeaderFields {
  return {
    version: header.version, refcountOrder: header.refcountOrder, incompatibleFeatures: header.incompatibleFeatures,
    compatibleFeatures: header.compatibleFeatures, autoclearFeatures: header.autoclearFeatures,
    backingFile: header.backingFile, backingFormat: header.backingFormat,
  };
}
