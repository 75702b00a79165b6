// SPDX-License-Identifier: MIT
// The manifest of an image stored as numbered parts (for static hosts that cap file sizes or get
// Range requests wrong): what it holds, how parts are named, and its strict validation.

import { BackendError } from '../base/errors.js';

/** The file name of the manifest inside a split image's directory. */
export const SPLIT_MANIFEST_NAME = 'manifest.json';

/**
 * manifest.json of a split image. Part i (from 0) holds the image bytes
 * [i * partBytes, min((i + 1) * partBytes, totalBytes)); every part but the last is partBytes
 * long. With compression 'zstd' each part is one zstd frame of those bytes.
 */
export interface SplitManifest {
  /** Always `'qcow2-wasm-split'`: marks the file as this package's manifest. */
  format: 'qcow2-wasm-split';
  /** The manifest's layout version; 1 is the only one. */
  version: 1;
  /** Size of the whole image file in bytes. */
  totalBytes: number;
  /** Bytes per part (the last part holds the rest). */
  partBytes: number;
  /** Number of parts: ceil(totalBytes / partBytes). */
  partCount: number;
  /** How each part file is stored. */
  compression: 'none' | 'zstd';
}

/** The file name of part `index`: "part-000000.bin", or "part-000000.zst" when zstd-compressed. */
export function splitPartName(index: number, compression: SplitManifest['compression']): string {
  return `part-${String(index).padStart(6, '0')}${compression === 'zstd' ? '.zst' : '.bin'}`;
}

/** The byte length of part `index` once decoded. */
export function splitPartBytes(manifest: SplitManifest, index: number): number {
  return Math.min(manifest.partBytes, manifest.totalBytes - index * manifest.partBytes);
}

/** The manifest for an image of `totalBytes` cut into parts of `partBytes`. */
export function makeSplitManifest(totalBytes: number, partBytes: number, compression: SplitManifest['compression']): SplitManifest {
  return { format: 'qcow2-wasm-split', version: 1, totalBytes, partBytes, partCount: Math.ceil(totalBytes / partBytes), compression };
}

/**
 * Checks parsed JSON `value` (from `where`, named in messages) as a SplitManifest: the format
 * tag, version 1, non-negative safe integers, partBytes > 0, partCount = ceil(totalBytes /
 * partBytes), and a known compression. Throws BACKEND_IO_ERROR saying which field is wrong.
 */
export function validateSplitManifest(value: unknown, where: string): SplitManifest {
  const bad = (what: string) => new BackendError('BACKEND_IO_ERROR', `split image manifest ${where}: ${what}`);
  if (typeof value !== 'object' || value === null) throw bad('not a JSON object');
  const m = value as Record<string, unknown>;
  if (m.format !== 'qcow2-wasm-split') throw bad(`format is ${JSON.stringify(m.format)}, expected "qcow2-wasm-split"`);
  if (m.version !== 1) throw bad(`version ${JSON.stringify(m.version)} is not supported (only 1)`);
  for (const field of ['totalBytes', 'partBytes', 'partCount'] as const) {
    const n = m[field];
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw bad(`${field} must be a non-negative integer, got ${JSON.stringify(n)}`);
  }
  const totalBytes = m.totalBytes as number;
  const partBytes = m.partBytes as number;
  if (partBytes === 0) throw bad('partBytes is 0');
  const expectedCount = Math.ceil(totalBytes / partBytes);
  if (m.partCount !== expectedCount) throw bad(`partCount ${m.partCount} does not fit totalBytes ${totalBytes} in parts of ${partBytes} (expected ${expectedCount})`);
  if (m.compression !== 'none' && m.compression !== 'zstd') throw bad(`compression ${JSON.stringify(m.compression)} is not "none" or "zstd"`);
  return { format: 'qcow2-wasm-split', version: 1, totalBytes, partBytes, partCount: expectedCount, compression: m.compression };
}
