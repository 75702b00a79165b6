// SPDX-License-Identifier: MIT
// The flat reference disk the differential tests compare against: writes applied one by one in
// submission order, stored sparsely (4 KiB pages) so positions up to 2^53 cost nothing.

const PAGE_BYTES = 4096;

/** A byte-addressed model disk; unwritten bytes read as zeros. */
export class ModelDisk {
  private pages = new Map<number, Uint8Array>();

  /** Applies one write (one buffer or an iovec list) at `offset`. */
  write(offset: number, data: Uint8Array | readonly Uint8Array[]): void {
    const parts = data instanceof Uint8Array ? [data] : data;
    let at = offset;
    for (const part of parts) {
      let done = 0;
      while (done < part.byteLength) {
        const page = Math.floor(at / PAGE_BYTES);
        const inPage = at - page * PAGE_BYTES;
        const take = Math.min(PAGE_BYTES - inPage, part.byteLength - done);
        let bytes = this.pages.get(page);
        if (!bytes) this.pages.set(page, (bytes = new Uint8Array(PAGE_BYTES)));
        bytes.set(part.subarray(done, done + take), inPage);
        done += take;
        at += take;
      }
    }
  }

  /** Zeroes [offset, offset + length). */
  zero(offset: number, length: number): void {
    this.write(offset, new Uint8Array(length));
  }

  /** The model's bytes at [offset, offset + length). */
  read(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const at = offset + done;
      const page = Math.floor(at / PAGE_BYTES);
      const inPage = at - page * PAGE_BYTES;
      const take = Math.min(PAGE_BYTES - inPage, length - done);
      const bytes = this.pages.get(page);
      if (bytes) out.set(bytes.subarray(inPage, inPage + take), done);
      done += take;
    }
    return out;
  }
}
