// SPDX-License-Identifier: MIT
// The L2 slice cache: fixed slots of slice bytes in linear memory, found by host offset through
// an open-addressing hash, evicted least recently used. Sans I/O: a miss picks a victim slot and
// asks TypeScript (the NEED record) to read the slice into it, then to call commitSliceLoad.

import { sliceBits } from './geometry';

let slotCount: u32 = 0;
let slotsPtr: usize = 0; // slotCount * slice bytes
let keysPtr: usize = 0; // u64 host offset of the slice in each slot; 0 = empty (never an L2 offset)
let lastUsePtr: usize = 0; // u32 use clock per slot
let hashPtr: usize = 0; // i32 slot per bucket, -1 = free
let hashMask: u32 = 0;
let useClock: u32 = 0;

let pendingSlot: i32 = -1;
let pendingHostOffset: u64 = 0;

/** Bytes the cache bookkeeping needs for `slots` slots (beside the slots themselves). */
export function cacheBookkeepingBytes(slots: u32): usize {
  return <usize>slots * (8 + 4) + (<usize>bucketCountFor(slots) << 2);
}

function bucketCountFor(slots: u32): u32 {
  // A power of two at least twice the slots keeps linear-probe chains short.
  return <u32>1 << (32 - clz<u32>(slots * 2 - 1));
}

/**
 * Lays the cache out at `at` (16-byte aligned) for `slots` slots (>= 1) and empties it.
 * Returns the first byte past it.
 */
export function placeCache(at: usize, slots: u32): usize {
  slotCount = slots;
  slotsPtr = at;
  keysPtr = slotsPtr + (<usize>slots << sliceBits);
  lastUsePtr = keysPtr + (<usize>slots << 3);
  hashPtr = (lastUsePtr + (<usize>slots << 2) + 15) & ~<usize>15;
  const buckets = bucketCountFor(slots);
  hashMask = buckets - 1;
  memory.fill(keysPtr, 0, <usize>slots << 3);
  memory.fill(lastUsePtr, 0, <usize>slots << 2);
  memory.fill(hashPtr, 0xff, <usize>buckets << 2);
  useClock = 0;
  pendingSlot = -1;
  return hashPtr + (<usize>buckets << 2);
}

/** Linear-memory address of slot `slot`'s slice bytes. */
@inline export function slotAddress(slot: i32): usize {
  return slotsPtr + (<usize>slot << sliceBits);
}

@inline function keyOf(slot: i32): u64 { return load<u64>(keysPtr + (<usize>slot << 3)); }
@inline function bucketOf(hostOffset: u64): u32 {
  // Fibonacci hashing of the slice number.
  return <u32>(((hostOffset >> sliceBits) * 0x9e3779b97f4a7c15) >> 32) & hashMask;
}
@inline function bucketSlot(bucket: u32): i32 { return load<i32>(hashPtr + (<usize>bucket << 2)); }
@inline function setBucket(bucket: u32, slot: i32): void { store<i32>(hashPtr + (<usize>bucket << 2), slot); }

/** The slot holding the slice at `hostOffset` (marking it used), or -1 on a miss. */
export function findSlice(hostOffset: u64): i32 {
  let bucket = bucketOf(hostOffset);
  while (true) {
    const slot = bucketSlot(bucket);
    if (slot < 0) return -1;
    if (keyOf(slot) == hostOffset) {
      store<u32>(lastUsePtr + (<usize>slot << 2), ++useClock);
      return slot;
    }
    bucket = (bucket + 1) & hashMask;
  }
}

/**
 * Prepares a load of the slice at `hostOffset`: evicts the least recently used slot and returns
 * it. The caller reads the slice bytes into slotAddress(slot), then calls commitSliceLoad.
 */
export function beginSliceLoad(hostOffset: u64): i32 {
  let victim: i32 = 0;
  let oldest: u32 = 0xffffffff;
  for (let slot: i32 = 0; slot < <i32>slotCount; slot++) {
    if (keyOf(slot) == 0) { victim = slot; break; }
    const used = load<u32>(lastUsePtr + (<usize>slot << 2));
    if (used < oldest) { oldest = used; victim = slot; }
  }
  if (keyOf(victim) != 0) removeKey(victim);
  pendingSlot = victim;
  pendingHostOffset = hostOffset;
  return victim;
}

/** Makes the slot prepared by beginSliceLoad findable. Returns false if no load was pending. */
export function commitSliceLoad(): bool {
  if (pendingSlot < 0) return false;
  const slot = pendingSlot;
  pendingSlot = -1;
  store<u64>(keysPtr + (<usize>slot << 3), pendingHostOffset);
  store<u32>(lastUsePtr + (<usize>slot << 2), ++useClock);
  let bucket = bucketOf(pendingHostOffset);
  while (bucketSlot(bucket) >= 0) bucket = (bucket + 1) & hashMask;
  setBucket(bucket, slot);
  return true;
}

/** Drops every cached slice (e.g. after the tables changed underneath). */
export function clearCache(): void {
  memory.fill(keysPtr, 0, <usize>slotCount << 3);
  memory.fill(hashPtr, 0xff, (<usize>hashMask + 1) << 2);
  pendingSlot = -1;
}

// Removes `slot`'s key from the hash with backward-shift deletion (no tombstones).
function removeKey(slot: i32): void {
  const key = keyOf(slot);
  let bucket = bucketOf(key);
  while (bucketSlot(bucket) != slot) bucket = (bucket + 1) & hashMask;
  let hole = bucket;
  let next = (hole + 1) & hashMask;
  while (bucketSlot(next) >= 0) {
    const home = bucketOf(keyOf(bucketSlot(next)));
    // Move the entry back into the hole unless its home lies cyclically in (hole, next].
    const distanceToNext = (next - home) & hashMask;
    const distanceToHole = (hole - home) & hashMask;
    if (distanceToHole < distanceToNext) {
      setBucket(hole, bucketSlot(next));
      hole = next;
    }
    next = (next + 1) & hashMask;
  }
  setBucket(hole, -1);
  store<u64>(keysPtr + (<usize>slot << 3), 0);
}
