// SPDX-License-Identifier: MIT
// Writes an image file as a split image (numbered parts and a manifest, split-manifest.ts) for
// static hosting; the counterpart of openSplitBackend. Platform-neutral: the caller stores files.

import type { Backend } from '../backends/backend.js';
import { BackendError } from '../base/errors.js';
import { makeSplitManifest, SPLIT_MANIFEST_NAME, splitPartBytes, splitPartName, type SplitManifest } from '../backends/split-manifest.js';

/** Options of writeSplitImage. */
export interface SplitWriteOptions {
  /** Bytes per part: a positive multiple of 512 (e.g. 1 MiB; static hosts cap files at 25-100 MiB). */
  partBytes: number;
  /**
   * Compresses one part into a single zstd frame. When given, parts are stored compressed
   * (manifest compression 'zstd'); when omitted, as they are.
   */
  zstdCompress?: (part: Uint8Array) => Uint8Array | Promise<Uint8Array>;
}

/**
 * Reads every byte of `source` (an image file: qcow2, raw, any) and hands each part, then the
 * manifest (SPLIT_MANIFEST_NAME, JSON), to `store(name, bytes)`, one at a time and in that
 * order, so a store that fails part-way never leaves a manifest naming missing parts. Resolves
 * with the manifest. INVALID_ARGUMENT for a partBytes that is not a positive multiple of 512;
 * errors of `source` and `store` reject unchanged.
 */
export async function writeSplitImage(
  source: Backend,
  store: (name: string, bytes: Uint8Array) => Promise<void>,
  options: SplitWriteOptions,
): Promise<SplitManifest> {
  const { partBytes } = options;
  if (!Number.isSafeInteger(partBytes) || partBytes <= 0 || partBytes % 512 !== 0) {
    throw new BackendError('INVALID_ARGUMENT', `split: the part size must be a positive multiple of 512 bytes, got ${partBytes}`);
  }
  const manifest = makeSplitManifest(await source.getSize(), partBytes, options.zstdCompress === undefined ? 'none' : 'zstd');
  for (let index = 0; index < manifest.partCount; index++) {
    const part = new Uint8Array(splitPartBytes(manifest, index));
    await source.preadv(index * partBytes, [part]);
    const stored = options.zstdCompress === undefined ? part : await options.zstdCompress(part);
    await store(splitPartName(index, manifest.compression), stored);
  }
  await store(SPLIT_MANIFEST_NAME, new TextEncoder().encode(`${JSON.stringify(manifest, null, 2)}\n`));
  return manifest;
}
