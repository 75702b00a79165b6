// SPDX-License-Identifier: MIT
// The refcount codec: reads and writes the refcount at an index of a block of refcounts laid out
// as in a refcount block (qcow2 spec, "Host cluster management"), for refcount_order 0..6.
// Widths below 8 bits fill each byte from its least significant bit; wider ones are big-endian.
// Used for the image's refcount blocks (refcount.ts) and the check's arrays (check.ts).

import { loadBE16, loadBE32, loadBE64, storeBE16, storeBE32, storeBE64 } from './format';

/** The largest refcount a width of 2^`order` bits holds. */
@inline export function maxRefcountOf(order: u32): u64 {
  return order == 6 ? <u64>-1 : (<u64>1 << (<u64>1 << order)) - 1;
}

/** The refcount at `index` of the refcounts of 2^`order` bits packed from address `base`. */
@inline export function loadRefcount(base: usize, index: u64, order: u32): u64 {
  switch (order) {
    case 3: return <u64>load<u8>(base + <usize>index);
    case 4: return <u64>loadBE16(base + (<usize>index << 1));
    case 5: return <u64>loadBE32(base + (<usize>index << 2));
    case 6: return loadBE64(base + (<usize>index << 3));
    default: {
      const bit = index << order;
      return (<u64>load<u8>(base + <usize>(bit >> 3)) >> (bit & 7)) & maxRefcountOf(order);
    }
  }
}

/** Sets the refcount at `index` (as loadRefcount) to `value`, which must fit the width. */
@inline export function storeRefcount(base: usize, index: u64, order: u32, value: u64): void {
  switch (order) {
    case 3: store<u8>(base + <usize>index, <u8>value); break;
    case 4: storeBE16(base + (<usize>index << 1), <u16>value); break;
    case 5: storeBE32(base + (<usize>index << 2), <u32>value); break;
    case 6: storeBE64(base + (<usize>index << 3), value); break;
    default: {
      const bit = index << order;
      const at = base + <usize>(bit >> 3);
      const mask = <u32>maxRefcountOf(order) << <u32>(bit & 7);
      store<u8>(at, <u8>((<u32>load<u8>(at) & ~mask) | ((<u32>value << <u32>(bit & 7)) & mask)));
    }
  }
}
