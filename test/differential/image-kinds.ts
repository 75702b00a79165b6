// SPDX-License-Identifier: MIT
// The kinds of image the differential stress test runs on, each built in a scratch directory
// (qemu-img where QEMU makes the image: backing files, compressed clusters, snapshots; the engine
// where it is a fresh image) with known guest content, and what the engine must keep of it.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Qcow2Image } from '../../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../../bindings/backends/memory.js';
import type { CreateOptions } from '../../bindings/dispatch/image.js';
import { createOptions, qemuImg } from '../helpers/qemu.js';
import type { Prng } from '../helpers/prng.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** File name of the image under test inside its directory. */
export const IMAGE_FILE = 'image.qcow2';

/** A built image: where it is and what it must read as. */
export interface BuiltImage {
  /** The image's directory (its backing file, if any, sits next to it). */
  dir: string;
  virtualSize: number;
  clusterSize: number;
  /** Guest content right after the build (zeros, the backing file's, or converted data). */
  content: Uint8Array;
  /** Whole-cluster discards read as zeros (v3, or no backing file); otherwise they change nothing. */
  discardZeroes: boolean;
  /** An internal snapshot whose content must never change, with that content. */
  snapshot?: { name: string; content: Uint8Array };
  /** Metadata cache sizes the phases choose from (bytes; undefined: the default). */
  cacheChoices: readonly (number | undefined)[];
}

/** One kind of image. */
export interface ImageKind {
  name: string;
  /** Builds the image in `dir` from seeded content. */
  build(dir: string, prng: Prng): Promise<BuiltImage>;
}

/**
 * Guest content that both compresses and differs everywhere: 512-byte chunks of zeros, one
 * repeated byte, a repeated 16-byte pattern, or random bytes; `zeroShare` of the chunks stay zero.
 */
export function seededContent(prng: Prng, length: number, zeroShare = 0.25): Uint8Array {
  const out = new Uint8Array(length);
  for (let chunk = 0; chunk < length; chunk += 512) {
    const end = Math.min(length, chunk + 512);
    const roll = prng.next() / 2 ** 32;
    if (roll < zeroShare) continue;
    const style = prng.int(3);
    if (style === 0) out.fill(1 + prng.int(255), chunk, end);
    else if (style === 1) {
      const pattern = prng.fill(new Uint8Array(16));
      for (let i = chunk; i < end; i++) out[i] = pattern[i & 15];
    } else prng.fill(out.subarray(chunk, end));
  }
  return out;
}

function mustQemuImg(args: string[], dir: string): void {
  const result = qemuImg(args, dir);
  if (result.code !== 0) throw new Error(`qemu-img ${args.join(' ')} exited with ${result.code}: ${result.stderr.trim()}`);
}

/** Creates an image with the engine (Qcow2Image.create on a memory backend) and stores it as IMAGE_FILE. */
async function createWithEngine(dir: string, options: CreateOptions): Promise<void> {
  const store = createMemoryBackend();
  const image = await Qcow2Image.create(store, options);
  await image.flush();
  const bytes = new Uint8Array(await store.getSize());
  await store.preadv(0, [bytes]);
  await image.close();
  writeFileSync(join(dir, IMAGE_FILE), bytes);
}

/** Writes `content` as a raw file and converts it to IMAGE_FILE with `options` (and -c if `compress`). */
function convertFromRaw(dir: string, content: Uint8Array, options: Parameters<typeof createOptions>[0], compress: boolean): void {
  writeFileSync(join(dir, 'source.raw'), content);
  mustQemuImg(['convert', ...(compress ? ['-c'] : []), '-f', 'raw', '-O', 'qcow2', ...createOptions(options), 'source.raw', IMAGE_FILE], dir);
}

const fresh = (name: string, options: Omit<CreateOptions, 'virtualSize'>, sizes: readonly number[],
  cacheChoices: readonly (number | undefined)[]): ImageKind => ({
  name,
  async build(dir, prng) {
    const virtualSize = sizes[prng.int(sizes.length)] - (prng.int(2) === 0 ? 0 : 512 * prng.int(3));
    await createWithEngine(dir, { virtualSize, ...options });
    return { dir, virtualSize, clusterSize: options.clusterSize ?? 65536, content: new Uint8Array(virtualSize), discardZeroes: true, cacheChoices };
  },
});

const overlay = (name: string, backingFormat: 'qcow2' | 'raw', options: { clusterSize: number; compat?: '0.10' | '1.1'; extendedL2?: boolean },
  cacheChoices: readonly (number | undefined)[]): ImageKind => ({
  name,
  async build(dir, prng) {
    const virtualSize = 2 * MiB + 512 * prng.int(5);
    // The backing file is sometimes shorter than the overlay (the rest reads as zeros).
    const backingSize = prng.int(3) === 0 ? virtualSize - 64 * KiB - 512 * prng.int(64) : virtualSize;
    const backingContent = seededContent(prng, backingSize);
    const backingName = backingFormat === 'raw' ? 'base.raw' : 'base.qcow2';
    writeFileSync(join(dir, 'base.raw'), backingContent);
    if (backingFormat === 'qcow2') mustQemuImg(['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4096', 'base.raw', backingName], dir);
    mustQemuImg(['create', '-q', '-f', 'qcow2', ...createOptions(options), '-b', backingName, '-F', backingFormat, IMAGE_FILE, String(virtualSize)], dir);
    const content = new Uint8Array(virtualSize);
    content.set(backingContent);
    return { dir, virtualSize, clusterSize: options.clusterSize, content, discardZeroes: options.compat !== '0.10', cacheChoices };
  },
});

const converted = (name: string, options: Parameters<typeof createOptions>[0] & { clusterSize: number }, compress: boolean,
  snapshot: boolean, cacheChoices: readonly (number | undefined)[]): ImageKind => ({
  name,
  async build(dir, prng) {
    const virtualSize = 1 * MiB + 64 * KiB * prng.int(16);
    const content = seededContent(prng, virtualSize);
    convertFromRaw(dir, content, options, compress);
    const built: BuiltImage = { dir, virtualSize, clusterSize: options.clusterSize, content, discardZeroes: true, cacheChoices };
    if (snapshot) {
      mustQemuImg(['snapshot', '-c', 'snap1', IMAGE_FILE], dir);
      built.snapshot = { name: 'snap1', content: content.slice() };
    }
    return built;
  },
});

/** Every kind the differential test covers. */
export const IMAGE_KINDS: readonly ImageKind[] = [
  fresh('fresh v3, 64 KiB clusters', {}, [4 * MiB], [undefined, 8 * KiB]),
  fresh('fresh v2 (compat 0.10), 4 KiB clusters', { compat: '0.10', clusterSize: 4 * KiB }, [2 * MiB], [undefined, 4 * KiB]),
  overlay('overlay on qcow2 backing, 4 KiB clusters', 'qcow2', { clusterSize: 4 * KiB }, [undefined, 4 * KiB]),
  overlay('overlay on raw backing, 64 KiB clusters', 'raw', { clusterSize: 64 * KiB }, [undefined, 8 * KiB]),
  overlay('overlay v2 on raw backing, 4 KiB clusters', 'raw', { clusterSize: 4 * KiB, compat: '0.10' }, [undefined, 4 * KiB]),
  overlay('overlay on raw backing, 512 B clusters, tiny cache', 'raw', { clusterSize: 512 }, [1024, 2048, 8192]),
  fresh('fresh, 512 B clusters, tiny cache', { clusterSize: 512 }, [2 * MiB], [1024, 2048]),
  fresh('extended L2, 64 KiB clusters', { extendedL2: true }, [4 * MiB], [undefined, 8 * KiB]),
  overlay('extended L2 overlay on raw backing, 32 KiB clusters', 'raw', { clusterSize: 32 * KiB, extendedL2: true }, [undefined, 4 * KiB]),
  converted('compressed (convert -c), 64 KiB clusters', { clusterSize: 64 * KiB }, true, false, [undefined, 8 * KiB]),
  converted('compressed zstd (convert -c), 4 KiB clusters', { clusterSize: 4 * KiB, compressionType: 'zstd' }, true, false, [undefined, 4 * KiB]),
  converted('internal snapshot, 4 KiB clusters', { clusterSize: 4 * KiB }, false, true, [undefined, 4 * KiB]),
  converted('internal snapshot of compressed data, 64 KiB clusters', { clusterSize: 64 * KiB }, true, true, [undefined, 8 * KiB]),
  fresh('refcount growth: 512 B clusters, refcount_bits=64', { clusterSize: 512, refcountBits: 64 }, [4 * MiB], [1024, 4096]),
];

/** The guest content of the image's internal snapshot `name`, as QEMU reads it (`qemu-img convert -l`). */
export function snapshotContent(dir: string, name: string): Uint8Array {
  const out = join(dir, 'snapshot.raw');
  mustQemuImg(['convert', '-f', 'qcow2', '-l', `snapshot.name=${name}`, '-O', 'raw', IMAGE_FILE, out], dir);
  return new Uint8Array(readFileSync(out));
}
