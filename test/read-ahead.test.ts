// SPDX-License-Identifier: MIT
// The block cache with read-ahead (bindings/backends/read-ahead.ts): the blocks a read needs are
// fetched before the blocks it reads ahead or around, so a fetcher that serves its calls in order
// (e.g. one decoding worker) answers the waiting read first.

import { describe, expect, it } from 'vitest';
import { ReadAheadCache } from '../bindings/backends/read-ahead.js';

const BLOCK = 16;

/** A cache of 64 blocks whose fetches are recorded in order; block i holds the byte i. */
function recordingCache(options: { maxAheadBlocks: number; neighbourhoodBlocks?: number }): { cache: ReadAheadCache; fetched: number[] } {
  const fetched: number[] = [];
  const cache = new ReadAheadCache(BLOCK, 64 * BLOCK, async (index) => {
    fetched.push(index);
    return new Uint8Array(BLOCK).fill(index);
  }, { cacheBlocks: 64, ...options });
  return { cache, fetched };
}

describe('ReadAheadCache fetch order', () => {
  it('fetches a missed block before the rest of its neighbourhood', async () => {
    const { cache, fetched } = recordingCache({ maxAheadBlocks: 0, neighbourhoodBlocks: 8 });
    const target = new Uint8Array(4);
    await cache.read(13 * BLOCK + 2, target);
    expect(target).toEqual(new Uint8Array(4).fill(13));
    expect(fetched[0]).toBe(13);
    expect([...fetched].sort((a, b) => a - b)).toEqual([8, 9, 10, 11, 12, 13, 14, 15]);
  });

  it('fetches the blocks a sequential read needs before those it reads ahead', async () => {
    const { cache, fetched } = recordingCache({ maxAheadBlocks: 4 });
    await cache.read(0, new Uint8Array(BLOCK));
    fetched.length = 0;
    // Sequential: the window opens; the read needs blocks 1 and 2, neither cached.
    const target = new Uint8Array(2 * BLOCK);
    await cache.read(BLOCK, target);
    expect(target).toEqual(new Uint8Array([...new Uint8Array(BLOCK).fill(1), ...new Uint8Array(BLOCK).fill(2)]));
    expect(fetched.slice(0, 2)).toEqual([1, 2]);
    expect(fetched.length).toBeGreaterThan(2);
  });
});
