// SPDX-License-Identifier: MIT
// A small seeded PRNG for tests: reproducible data, sizes and schedules from one 32-bit seed.

/** A deterministic pseudo-random source; the same seed always gives the same sequence. */
export interface Prng {
  /** The next value, a uniformly distributed uint32. */
  next(): number;
  /** An integer in [0, maxExclusive); maxExclusive must be a positive safe integer. */
  int(maxExclusive: number): number;
  /** Fills `buf` with random bytes and returns it. */
  fill<T extends Uint8Array>(buf: T): T;
}

/**
 * Creates a PRNG from `seed` (any number; only its low 32 bits count). The generator is a
 * mulberry32-style counter hash: a Weyl sequence step followed by a multiply/xor-shift mix,
 * period 2^32, good enough for test data and schedules (not for anything cryptographic).
 */
export function makePrng(seed: number): Prng {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return (z ^ (z >>> 14)) >>> 0;
  };
  return {
    next,
    int(maxExclusive: number): number {
      if (!Number.isSafeInteger(maxExclusive) || maxExclusive <= 0) {
        throw new RangeError(`prng.int: bad bound ${maxExclusive}`);
      }
      if (maxExclusive <= 0x100000000) return Math.floor((next() / 0x100000000) * maxExclusive);
      // 53 random bits for bounds beyond 2^32.
      const hi = next() >>> 11;
      const lo = next();
      return Math.floor(((hi * 0x100000000 + lo) / 2 ** 53) * maxExclusive);
    },
    fill<T extends Uint8Array>(buf: T): T {
      const n = buf.length;
      let i = 0;
      for (; i + 4 <= n; i += 4) {
        const v = next();
        buf[i] = v;
        buf[i + 1] = v >>> 8;
        buf[i + 2] = v >>> 16;
        buf[i + 3] = v >>> 24;
      }
      if (i < n) {
        let v = next();
        for (; i < n; i++, v >>>= 8) buf[i] = v;
      }
      return buf;
    },
  };
}
