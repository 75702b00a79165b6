// SPDX-License-Identifier: MIT
// How many guest bytes convert reads and writes per chunk, and where a chunk's buffer comes
// from, per platform: each chunk in flight holds a buffer that large, so this sets convert's
// memory as much as its request sizes.

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

/** Makes a zero-filled buffer of `byteLength` bytes for one chunk. */
export type ChunkAllocator = (byteLength: number) => Uint8Array;

const plainBuffer: ChunkAllocator = (byteLength) => new Uint8Array(byteLength);

/**
 * A zero-filled buffer starting on a memory page: the memory of a WebAssembly.Memory of its own,
 * which the engine maps from a page. The kernel copies file data into and out of a buffer that
 * starts a cache line faster than into one that does not (a plain Uint8Array of megabytes starts
 * 16 bytes past one under glibc: reading the page cache into it took 1.6x the system time). The
 * buffer cannot be transferred to another thread (postMessage refuses a wasm memory's buffer),
 * so only platforms whose file I/O never transfers buffers use it.
 */
export const pageAlignedBuffer: ChunkAllocator = (byteLength) => {
  const pages = Math.max(1, Math.ceil(byteLength / 65536));
  return new Uint8Array(new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer, 0, byteLength);
};

let chunkAllocator: ChunkAllocator = plainBuffer;

/**
 * A zero-filled buffer of `byteLength` bytes for one convert chunk, from the platform's allocator
 * (for buffers a copy reuses; buffers handed on to a stream are plain Uint8Arrays).
 */
export function allocateChunkBuffer(byteLength: number): Uint8Array {
  return chunkAllocator(byteLength);
}

/**
 * Sets where convert's chunk buffers come from on this platform (default: plain Uint8Arrays; the
 * Node entry uses pageAlignedBuffer).
 */
export function setChunkAllocator(allocate: ChunkAllocator): void {
  chunkAllocator = allocate;
}
