// SPDX-License-Identifier: MIT
// `compare -s` (strict mode): besides the content, the two images' block status must match,
// compared as qemu-img compares it: run by run from both maps, advancing by the shorter run, the
// status flags (allocated, zero, data, offset known, reaching the end) equal at every step.

import type { MapEntry } from '../tools/qcow2-map.js';

/** The block status flags of a map entry that qemu-img compare -s compares. */
function statusFlags(entry: MapEntry, imageEnd: number): string {
  return [entry.present, entry.zero, entry.data, entry.offset !== undefined, entry.start + entry.length === imageEnd].map(Number).join('');
}

/**
 * The guest offset of the first step at which the block status of `a` and `b` (maps of images of
 * the same `size`, tiling it) differs, or -1 when it never does.
 */
export function firstBlockStatusMismatch(a: readonly MapEntry[], b: readonly MapEntry[], size: number): number {
  let i = 0;
  let j = 0;
  let offset = 0;
  while (offset < size && i < a.length && j < b.length) {
    if (statusFlags(a[i], size) !== statusFlags(b[j], size)) return offset;
    const next = Math.min(a[i].start + a[i].length, b[j].start + b[j].length);
    if (a[i].start + a[i].length === next) i++;
    if (b[j].start + b[j].length === next) j++;
    offset = next;
  }
  return -1;
}
