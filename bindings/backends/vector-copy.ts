// SPDX-License-Identifier: MIT
// Copying an I/O vector into one contiguous buffer and back, for backends whose platform call
// moves one buffer at a time (a worker message, an IndexedDB record set, a staged OPFS write).

/** Copies `buffers`, one after another, to the start of `target` (at least their total length). */
export function gatherInto(buffers: readonly Uint8Array[], target: Uint8Array): void {
  let at = 0;
  for (const source of buffers) {
    target.set(source, at);
    at += source.byteLength;
  }
}

/** Fills `buffers`, in order, from the start of `data` (at least their total length). */
export function scatterFrom(data: Uint8Array, buffers: readonly Uint8Array[]): void {
  let at = 0;
  for (const target of buffers) {
    target.set(data.subarray(at, at + target.byteLength));
    at += target.byteLength;
  }
}
