// SPDX-License-Identifier: MIT
// sparseRuns (convert's -S) probes only every n-th sector; these cases hold it to the plain rule
// checked sector by sector: zero-sector runs of at least minSparseBytes (or all of the data) are
// skipped, everything else is written, runs in order, neighbours of one kind merged.

import { expect, it } from 'vitest';
import { sparseRuns } from '../bindings/tools/convert-plan.js';
import { makePrng } from './helpers/prng.js';

type Run = [offset: number, length: number, data: boolean];

/** The rule, sector by sector, without probing. */
function expectedRuns(guestOffset: number, data: Uint8Array, minSparseBytes: number): Run[] {
  if (data.byteLength === 0) return [];
  if (minSparseBytes === 0) return [[guestOffset, data.byteLength, true]];
  const minRun = Math.min(minSparseBytes, data.byteLength);
  const sectors: boolean[] = [];
  for (let at = 0; at < data.byteLength; at += 512) sectors.push(data.subarray(at, at + 512).every((b) => b === 0));
  const runs: Run[] = [];
  const push = (start: number, end: number, isData: boolean): void => {
    const last = runs[runs.length - 1];
    if (last && last[2] === isData) last[1] += end - start;
    else runs.push([guestOffset + start, end - start, isData]);
  };
  for (let sector = 0; sector < sectors.length;) {
    let end = sector;
    while (end < sectors.length && sectors[end] === sectors[sector]) end++;
    const startByte = sector * 512;
    const endByte = Math.min(data.byteLength, end * 512);
    push(startByte, endByte, !(sectors[sector] && endByte - startByte >= minRun));
    sector = end;
  }
  return runs;
}

function actualRuns(guestOffset: number, data: Uint8Array, minSparseBytes: number): Run[] {
  const runs: Run[] = [];
  sparseRuns(guestOffset, data, minSparseBytes, (offset, length, isData) => runs.push([offset, length, isData]));
  return runs;
}

it('skips exactly the zero-sector runs the sector-by-sector rule skips, on random layouts', () => {
  const prng = makePrng(0x5ca1ab1e);
  const random = (): number => prng.next();
  for (let round = 0; round < 400; round++) {
    const sectorCount = 1 + (random() % 96);
    const tail = random() % 3 === 0 ? random() % 512 : 0; // sometimes a partial last sector
    const length = Math.max(1, sectorCount * 512 - tail);
    const buffer = new Uint8Array(length + 1);
    const data = random() % 4 === 0 ? buffer.subarray(1) : buffer.subarray(0, length); // unaligned views too
    // Runs of zero and non-zero sectors of random lengths; a non-zero sector has one set byte somewhere.
    for (let sector = 0; sector * 512 < length;) {
      const runSectors = 1 + (random() % 12);
      const zero = random() % 2 === 0;
      for (let k = 0; k < runSectors && sector * 512 < length; k++, sector++) {
        if (!zero) data[Math.min(length - 1, sector * 512 + (random() % 512))] = 1 + (random() % 255);
      }
    }
    const minSparse = [0, 512, 1024, 4096, 3 * 512, 8192, 65536][random() % 7];
    expect(actualRuns(4096 * round, data, minSparse), `round ${round}, ${length} bytes, -S ${minSparse}`)
      .toEqual(expectedRuns(4096 * round, data, minSparse));
  }
});

it('reports all-zero data shorter than -S as one skipped run, and data with no zeros as one written run', () => {
  expect(actualRuns(0, new Uint8Array(1000), 4096)).toEqual([[0, 1000, false]]);
  expect(actualRuns(512, new Uint8Array(8192).fill(7), 4096)).toEqual([[512, 8192, true]]);
  expect(actualRuns(0, new Uint8Array(0), 4096)).toEqual([]);
});
