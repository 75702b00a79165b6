// SPDX-License-Identifier: MIT
// One image's geometry, kept as module globals (one wasm instance serves one image), and the
// cluster arithmetic derived from it. Set once by configureImage (assembly/image-regions.ts).

import { L2E_BYTES, L2E_EXTENDED_BYTES, SUBCLUSTERS_PER_CLUSTER } from './format';

/** log2 of the cluster size (9..21). */
export let clusterBits: u32 = 16;
/** True for extended L2 entries (128 bits, 32 subclusters per cluster). */
export let hasExtendedL2: bool = false;
/** True when guest data lives in an external data file (guest offset == data-file offset). */
export let hasExternalData: bool = false;
/** Guest-visible size in bytes. */
export let virtualSizeBytes: u64 = 0;
/** Entries in the active L1 table. */
export let l1EntryCount: u32 = 0;
/** log2 of the L2 entry size in bytes (3 standard, 4 extended). */
export let l2EntryBits: u32 = 3;
/** log2 of entries per L2 table. */
export let l2IndexBits: u32 = 13;
/** log2 of bytes per cached L2 slice (min(cluster, 4 KiB)). */
export let sliceBits: u32 = 12;
/** log2 of the subcluster size (clusterBits - 5 with extended L2, else clusterBits). */
export let subclusterBits: u32 = 16;

/** Log2 of the preferred L2 slice size: QEMU's default l2-cache-entry-size of 4 KiB. */
const PREFERRED_SLICE_BITS: u32 = 12;

/** Sets the geometry; the caller (configureImage) has validated the values. */
export function setGeometry(bits: u32, extendedL2: bool, externalData: bool, virtualSize: u64, l1Entries: u32): void {
  clusterBits = bits;
  hasExtendedL2 = extendedL2;
  hasExternalData = externalData;
  virtualSizeBytes = virtualSize;
  l1EntryCount = l1Entries;
  l2EntryBits = extendedL2 ? <u32>ctz(L2E_EXTENDED_BYTES) : <u32>ctz(L2E_BYTES);
  l2IndexBits = bits - l2EntryBits;
  sliceBits = bits < PREFERRED_SLICE_BITS ? bits : PREFERRED_SLICE_BITS;
  subclusterBits = extendedL2 ? bits - <u32>ctz(SUBCLUSTERS_PER_CLUSTER) : bits;
}

@inline export function clusterBytes(): u64 { return <u64>1 << clusterBits; }
@inline export function offsetInCluster(offset: u64): u64 { return offset & ((<u64>1 << clusterBits) - 1); }
/** Guest bytes one L2 table maps. */
@inline export function l2CoverageBits(): u32 { return clusterBits + l2IndexBits; }
@inline export function l1IndexOf(guestOffset: u64): u64 { return guestOffset >> l2CoverageBits(); }
@inline export function l2IndexOf(guestOffset: u64): u32 {
  return <u32>((guestOffset >> clusterBits) & ((<u64>1 << l2IndexBits) - 1));
}
/** log2 of L2 entries per cached slice. */
@inline export function sliceIndexBits(): u32 { return sliceBits - l2EntryBits; }
