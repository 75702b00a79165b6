// SPDX-License-Identifier: MIT
// The block cache with read-ahead (bindings/backends/read-ahead.ts): the blocks a read needs are
// fetched before the blocks it reads ahead or around, so a fetcher that serves its calls in order
// (e.g. one decoding worker) answers the waiting read first; with fetchRun, the blocks read ahead
// or around go in runs, one call a run, and a run's failure or a write during it is handled per
// block.

import { describe, expect, it } from 'vitest';
import { ReadAheadCache } from '../bindings/backends/read-ahead.js';

const BLOCK = 16;

/** Block i's bytes: all i. */
const blockBytes = (index: number) => new Uint8Array(BLOCK).fill(index);

/**
 * A cache of 64 blocks whose fetches are recorded in order, a single block as its index and, with
 * `runs`, a run through fetchRun as [first, count]; block i holds the byte i.
 */
function recordingCache(options: { maxAheadBlocks: number; neighbourhoodBlocks?: number; runs?: boolean }): { cache: ReadAheadCache; fetched: (number | [number, number])[] } {
  const fetched: (number | [number, number])[] = [];
  const fetchRun = async (first: number, count: number) => {
    fetched.push([first, count]);
    return Array.from({ length: count }, (_, i) => blockBytes(first + i));
  };
  const cache = new ReadAheadCache(BLOCK, 64 * BLOCK, async (index) => {
    fetched.push(index);
    return blockBytes(index);
  }, { cacheBlocks: 64, maxAheadBlocks: options.maxAheadBlocks, neighbourhoodBlocks: options.neighbourhoodBlocks, fetchRun: options.runs ? fetchRun : undefined });
  return { cache, fetched };
}

describe('ReadAheadCache fetch order', () => {
  it('fetches a missed block before the rest of its neighbourhood', async () => {
    const { cache, fetched } = recordingCache({ maxAheadBlocks: 0, neighbourhoodBlocks: 8 });
    const target = new Uint8Array(4);
    await cache.read(13 * BLOCK + 2, target);
    expect(target).toEqual(new Uint8Array(4).fill(13));
    expect(fetched[0]).toBe(13);
    expect([...fetched as number[]].sort((a, b) => a - b)).toEqual([8, 9, 10, 11, 12, 13, 14, 15]);
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

describe('ReadAheadCache runs (fetchRun)', () => {
  it('fetches a missed block by itself, then each run of its neighbourhood not at hand with one call', async () => {
    const { cache, fetched } = recordingCache({ maxAheadBlocks: 0, neighbourhoodBlocks: 8, runs: true });
    await cache.read(10 * BLOCK, new Uint8Array(1)); // block 10 and the runs 8-9 and 11-15
    fetched.length = 0;
    const target = new Uint8Array(4);
    await cache.read(21 * BLOCK + 2, target); // block 21; its neighbourhood 16-23
    expect(target).toEqual(new Uint8Array(4).fill(21));
    expect(fetched).toEqual([21, [16, 5], [22, 2]]);
    for (const index of [16, 20, 22, 23]) {
      const near = new Uint8Array(BLOCK);
      expect(cache.readCached(index * BLOCK, near)).toBe(true);
      expect(near).toEqual(blockBytes(index));
    }
  });

  it('reads ahead with one call for the blocks of the window not at hand', async () => {
    const { cache, fetched } = recordingCache({ maxAheadBlocks: 4, runs: true });
    await cache.read(0, new Uint8Array(BLOCK));
    await cache.read(BLOCK, new Uint8Array(BLOCK)); // sequential: window 1, block 2 ahead
    await cache.read(2 * BLOCK, new Uint8Array(BLOCK)); // window 2: blocks 3 and 4 ahead
    await cache.read(3 * BLOCK, new Uint8Array(BLOCK)); // window 4: blocks 5-7 ahead
    expect(fetched).toEqual([0, 1, 2, [3, 2], [5, 3]]);
  });

  it('drops a run that fails; a read that needs one of its blocks fetches it again', async () => {
    let failRuns = true;
    const fetched: (number | [number, number])[] = [];
    const cache = new ReadAheadCache(BLOCK, 64 * BLOCK, async (index) => {
      fetched.push(index);
      return blockBytes(index);
    }, {
      cacheBlocks: 64,
      maxAheadBlocks: 0,
      neighbourhoodBlocks: 4,
      fetchRun: async (first, count) => {
        fetched.push([first, count]);
        if (failRuns) throw new Error('run failed');
        return Array.from({ length: count }, (_, i) => blockBytes(first + i));
      },
    });
    await cache.read(0, new Uint8Array(1)); // block 0; the run 1-3 fails
    await new Promise((resolve) => setTimeout(resolve, 0));
    failRuns = false;
    const target = new Uint8Array(BLOCK);
    expect(cache.readCached(2 * BLOCK, target)).toBe(false);
    await cache.read(2 * BLOCK, target);
    expect(target).toEqual(blockBytes(2));
    expect(fetched).toEqual([0, [1, 3], 2, 1, 3]); // block 2, then its neighbours one by one (single blocks)
  });

  it('does not cache a block of a run in flight that was written meanwhile', async () => {
    let releaseRun!: () => void;
    const held = new Promise<void>((resolve) => { releaseRun = resolve; });
    const cache = new ReadAheadCache(BLOCK, 64 * BLOCK, async (index) => blockBytes(index), {
      cacheBlocks: 64,
      maxAheadBlocks: 0,
      neighbourhoodBlocks: 4,
      fetchRun: async (first, count) => {
        const blocks = Array.from({ length: count }, (_, i) => blockBytes(first + i)); // the bytes before the write
        await held;
        return blocks;
      },
    });
    await cache.read(0, new Uint8Array(1)); // block 0; the run 1-3 is held
    cache.overwrite(2 * BLOCK, new Uint8Array(BLOCK).fill(0xee));
    releaseRun();
    await new Promise((resolve) => setTimeout(resolve, 0));
    const target = new Uint8Array(BLOCK);
    expect(cache.readCached(BLOCK, target)).toBe(true); // the run's other blocks are cached
    expect(target).toEqual(blockBytes(1));
    expect(cache.readCached(2 * BLOCK, target)).toBe(false); // the written one is not
  });
});
