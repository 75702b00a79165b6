// SPDX-License-Identifier: MIT
// How many guest bytes convert reads and writes per chunk, per platform: each chunk in flight
// holds a buffer that large, so this sets convert's memory as much as its request sizes.

import { ImageError } from '../base/errors.js';

/** Guest bytes per chunk where the platform entry sets nothing: large reads and writes for Node and Deno files. */
const DEFAULT_CHUNK_BYTES = 8 << 20;

let chunkBytes = DEFAULT_CHUNK_BYTES;

/** Guest bytes convert reads per chunk (rounded up to whole target clusters where it writes qcow2). */
export function convertChunkBytes(): number {
  return chunkBytes;
}

/**
 * Sets the guest bytes per convert chunk for this platform (a power of two from 64 KiB to 64 MiB):
 * the browser entry makes it smaller, where a tab's memory is scarcer than request count.
 */
export function setConvertChunkBytes(bytes: number): void {
  if (!Number.isInteger(Math.log2(bytes)) || bytes < 65536 || bytes > 64 << 20) {
    throw new ImageError('INVALID_ARGUMENT', `the convert chunk size must be a power of two from 65536 to ${64 << 20} bytes, got ${bytes}`);
  }
  chunkBytes = bytes;
}
