// SPDX-License-Identifier: MIT
// Structure-aware mutations for the fuzzer: each picks a real structure of a valid image (a header
// field, an L1, L2 or refcount table entry, a refcount block word, an extension byte) and stores
// an interesting or random value there. A case is plain JSON (base image name and mutations), so
// a failing one reproduces from its seed and can be kept as a regression fixture as it is.

import type { Prng } from './prng.js';
import { HDR, grown, parseLayout, type ImageLayout } from './hostile-images.js';

/** One mutation: store `value` (decimal string of an unsigned integer) as `width` big-endian bytes at `at`. */
export interface Mutation { at: number; width: 1 | 2 | 4 | 8; value: string; what: string }

/** A fuzz case: which base image, and the mutations applied to it in order. */
export interface FuzzCase { base: string; mutations: Mutation[] }

/** Applies a case's mutations to a copy of `base` (growing it when a mutation lies past its end). */
export function applyMutations(base: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  const end = Math.max(base.length, ...mutations.map((m) => m.at + m.width));
  const out = grown(base, end);
  const view = new DataView(out.buffer);
  for (const m of mutations) {
    const value = BigInt(m.value);
    if (m.width === 8) view.setBigUint64(m.at, BigInt.asUintN(64, value));
    else if (m.width === 4) view.setUint32(m.at, Number(BigInt.asUintN(32, value)));
    else if (m.width === 2) view.setUint16(m.at, Number(BigInt.asUintN(16, value)));
    else view.setUint8(m.at, Number(BigInt.asUintN(8, value)));
  }
  return out;
}

const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;

/** Values that tend to break things, relative to the image's own structures. */
function interestingValue(prng: Prng, layout: ImageLayout, width: number): bigint {
  const c = BigInt(layout.clusterSize);
  const structures = [
    0n, BigInt(layout.l1Offset), BigInt(layout.reftableOffset), ...[...layout.l2Tables.values()].map(BigInt),
    ...[...layout.refblocks.values()].map(BigInt), BigInt(Math.ceil(layout.fileSize / layout.clusterSize) * layout.clusterSize),
  ];
  const pick = <T>(xs: readonly T[]): T => xs[prng.int(xs.length)];
  const candidates: bigint[] = [
    0n, 1n, 2n, 7n, 8n, 9n, 0xffn, 0x100n, 0x1ffn, 0x200n, 0xfffn, 0x1000n, c - 1n, c, c + 512n,
    1n << 31n, (1n << 32n) - 1n, 1n << 32n, 1n << 40n, 1n << 53n, (1n << 55n) - c, 1n << 56n, 1n << 62n, 1n << 63n, (1n << 64n) - 1n,
    pick(structures), pick(structures) | COPIED, pick(structures) + 512n, pick(structures) | COMPRESSED,
    COMPRESSED | (BigInt(prng.int(256)) << 54n) | BigInt(prng.int(layout.fileSize + 4096)),
  ];
  return BigInt.asUintN(width * 8, pick(candidates));
}

function randomValue(prng: Prng, width: number): bigint {
  let v = 0n;
  for (let i = 0; i < width; i++) v = (v << 8n) | BigInt(prng.int(256));
  return v;
}

/** The header fields and their widths. */
const HEADER_FIELDS: Array<[keyof typeof HDR, 1 | 4 | 8]> = [
  ['version', 4], ['backingOffset', 8], ['backingSize', 4], ['clusterBits', 4], ['size', 8], ['cryptMethod', 4], ['l1Size', 4],
  ['l1Offset', 8], ['reftableOffset', 8], ['reftableClusters', 4], ['snapshotCount', 4], ['snapshotsOffset', 8],
  ['incompatible', 8], ['compatible', 8], ['autoclear', 8], ['refcountOrder', 4], ['headerLength', 4], ['compressionType', 1],
];

/** One random mutation aimed at a structure of the image `layout` describes. */
export function randomMutation(prng: Prng, layout: ImageLayout, bytes: Uint8Array): Mutation {
  // An interesting value, a random one, or the current value with one bit flipped.
  const value = (width: number, at: number): bigint => {
    const roll = prng.int(10);
    if (roll < 6) return interestingValue(prng, layout, width);
    if (roll < 8) return randomValue(prng, width);
    let current = 0n;
    for (let i = 0; i < width; i++) current = (current << 8n) | BigInt(bytes[at + i] ?? 0);
    return current ^ (1n << BigInt(prng.int(width * 8)));
  };
  const entryBytes = layout.extendedL2 ? 16 : 8;
  for (;;) {
    const target = prng.int(7);
    if (target === 0) {
      const [field, width] = HEADER_FIELDS[prng.int(HEADER_FIELDS.length)];
      return { at: HDR[field], width, value: value(width, HDR[field]).toString(), what: `header ${field}` };
    }
    if (target === 1 && layout.l1Size > 0) {
      const i = prng.int(Math.min(layout.l1Size, 4));
      const at = layout.l1Offset + 8 * i;
      return { at, width: 8, value: value(8, at).toString(), what: `L1[${i}]` };
    }
    if (target === 2 && layout.data.length > 0) {
      const d = layout.data[prng.int(layout.data.length)];
      const half = layout.extendedL2 && prng.int(2) === 1 ? 8 : 0;
      return { at: d.entryAt + half, width: 8, value: value(8, d.entryAt + half).toString(), what: `L2 entry of guest cluster ${d.guestCluster}${half ? ' (bitmap)' : ''}` };
    }
    if (target === 3 && layout.l2Tables.size > 0) {
      const l2 = [...layout.l2Tables.values()][0];
      const j = prng.int(Math.min(64, layout.clusterSize / entryBytes));
      const at = l2 + j * entryBytes;
      return { at, width: 8, value: value(8, at).toString(), what: `L2 entry ${j}` };
    }
    if (target === 4) {
      const i = prng.int(Math.max(1, Math.min(4, layout.refblocks.size + 1)));
      const at = layout.reftableOffset + 8 * i;
      return { at, width: 8, value: value(8, at).toString(), what: `refcount table[${i}]` };
    }
    if (target === 5 && layout.refblocks.size > 0) {
      const block = [...layout.refblocks.values()][0];
      const at = block + 8 * prng.int(16);
      return { at, width: 8, value: value(8, at).toString(), what: 'refcount block word' };
    }
    if (target === 6) {
      // Bytes after the header: extensions and names (a flipped bit or a random byte).
      const at = 104 + prng.int(Math.min(bytes.length, 512) - 104);
      return { at, width: 1, value: (prng.next() & 0xff).toString(), what: 'header extension byte' };
    }
  }
}

/** A random case: 1 to 4 mutations of one base image. */
export function randomCase(prng: Prng, bases: ReadonlyMap<string, Uint8Array>): FuzzCase {
  const names = [...bases.keys()];
  const base = names[prng.int(names.length)];
  const bytes = bases.get(base)!;
  const layout = parseLayout(bytes);
  const count = 1 + prng.int(4);
  const mutations: Mutation[] = [];
  for (let i = 0; i < count; i++) mutations.push(randomMutation(prng, layout, bytes));
  return { base, mutations };
}
