// SPDX-License-Identifier: MIT
// Metadata slice caches (L2 tables and refcount blocks): fixed slots of slice bytes in linear
// memory, found by host offset through an open-addressing hash, evicted least recently used,
// with a dirty flag and a generation per slot for write-back. Sans I/O: a miss picks a clean
// victim and TypeScript reads the slice into it (or the core installs a zeroed slice for a table
// it just allocated); dirty slices are written by TypeScript (bindings/qcow2/qcow2-writeback.ts).

import { sliceBits } from './geometry';

/** Which cache. */
export enum CacheId {
  L2 = 0,
  REFCOUNT = 1,
}
const CACHE_COUNT: i32 = 2;

// Per-cache descriptor, one u64 field per row (static memory below __heap_base).
const F_SLOT_COUNT: i32 = 0;
const F_SLOTS: i32 = 1; // slot bytes
const F_KEYS: i32 = 2; // u64 host offset per slot; 0 = empty (offset 0 is the header, never a table)
const F_LAST_USE: i32 = 3; // u32 use clock per slot
const F_GENERATION: i32 = 4; // u32 per slot: bumped on every change
const F_DIRTY: i32 = 5; // u8 per slot
const F_HASH: i32 = 6; // i32 slot per bucket, -1 = free
const F_HASH_MASK: i32 = 7;
const F_CLOCK: i32 = 8;
const FIELD_COUNT: i32 = 9;
// Key of a slot reserved for a load in progress: never a table offset (tables are cluster-aligned
// and never at 0), never matched by findSlice, never chosen as a victim.
const RESERVED_KEY: u64 = 1;
const descriptors: usize = memory.data(CACHE_COUNT * FIELD_COUNT * 8, 16);

@inline function field(cache: i32, f: i32): u64 { return load<u64>(descriptors + (<usize>(cache * FIELD_COUNT + f) << 3)); }
@inline function setField(cache: i32, f: i32, value: u64): void { store<u64>(descriptors + (<usize>(cache * FIELD_COUNT + f) << 3), value); }
@inline function ptr(cache: i32, f: i32): usize { return <usize>field(cache, f); }

/** Bytes a cache of `slots` slots needs beside its slice bytes. */
export function cacheBookkeepingBytes(slots: u32): usize {
  return <usize>slots * (8 + 4 + 4 + 1) + (<usize>bucketCountFor(slots) << 2) + 64;
}

function bucketCountFor(slots: u32): u32 {
  // A power of two at least twice the slots keeps linear-probe chains short.
  return <u32>1 << (32 - clz<u32>(slots * 2 - 1));
}

/**
 * Lays cache `cache` out at `at` (16-byte aligned) with `slots` (>= 1) empty slots of slice bytes.
 * Returns the first byte past it.
 */
export function placeCache(cache: i32, at: usize, slots: u32): usize {
  setField(cache, F_SLOT_COUNT, slots);
  const slotBytes = <usize>slots << sliceBits;
  setField(cache, F_SLOTS, at);
  let next = at + slotBytes;
  setField(cache, F_KEYS, next); next += <usize>slots << 3;
  setField(cache, F_LAST_USE, next); next += <usize>slots << 2;
  setField(cache, F_GENERATION, next); next += <usize>slots << 2;
  setField(cache, F_DIRTY, next); next += <usize>slots;
  next = (next + 15) & ~<usize>15;
  const buckets = bucketCountFor(slots);
  setField(cache, F_HASH, next);
  setField(cache, F_HASH_MASK, buckets - 1);
  memory.fill(ptr(cache, F_KEYS), 0, next - ptr(cache, F_KEYS));
  memory.fill(next, 0xff, <usize>buckets << 2);
  setField(cache, F_CLOCK, 0);
  return next + (<usize>buckets << 2);
}

/** Linear-memory address of the slice bytes of `slot`. */
export function slotAddress(cache: i32, slot: i32): usize {
  return ptr(cache, F_SLOTS) + (<usize>slot << sliceBits);
}

/** Slots of `cache`. */
export function slotCount(cache: i32): i32 { return <i32>field(cache, F_SLOT_COUNT); }
/** Host offset of the slice in `slot` (0 = empty). */
export function slotKey(cache: i32, slot: i32): u64 { return load<u64>(ptr(cache, F_KEYS) + (<usize>slot << 3)); }
/** True when `slot` holds changes not yet written. */
export function isSlotDirty(cache: i32, slot: i32): bool { return load<u8>(ptr(cache, F_DIRTY) + <usize>slot) != 0; }
/** Change counter of `slot`: a write-back may mark it clean only if it did not move. */
export function slotGeneration(cache: i32, slot: i32): u32 { return load<u32>(ptr(cache, F_GENERATION) + (<usize>slot << 2)); }

/** Marks `slot` changed (dirty, new generation). */
export function markSlotDirty(cache: i32, slot: i32): void {
  store<u8>(ptr(cache, F_DIRTY) + <usize>slot, 1);
  const at = ptr(cache, F_GENERATION) + (<usize>slot << 2);
  store<u32>(at, load<u32>(at) + 1);
}

/** Marks `slot` written, if its generation is still `generation`. Returns whether it did. */
export function markSlotClean(cache: i32, slot: i32, generation: u32): bool {
  if (slotGeneration(cache, slot) != generation) return false;
  store<u8>(ptr(cache, F_DIRTY) + <usize>slot, 0);
  return true;
}

@inline function hashMask(cache: i32): u32 { return <u32>field(cache, F_HASH_MASK); }
@inline function bucketOf(cache: i32, hostOffset: u64): u32 {
  // Fibonacci hashing of the slice number.
  return <u32>(((hostOffset >> sliceBits) * 0x9e3779b97f4a7c15) >> 32) & hashMask(cache);
}
@inline function bucketSlot(cache: i32, bucket: u32): i32 { return load<i32>(ptr(cache, F_HASH) + (<usize>bucket << 2)); }
@inline function setBucket(cache: i32, bucket: u32, slot: i32): void { store<i32>(ptr(cache, F_HASH) + (<usize>bucket << 2), slot); }

function touch(cache: i32, slot: i32): void {
  const clock = <u32>field(cache, F_CLOCK) + 1;
  setField(cache, F_CLOCK, clock);
  store<u32>(ptr(cache, F_LAST_USE) + (<usize>slot << 2), clock);
}

/** The slot holding the slice at `hostOffset` (marking it used), or -1 on a miss. */
export function findSlice(cache: i32, hostOffset: u64): i32 {
  let bucket = bucketOf(cache, hostOffset);
  while (true) {
    const slot = bucketSlot(cache, bucket);
    if (slot < 0) return -1;
    if (slotKey(cache, slot) == hostOffset) {
      touch(cache, slot);
      return slot;
    }
    bucket = (bucket + 1) & hashMask(cache);
  }
}

// The least recently used clean slot (an empty one first), or -1 when every slot is dirty.
function chooseVictim(cache: i32): i32 {
  let victim: i32 = -1;
  let oldest: u32 = 0xffffffff;
  const count = slotCount(cache);
  for (let slot: i32 = 0; slot < count; slot++) {
    const key = slotKey(cache, slot);
    if (key == 0) return slot;
    if (key == RESERVED_KEY || isSlotDirty(cache, slot)) continue;
    const used = load<u32>(ptr(cache, F_LAST_USE) + (<usize>slot << 2));
    if (used < oldest) { oldest = used; victim = slot; }
  }
  return victim;
}

/** Slots a new slice could take now: empty or clean, not reserved for a load. */
export function evictableSlotCount(cache: i32): i32 {
  let count = 0;
  for (let slot: i32 = 0; slot < slotCount(cache); slot++) {
    const key = slotKey(cache, slot);
    if (key == 0 || (key != RESERVED_KEY && !isSlotDirty(cache, slot))) count++;
  }
  return count;
}

/**
 * Reserves a slot for loading a slice: evicts the least recently used clean slot and returns it,
 * or -1 when every slot is dirty or reserved (write back first). The caller reads the slice into
 * slotAddress(cache, slot), then calls commitSliceLoad (or abandonSliceLoad on failure).
 */
export function beginSliceLoad(cache: i32): i32 {
  const victim = chooseVictim(cache);
  if (victim < 0) return -1;
  if (slotKey(cache, victim) != 0) removeKey(cache, victim);
  store<u64>(ptr(cache, F_KEYS) + (<usize>victim << 3), RESERVED_KEY);
  return victim;
}

/**
 * Makes the slice loaded into reserved `slot` findable as `hostOffset`. Returns false (and frees
 * the slot) when the slice got cached meanwhile, or when `slot` was not reserved.
 */
export function commitSliceLoad(cache: i32, slot: i32, hostOffset: u64): bool {
  if (<u32>slot >= <u32>slotCount(cache) || slotKey(cache, slot) != RESERVED_KEY) return false;
  store<u64>(ptr(cache, F_KEYS) + (<usize>slot << 3), 0);
  if (findSlice(cache, hostOffset) >= 0) return false;
  insertKey(cache, slot, hostOffset);
  return true;
}

/** Frees reserved `slot` after a failed load. */
export function abandonSliceLoad(cache: i32, slot: i32): void {
  if (<u32>slot < <u32>slotCount(cache) && slotKey(cache, slot) == RESERVED_KEY) {
    store<u64>(ptr(cache, F_KEYS) + (<usize>slot << 3), 0);
  }
}

/**
 * Installs an all-zero slice for `hostOffset` without reading it (a table the core just
 * allocated), dirty. Returns the slot, or -1 when every slot is dirty.
 */
export function installZeroSlice(cache: i32, hostOffset: u64): i32 {
  const existing = findSlice(cache, hostOffset);
  const slot = existing >= 0 ? existing : chooseVictim(cache);
  if (slot < 0) return -1;
  if (existing < 0) {
    if (slotKey(cache, slot) != 0) removeKey(cache, slot);
    insertKey(cache, slot, hostOffset);
  }
  memory.fill(slotAddress(cache, slot), 0, <usize>1 << sliceBits);
  markSlotDirty(cache, slot);
  return slot;
}

function insertKey(cache: i32, slot: i32, hostOffset: u64): void {
  store<u64>(ptr(cache, F_KEYS) + (<usize>slot << 3), hostOffset);
  touch(cache, slot);
  let bucket = bucketOf(cache, hostOffset);
  while (bucketSlot(cache, bucket) >= 0) bucket = (bucket + 1) & hashMask(cache);
  setBucket(cache, bucket, slot);
}

// Removes `slot`'s key from the hash with backward-shift deletion (no tombstones).
function removeKey(cache: i32, slot: i32): void {
  const mask = hashMask(cache);
  let bucket = bucketOf(cache, slotKey(cache, slot));
  while (bucketSlot(cache, bucket) != slot) bucket = (bucket + 1) & mask;
  let hole = bucket;
  let next = (hole + 1) & mask;
  while (bucketSlot(cache, next) >= 0) {
    const home = bucketOf(cache, slotKey(cache, bucketSlot(cache, next)));
    // Move the entry back into the hole unless its home lies cyclically in (hole, next].
    if (((hole - home) & mask) < ((next - home) & mask)) {
      setBucket(cache, hole, bucketSlot(cache, next));
      hole = next;
    }
    next = (next + 1) & mask;
  }
  setBucket(cache, hole, -1);
  store<u64>(ptr(cache, F_KEYS) + (<usize>slot << 3), 0);
  store<u8>(ptr(cache, F_DIRTY) + <usize>slot, 0);
}

/** Host offset of the slice in `slot` as a double (0 = empty), for TypeScript. */
export function slotHostOffset(cache: i32, slot: i32): f64 { return <f64>slotKey(cache, slot); }

/** commitSliceLoad for TypeScript: the host offset as a double. */
export function commitSliceLoadAt(cache: i32, slot: i32, hostOffset: f64): bool {
  return commitSliceLoad(cache, slot, <u64>hostOffset);
}
