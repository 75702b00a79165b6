// SPDX-License-Identifier: MIT
// Slicing request data (one buffer or an iovec list) into the I/O vectors of merged writes,
// without copying: every output entry is a subarray of the caller's own buffers.

/**
 * Appends to `out` the views of `data` covering [offsetInData, offsetInData + length).
 * The range must lie inside the data.
 */
export function appendSlices(data: Uint8Array | readonly Uint8Array[], offsetInData: number, length: number,
                             out: Uint8Array[]): void {
  if (data instanceof Uint8Array) {
    out.push(data.subarray(offsetInData, offsetInData + length));
    return;
  }
  let skip = offsetInData;
  let remaining = length;
  for (let i = 0; i < data.length && remaining > 0; i++) {
    const part = data[i];
    if (skip >= part.byteLength) {
      skip -= part.byteLength;
      continue;
    }
    const take = Math.min(part.byteLength - skip, remaining);
    out.push(skip === 0 && take === part.byteLength ? part : part.subarray(skip, skip + take));
    remaining -= take;
    skip = 0;
  }
}

/**
 * Splits an I/O vector into consecutive runs of at most `maxIov` entries and `maxTransfer`
 * bytes each, cutting entries where needed. Returns [positionDelta, buffers] pairs.
 */
export function splitVector(buffers: Uint8Array[], maxIov: number, maxTransfer: number): [number, Uint8Array[]][] {
  // Within the caps (the usual case) the vector goes out as it is, minus empty entries.
  if (buffers.length <= maxIov) {
    let bytes = 0;
    let hasEmpty = false;
    for (const buffer of buffers) {
      bytes += buffer.byteLength;
      if (buffer.byteLength === 0) hasEmpty = true;
    }
    if (bytes <= maxTransfer) return bytes === 0 ? [] : [[0, hasEmpty ? buffers.filter((b) => b.byteLength > 0) : buffers]];
  }
  const runs: [number, Uint8Array[]][] = [];
  let current: Uint8Array[] = [];
  let currentStart = 0;
  let currentBytes = 0;
  let position = 0;
  for (const buffer of buffers) {
    let rest = buffer;
    while (rest.byteLength > 0) {
      if (current.length === maxIov || currentBytes === maxTransfer) {
        runs.push([currentStart, current]);
        current = [];
        currentStart = position;
        currentBytes = 0;
      }
      const take = Math.min(rest.byteLength, maxTransfer - currentBytes);
      current.push(take === rest.byteLength ? rest : rest.subarray(0, take));
      currentBytes += take;
      position += take;
      rest = rest.subarray(take);
    }
  }
  if (current.length > 0) runs.push([currentStart, current]);
  return runs;
}

// Shared read-only source of zeros for writeZeroes and gap placeholders; never handed to callers.
const ZERO_CHUNK = new Uint8Array(1 << 20);

/** Returns views of a shared zero buffer tiling `length` bytes (read-only: never write into them). */
export function zeroVector(length: number): Uint8Array[] {
  const data: Uint8Array[] = [];
  for (let done = 0; done < length; done += ZERO_CHUNK.byteLength) {
    data.push(ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.byteLength, length - done)));
  }
  return data;
}

/**
 * A vector of `totalBytes` bytes equal to `buffers` except where `replacements` (offsets relative
 * to the vector's start, ascending, not overlapping, inside it) put other bytes. Views, no copies.
 */
export function spliceVector(buffers: readonly Uint8Array[], totalBytes: number,
                             replacements: readonly { offset: number; data: Uint8Array }[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let position = 0;
  for (const { offset, data } of replacements) {
    if (offset > position) appendSlices(buffers, position, offset - position, out);
    out.push(data);
    position = offset + data.byteLength;
  }
  if (position < totalBytes) appendSlices(buffers, position, totalBytes - position, out);
  return out;
}
