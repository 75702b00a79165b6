// SPDX-License-Identifier: MIT
// Table-driven tests of the wasm merge core (assembly/merge.ts) through its TypeScript face.

import { describe, it, expect, beforeAll } from 'vitest';
import type { MergeCore } from '../bindings/core/merge-core.js';
import { newMergeCore, runMerge, type DecodedMerge } from './helpers/merge-decode.js';

let core: MergeCore;
beforeAll(async () => { core = await newMergeCore(); });

const merged = (requests: [number, number][], ...rest: Parameters<typeof runMerge> extends [unknown, unknown, ...infer R] ? R : never) => {
  const result = runMerge(core, requests, ...rest);
  if (result === 'output-full') throw new Error('unexpected output-full');
  return result;
};

// Each case: requests [offset, length] in submission order and the expected extents as
// [offset, length, pieces].
const FULL_CASES: { name: string; requests: [number, number][]; extents: [number, number, [number, number, number][]][] }[] = [
  { name: 'empty batch', requests: [], extents: [] },
  { name: 'single request', requests: [[512, 4096]], extents: [[512, 4096, [[0, 0, 4096]]]] },
  { name: 'adjacent in order', requests: [[0, 4096], [4096, 4096]],
    extents: [[0, 8192, [[0, 0, 4096], [1, 0, 4096]]]] },
  { name: 'adjacent submitted backwards', requests: [[4096, 4096], [0, 4096]],
    extents: [[0, 8192, [[1, 0, 4096], [0, 0, 4096]]]] },
  { name: 'disjoint stay apart', requests: [[0, 100], [200, 100]],
    extents: [[0, 100, [[0, 0, 100]]], [200, 100, [[1, 0, 100]]]] },
  { name: 'overlap, later request higher', requests: [[0, 100], [50, 100]],
    extents: [[0, 150, [[0, 0, 50], [1, 0, 100]]]] },
  { name: 'overlap, later request lower', requests: [[50, 100], [0, 100]],
    extents: [[0, 150, [[1, 0, 100], [0, 50, 50]]]] },
  { name: 'contained: the outer request\'s tail survives', requests: [[0, 100], [20, 10]],
    extents: [[0, 100, [[0, 0, 20], [1, 0, 10], [0, 30, 70]]]] },
  { name: 'contained in a later request: nothing of the inner survives', requests: [[20, 10], [0, 100]],
    extents: [[0, 100, [[1, 0, 100]]]] },
  { name: 'many requests at one offset: the last wins', requests: [[0, 10], [0, 10], [0, 10], [0, 10], [0, 10]],
    extents: [[0, 10, [[4, 0, 10]]]] },
  { name: 'same offset, longer earlier request keeps its tail', requests: [[0, 20], [0, 10]],
    extents: [[0, 20, [[1, 0, 10], [0, 10, 10]]]] },
  { name: 'zero-length requests produce nothing', requests: [[0, 0], [10, 5], [15, 0]],
    extents: [[10, 5, [[1, 0, 5]]]] },
  { name: 'far past 2^32', requests: [[2 ** 40 + 512, 4096], [2 ** 40 + 4608, 4096], [2 ** 33, 1]],
    extents: [[2 ** 33, 1, [[2, 0, 1]]], [2 ** 40 + 512, 8192, [[0, 0, 4096], [1, 0, 4096]]]] },
  { name: 'at the 2^53 limit', requests: [[2 ** 53 - 8, 8], [2 ** 53 - 16, 8]],
    extents: [[2 ** 53 - 16, 16, [[1, 0, 8], [0, 0, 8]]]] },
  { name: 'offsets differing only above bit 32 sort correctly', requests: [[2 ** 32 + 5, 1], [5, 1], [2 ** 33 + 5, 1]],
    extents: [[5, 1, [[1, 0, 1]]], [2 ** 32 + 5, 1, [[0, 0, 1]]], [2 ** 33 + 5, 1, [[2, 0, 1]]]] },
  { name: 'three-way overlap ladder', requests: [[0, 30], [10, 30], [20, 30]],
    extents: [[0, 50, [[0, 0, 10], [1, 0, 10], [2, 0, 30]]]] },
];

describe('mergeWrites, full mode', () => {
  for (const c of FULL_CASES) {
    it(c.name, () => {
      const result = merged(c.requests);
      expect(result.extents.map((e) => [e.offset, e.length, e.pieces])).toEqual(c.extents);
    });
  }

  it('maps each request to every extent over its range, including superseded requests', () => {
    const result = merged([[20, 10], [0, 100], [300, 10]]);
    expect(result.requestMap).toEqual([[0, 1], [0, 1], [1, 1]]);
  });

  it('zero-length requests map to no extent', () => {
    expect(merged([[0, 0], [0, 10]]).requestMap[0][1]).toBe(0);
  });

  it('extents tile their range exactly with their pieces', () => {
    const result = merged([[0, 100], [20, 10], [90, 40], [500, 3], [130, 1]]);
    for (const extent of result.extents) {
      expect(extent.pieces.reduce((sum, p) => sum + p[2], 0)).toBe(extent.length);
    }
  });
});

describe('mergeWrites caps', () => {
  it('maxIov splits a run of adjacent requests', () => {
    const requests: [number, number][] = [0, 1, 2, 3, 4].map((i) => [i * 10, 10]);
    const result = merged(requests, 'full', 2);
    expect(result.extents.map((e) => [e.offset, e.length, e.pieces.length])).toEqual([[0, 20, 2], [20, 20, 2], [40, 10, 1]]);
    expect(result.requestMap).toEqual([[0, 1], [0, 1], [1, 1], [1, 1], [2, 1]]);
  });

  it('maxTransfer splits inside a request', () => {
    const result = merged([[1000, 250]], 'full', 1024, 100);
    expect(result.extents.map((e) => [e.offset, e.length, e.pieces])).toEqual([
      [1000, 100, [[0, 0, 100]]], [1100, 100, [[0, 100, 100]]], [1200, 50, [[0, 200, 50]]]]);
    expect(result.requestMap).toEqual([[0, 3]]);
  });

  it('both caps together keep every byte', () => {
    const requests: [number, number][] = Array.from({ length: 50 }, (_, i) => [i * 7, 7]);
    const result = merged(requests, 'full', 3, 16);
    expect(result.extents.every((e) => e.pieces.length <= 3 && e.length <= 16)).toBe(true);
    expect(result.extents.reduce((sum, e) => sum + e.length, 0)).toBe(350);
  });

  it('reports output-full instead of overflowing its regions', () => {
    const requests: [number, number][] = Array.from({ length: 4096 }, (_, i) => [i * 100, 10]);
    expect(runMerge(core, requests, 'full', 1024, 1)).toBe('output-full');
  });
});

describe('mergeWrites modes', () => {
  it('off: one extent per request in submission order, overlaps kept whole', () => {
    const result = merged([[4096, 4096], [0, 4096], [100, 10]], 'off');
    expect(result.extents.map((e) => [e.offset, e.length, e.pieces])).toEqual([
      [4096, 4096, [[0, 0, 4096]]], [0, 4096, [[1, 0, 4096]]], [100, 10, [[2, 0, 10]]]]);
    expect(result.requestMap).toEqual([[0, 1], [1, 1], [2, 1]]);
  });

  it('off: identical requests keep separate extents', () => {
    expect(merged([[0, 10], [0, 10]], 'off').requestMap).toEqual([[0, 1], [1, 1]]);
  });

  it('adjacent: joins strictly sequential requests only', () => {
    const result = merged([[0, 100], [100, 100], [150, 10], [300, 10], [310, 10]], 'adjacent');
    // 0 -> 1 is a clean hand-over; 2 overlaps 1, so extents break around it.
    expect(result.extents.map((e) => [e.offset, e.length])).toEqual([[0, 150], [150, 10], [160, 40], [300, 20]]);
  });
});

describe('the gap hook', () => {
  it('raw (the default policy) never bridges a gap', () => {
    expect(merged([[0, 100], [200, 100]]).extents).toHaveLength(2);
  });

  it('bridges a gap inside one block when the format allows it, only in full mode', () => {
    core.setGapWithinBlock(12);
    try {
      const full = merged([[0, 100], [200, 100]]);
      expect(full.extents.map((e) => [e.offset, e.length, e.pieces])).toEqual([[0, 300, [[0, 0, 100], [-1, 0, 100], [1, 0, 100]]]]);
      expect(full.requestMap).toEqual([[0, 1], [0, 1]]);
      expect(merged([[0, 100], [200, 100]], 'adjacent').extents).toHaveLength(2);
      // A gap crossing a block boundary stays a gap.
      expect(merged([[4000, 50], [4200, 10]]).extents).toHaveLength(2);
    } finally {
      core.setGapWithinBlock(undefined);
    }
  });
});

describe('mergeWrites input checks', () => {
  const bad: [string, [number, number][]][] = [
    ['a negative offset', [[-1, 10]]],
    ['a fractional offset', [[0.5, 10]]],
    ['a range past 2^53', [[2 ** 53 - 4, 8]]],
    ['NaN length', [[0, NaN]]],
  ];
  for (const [name, requests] of bad) {
    it(`rejects ${name}`, () => {
      expect(() => runMerge(core, requests)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    });
  }
});

// A random cross-check of the core alone: applying its extents must equal applying the requests
// one by one. Byte sources are tracked as (request, offset) labels.
describe('mergeWrites against sequential application', () => {
  it('agrees on 2,000 random batches in every mode', () => {
    let seed = 0x9e3779b9;
    const next = () => { seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0; return seed; };
    for (let batch = 0; batch < 2000; batch++) {
      const count = 1 + (next() % 40);
      const requests: [number, number][] = [];
      for (let i = 0; i < count; i++) requests.push([next() % 600, next() % 80]);
      for (const mode of ['off', 'adjacent', 'full'] as const) {
        const maxIov = 1 + (next() % 6);
        const maxTransfer = 1 + (next() % 200);
        const result = merged(requests, mode, maxIov, maxTransfer) as DecodedMerge;
        const expected = new Map<number, string>();
        requests.forEach(([offset, length], r) => { for (let b = 0; b < length; b++) expected.set(offset + b, `${r}:${b}`); });
        const actual = new Map<number, string>();
        for (const extent of result.extents) {
          expect(extent.pieces.length).toBeLessThanOrEqual(maxIov);
          expect(extent.length).toBeLessThanOrEqual(maxTransfer);
          let at = extent.offset;
          for (const [r, off, len] of extent.pieces) for (let b = 0; b < len; b++) actual.set(at++, `${r}:${off + b}`);
        }
        if (mode === 'off') {
          // Unmerged extents are applied in order; later overwrite earlier.
          const applied = new Map<number, string>();
          for (const extent of result.extents) {
            let at = extent.offset;
            for (const [r, off, len] of extent.pieces) for (let b = 0; b < len; b++) applied.set(at++, `${r}:${off + b}`);
          }
          expect(applied, `seed batch ${batch} mode ${mode}`).toEqual(expected);
        } else {
          expect(actual, `batch ${batch} mode ${mode}`).toEqual(expected);
          for (let e = 1; e < result.extents.length; e++) {
            const previous = result.extents[e - 1];
            expect(result.extents[e].offset).toBeGreaterThanOrEqual(previous.offset + previous.length);
          }
        }
      }
    }
  });
});
