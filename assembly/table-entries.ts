// SPDX-License-Identifier: MIT
// Reading and writing single table entries for the metadata tools (snapshots, resize, amend,
// commit): L1 entries, standard and extended L2 entries, refcount table entries and refcounts
// (qcow2 spec, "Cluster mapping", "Host cluster management"). TypeScript places table bytes in
// the HEADER region (the "window") and names an entry by its byte position `at` there; the
// functions below are the only place these tools interpret the bits. A position that does not
// leave room for the entry in the window is refused (-INVALID, or nothing written).

import {
  L1E_OFFSET_MASK, L2E_EXTENDED_BYTES, L2_BITMAP_ALLOC_MASK, L2_BITMAP_ZERO_MASK, QCOW_OFLAG_COMPRESSED,
  QCOW_OFLAG_COPIED, QCOW_OFLAG_ZERO, REFT_OFFSET_MASK, compressedHostOffset, compressedSectorCount,
  loadBE64, storeBE64,
} from './format';
import { HEADER_REGION_BYTES, Region, regionOffset } from './layout';
import { loadRefcount, storeRefcount } from './refcount-codec';
import { Status } from './status';

const SECTOR_BYTES: u64 = 512;

/** Linear-memory address of window byte `at` when `bytes` bytes from there lie in the window, else 0. */
export function windowAddress(at: i32, bytes: i32): usize {
  if (at < 0 || bytes < 0 || at > HEADER_REGION_BYTES - bytes) return 0;
  return regionOffset(Region.HEADER) + <usize>at;
}

/** Host offset in the L1 entry or standard L2 entry at window byte `at` (bits 9..55; 0: none). */
export function entryHostOffset(at: i32): f64 {
  const address = windowAddress(at, 8);
  if (address == 0) return -Status.INVALID;
  return <f64>(loadBE64(address) & L1E_OFFSET_MASK);
}

/**
 * Writes the L1 entry or standard L2 entry at window byte `at`: `hostOffset` (cluster-aligned,
 * below 2^56; 0 for none) with QCOW_OFLAG_COPIED when `copied` is nonzero; every other flag of
 * the entry's first word is cleared (an extended entry's bitmap is left as it is).
 */
export function setEntryHostOffset(at: i32, hostOffset: f64, copied: i32): void {
  const address = windowAddress(at, 8);
  if (address == 0) return;
  storeBE64(address, (<u64>hostOffset & L1E_OFFSET_MASK) | (copied != 0 ? QCOW_OFLAG_COPIED : 0));
}

/**
 * Sets or clears QCOW_OFLAG_COPIED of the entry at window byte `at` (as `copied`); returns 1
 * when the flag changed, 0 when it already was so, -INVALID for a position outside the window.
 */
export function setEntryCopied(at: i32, copied: i32): i32 {
  const address = windowAddress(at, 8);
  if (address == 0) return -Status.INVALID;
  const entry = loadBE64(address);
  const wanted = copied != 0 ? QCOW_OFLAG_COPIED : 0;
  if ((entry & QCOW_OFLAG_COPIED) == wanted) return 0;
  storeBE64(address, (entry & ~QCOW_OFLAG_COPIED) | wanted);
  return 1;
}

/** 1 when the L2 entry at window byte `at` describes a compressed cluster, else 0 (-INVALID: outside). */
export function l2EntryIsCompressed(at: i32): i32 {
  const address = windowAddress(at, 8);
  if (address == 0) return -Status.INVALID;
  return (loadBE64(address) & QCOW_OFLAG_COMPRESSED) != 0 ? 1 : 0;
}

/** 1 when the standard L2 entry at window byte `at` has the zero flag (bit 0), else 0 (also for compressed ones). */
export function l2EntryHasZeroFlag(at: i32): i32 {
  const address = windowAddress(at, 8);
  if (address == 0) return -Status.INVALID;
  const entry = loadBE64(address);
  return (entry & QCOW_OFLAG_COMPRESSED) == 0 && (entry & QCOW_OFLAG_ZERO) != 0 ? 1 : 0;
}

/**
 * 1 when the L2 entry at window byte `at` reads as zeros by its flags: in a version 3 image, the
 * zero flag of a standard entry, or (with `extendedL2`) every subcluster marked zero. Version 2
 * images have no zero flag. Compressed entries never do.
 */
export function l2EntryReadsAsZeros(at: i32, extendedL2: i32, version: i32): i32 {
  const address = windowAddress(at, extendedL2 != 0 ? <i32>L2E_EXTENDED_BYTES : 8);
  if (address == 0) return -Status.INVALID;
  if (version < 3 || (loadBE64(address) & QCOW_OFLAG_COMPRESSED) != 0) return 0;
  if (extendedL2 != 0) return (loadBE64(address + 8) & L2_BITMAP_ZERO_MASK) == L2_BITMAP_ZERO_MASK ? 1 : 0;
  return (loadBE64(address) & QCOW_OFLAG_ZERO) != 0 ? 1 : 0;
}

/** Host byte offset of the compressed data the L2 entry at window byte `at` describes. */
export function compressedDataOffset(at: i32, clusterBits: i32): f64 {
  const address = windowAddress(at, 8);
  if (address == 0) return -Status.INVALID;
  return <f64>compressedHostOffset(loadBE64(address), <u32>clusterBits);
}

/** Start of the 512-byte sectors holding that compressed data (its offset rounded down to 512). */
export function compressedRunStart(at: i32, clusterBits: i32): f64 {
  const address = windowAddress(at, 8);
  if (address == 0) return -Status.INVALID;
  return <f64>(compressedHostOffset(loadBE64(address), <u32>clusterBits) & ~(SECTOR_BYTES - 1));
}

/** Bytes of those sectors: what the compressed data occupies in the file, from compressedRunStart. */
export function compressedRunBytes(at: i32, clusterBits: i32): f64 {
  const address = windowAddress(at, 8);
  if (address == 0) return -Status.INVALID;
  return <f64>(compressedSectorCount(loadBE64(address), <u32>clusterBits) * SECTOR_BYTES);
}

/**
 * Points the L2 entry at window byte `at` at the data cluster `hostOffset` that now holds its
 * contents: a standard entry keeps its zero flag and subcluster bitmap and loses COPIED; a
 * compressed one becomes a standard entry, all subclusters allocated with `extendedL2`.
 */
export function relocateL2Entry(at: i32, hostOffset: f64, extendedL2: i32): void {
  const address = windowAddress(at, extendedL2 != 0 ? <i32>L2E_EXTENDED_BYTES : 8);
  if (address == 0) return;
  const entry = loadBE64(address);
  const target = <u64>hostOffset & L1E_OFFSET_MASK;
  if ((entry & QCOW_OFLAG_COMPRESSED) != 0) {
    storeBE64(address, target);
    if (extendedL2 != 0) storeBE64(address + 8, L2_BITMAP_ALLOC_MASK);
    return;
  }
  storeBE64(address, target | (entry & QCOW_OFLAG_ZERO));
}

/**
 * Writes the L2 entry at window byte `at` as a whole allocated data cluster at `hostOffset`,
 * with COPIED when `copied` is nonzero; with `extendedL2` every subcluster is allocated.
 */
export function setL2DataEntry(at: i32, hostOffset: f64, copied: i32, extendedL2: i32): void {
  const address = windowAddress(at, extendedL2 != 0 ? <i32>L2E_EXTENDED_BYTES : 8);
  if (address == 0) return;
  storeBE64(address, (<u64>hostOffset & L1E_OFFSET_MASK) | (copied != 0 ? QCOW_OFLAG_COPIED : 0));
  if (extendedL2 != 0) storeBE64(address + 8, L2_BITMAP_ALLOC_MASK);
}

/**
 * Writes the L2 entry at window byte `at` as `compressedBytes` bytes (1 to a cluster less one) of
 * compressed data at host byte `hostOffset`: the descriptor holds the offset and the 512-byte
 * sectors after the first one that the data reaches, as QEMU writes it. With `extendedL2` the
 * bitmap half is zero (compressed clusters have no subclusters).
 */
export function setL2CompressedEntry(at: i32, hostOffset: f64, compressedBytes: i32, clusterBits: i32, extendedL2: i32): void {
  const address = windowAddress(at, extendedL2 != 0 ? <i32>L2E_EXTENDED_BYTES : 8);
  if (address == 0 || compressedBytes <= 0 || clusterBits < 9 || clusterBits > 21) return;
  const start = <u64>hostOffset;
  const extraSectors = ((start + <u64>compressedBytes - 1) >> 9) - (start >> 9);
  const sizeShift = <u64>(62 - (clusterBits - 8));
  storeBE64(address, QCOW_OFLAG_COMPRESSED | (extraSectors << sizeShift) | (start & ((<u64>1 << sizeShift) - 1)));
  if (extendedL2 != 0) storeBE64(address + 8, 0);
}

/**
 * Writes the L2 entry at window byte `at` as reading zeros without a host cluster: the zero flag
 * of a standard entry, or with `extendedL2` every subcluster marked zero. Version 3 images only.
 */
export function setL2ZeroEntry(at: i32, extendedL2: i32): void {
  const address = windowAddress(at, extendedL2 != 0 ? <i32>L2E_EXTENDED_BYTES : 8);
  if (address == 0) return;
  if (extendedL2 != 0) {
    storeBE64(address, 0);
    storeBE64(address + 8, L2_BITMAP_ZERO_MASK);
    return;
  }
  storeBE64(address, QCOW_OFLAG_ZERO);
}

/** Host offset of the refcount block in the refcount table entry at window byte `at` (0: none). */
export function reftableEntryOffset(at: i32): f64 {
  const address = windowAddress(at, 8);
  if (address == 0) return -Status.INVALID;
  return <f64>(loadBE64(address) & REFT_OFFSET_MASK);
}

/** Writes the refcount table entry at window byte `at`: the refcount block at `hostOffset`. */
export function setReftableEntry(at: i32, hostOffset: f64): void {
  const address = windowAddress(at, 8);
  if (address == 0) return;
  storeBE64(address, <u64>hostOffset & REFT_OFFSET_MASK);
}

// Refcounts of 2^order bits packed from window byte `at` (a refcount block, or part of one that
// starts at a multiple of 8 bytes): entry `index` must lie within the window.
function refcountsAddress(at: i32, index: i32, order: i32): usize {
  if (index < 0 || order < 0 || order > 6) return 0;
  const endBit = (<u64>index + 1) << <u64>order;
  return windowAddress(at, <i32>((endBit + 7) >> 3));
}

/** Refcount `index` of the refcounts of 2^`order` bits packed from window byte `at` (above 2^53: inexact). */
export function refcountAt(at: i32, index: i32, order: i32): f64 {
  const address = refcountsAddress(at, index, order);
  if (address == 0) return -Status.INVALID;
  return <f64>loadRefcount(address, <u64>index, <u32>order);
}

/** Sets refcount `index` (as refcountAt) to `value`, which must fit 2^`order` bits. */
export function setRefcountAt(at: i32, index: i32, order: i32, value: f64): void {
  const address = refcountsAddress(at, index, order);
  if (address == 0) return;
  storeRefcount(address, <u64>index, <u32>order, <u64>value);
}
