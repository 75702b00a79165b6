// SPDX-License-Identifier: MIT
// What an image must hold after failures: the content of every acknowledged write, except where
// a failed write (whose range is unspecified) may have landed. The oracle of the fault and
// stress tests, applied to the file after close and reopen, not only to the live instance.

/** One guest write of a batch and how it settled. */
export interface SettledWrite {
  offset: number;
  data: Uint8Array;
  ok: boolean;
}

/** Expected guest content with a mask of the bytes a failed write left unspecified. */
export class AcknowledgedModel {
  private readonly expected: Uint8Array;
  /** 1 where `expected` is known. */
  private readonly known: Uint8Array;

  /** Starts from the image's content before any write (all of it known). */
  constructor(initial: Uint8Array) {
    this.expected = initial.slice();
    this.known = new Uint8Array(initial.byteLength).fill(1);
  }

  /**
   * Applies a batch in submission order. An acknowledged write sets its bytes; a failed write,
   * and any acknowledged write of the same batch overlapping a failed one, makes its bytes
   * unspecified (the batch may have merged them into one host write).
   */
  record(batch: readonly SettledWrite[]): void {
    const failed = batch.filter((w) => !w.ok);
    const overlapsFailure = (w: SettledWrite) =>
      failed.some((f) => f.offset < w.offset + w.data.byteLength && w.offset < f.offset + f.data.byteLength);
    for (const write of batch) {
      const end = write.offset + write.data.byteLength;
      if (write.ok && !overlapsFailure(write)) {
        this.expected.set(write.data, write.offset);
        this.known.fill(1, write.offset, end);
      } else {
        this.known.fill(0, write.offset, end);
      }
    }
  }

  /** Known bytes of the model. */
  knownBytes(): number {
    return this.known.reduce((sum, k) => sum + k, 0);
  }

  /** Undefined when `actual` (the whole guest content) holds every known byte, else where it does not. */
  firstMismatch(actual: Uint8Array): string | undefined {
    if (actual.byteLength !== this.expected.byteLength) return `size ${actual.byteLength}, expected ${this.expected.byteLength}`;
    for (let i = 0; i < actual.byteLength; i++) {
      if (this.known[i] === 1 && actual[i] !== this.expected[i]) {
        return `acknowledged byte lost at guest offset ${i}: ${actual[i]}, expected ${this.expected[i]}`;
      }
    }
    return undefined;
  }
}
