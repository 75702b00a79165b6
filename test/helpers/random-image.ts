// SPDX-License-Identifier: MIT
// What the seeded race tests share: a byte pattern that is nowhere zero, and an image kind and
// open options drawn from a PRNG (the draws in a fixed order, so a seed replays the same image).

import type { Backend } from '../../bindings/backends/backend.js';
import { createMemoryBackend } from '../../bindings/backends/memory.js';
import { createQcow2 } from '../../bindings/qcow2/qcow2-create.js';
import type { OpenOptions } from '../../bindings/dispatch/image.js';
import type { Prng } from './prng.js';

/** `size` bytes, every byte non-zero, neighbouring sectors different; `salt` shifts the pattern. */
export function pattern(size: number, salt = 0): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = 1 + ((i * 7 + (i >> 9) * 13 + salt) % 251);
  return bytes;
}

/** A qcow2 image's kind as drawn by pickImageKind. */
export interface ImageKind {
  sizeBytes: number;
  clusterSize: number;
  extendedL2: boolean;
  compat: '0.10' | '1.1';
  refcountBits: number;
  /** The raw backing file's bytes (pattern(sizeBytes, 5)), or undefined for none. */
  base: Uint8Array | undefined;
}

/**
 * Draws an image kind from `prng`: a size out of `sizesMiB`, 512 B, 4 KiB or 64 KiB clusters,
 * extended L2 (64 KiB clusters, one time in three), compat 0.10 (one time in four, never with
 * extended L2; its refcounts are 16 bits), a refcount width out of `refcountBitsChoices`, and a
 * raw backing file one time in two.
 */
export function pickImageKind(prng: Prng, sizesMiB: readonly number[], refcountBitsChoices: readonly number[]): ImageKind {
  const sizeBytes = sizesMiB[prng.int(sizesMiB.length)] * 1024 * 1024;
  const clusterSize = [512, 4096, 65536][prng.int(3)];
  const extendedL2 = clusterSize >= 16384 && prng.int(3) === 0;
  const compat = !extendedL2 && prng.int(4) === 0 ? '0.10' as const : '1.1' as const;
  const refcountBits = compat === '0.10' ? 16 : refcountBitsChoices[prng.int(refcountBitsChoices.length)];
  const base = prng.int(2) === 0 ? pattern(sizeBytes, 5) : undefined;
  return { sizeBytes, clusterSize, extendedL2, compat, refcountBits, base };
}

/** Writes a new image of `kind` into `backend` (its backing file named base.raw). */
export async function createImageOfKind(backend: Backend, kind: ImageKind): Promise<void> {
  const { sizeBytes, clusterSize, extendedL2, compat, refcountBits, base } = kind;
  await createQcow2(backend, {
    virtualSize: sizeBytes, clusterSize, extendedL2, compat, refcountBits,
    ...(base ? { backingFile: 'base.raw', backingFormat: 'raw' as const } : {}),
  });
}

/**
 * Open options drawn from `prng`: the metadata cache, the write-back delay and deferred
 * copy-on-write, with `base` (when given) as the backing file, in memory.
 */
export function pickOpenOptions(prng: Prng, base: Uint8Array | undefined): OpenOptions {
  return {
    cacheBytes: [4096, 16384, 1 << 20][prng.int(3)], writebackDelayMs: [1, 3, false][prng.int(3)] as number | false,
    deferredCow: prng.int(2) === 0 ? { delayMs: 1 + prng.int(5), maxPending: 1 + prng.int(8) } : true,
    openBacking: async () => createMemoryBackend(base!, { writable: false }),
  };
}
