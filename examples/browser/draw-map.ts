// SPDX-License-Identifier: MIT
// Draws an allocation map (allocationMap from qcow2-wasm) on a canvas: one square cell per
// bucket, row by row, filled bottom-up with one colour per kind of storage in proportion.

import type { AllocationMap } from 'qcow2-wasm/browser';

/** Cell colours as [red, green, blue]; the page's legend shows the same ones. */
export const MAP_COLOURS = {
  topData: [217, 72, 15],
  backingData: [25, 113, 194],
  zero: [140, 233, 154],
  unallocated: [233, 236, 239],
} as const;

/** Cells per canvas row. */
export const MAP_COLUMNS = 64;
/** Cell pitch in canvas pixels; the last pixel row and column of each cell stay blank as a grid. */
export const CELL_PIXELS = 8;

/**
 * Resizes `canvas` to fit `map` and draws it. The canvas gets data attributes describing the
 * layout (columns, cellPixels, bucketBytes, bucketCount) so tools can find a bucket's cell.
 */
export function drawAllocationMap(canvas: HTMLCanvasElement, map: AllocationMap): void {
  const rows = Math.max(1, Math.ceil(map.bucketCount / MAP_COLUMNS));
  canvas.width = MAP_COLUMNS * CELL_PIXELS;
  canvas.height = rows * CELL_PIXELS;
  Object.assign(canvas.dataset, {
    columns: String(MAP_COLUMNS), cellPixels: String(CELL_PIXELS),
    bucketBytes: String(map.bucketBytes), bucketCount: String(map.bucketCount),
  });
  const context = canvas.getContext('2d');
  if (!context) throw new Error('this browser gives no 2d canvas context');
  context.clearRect(0, 0, canvas.width, canvas.height);
  const fill = CELL_PIXELS - 1;
  for (let bucket = 0; bucket < map.bucketCount; bucket++) {
    const x = (bucket % MAP_COLUMNS) * CELL_PIXELS;
    const bottom = Math.floor(bucket / MAP_COLUMNS) * CELL_PIXELS + fill;
    // Stack the kinds bottom-up; each boundary is rounded from the running total, so the
    // segments add up to the whole cell, and any kind present gets at least one pixel row.
    const shares: [readonly number[], number][] = [
      [MAP_COLOURS.topData, map.topData[bucket]],
      [MAP_COLOURS.backingData, map.backingData[bucket]],
      [MAP_COLOURS.zero, map.zero[bucket]],
    ];
    let total = 0;
    let drawn = 0;
    for (const [[red, green, blue], share] of shares) {
      total += share;
      const upTo = Math.min(fill, Math.max(Math.round(total * fill), share > 0 ? drawn + 1 : 0));
      if (upTo > drawn) {
        context.fillStyle = `rgb(${red} ${green} ${blue})`;
        context.fillRect(x, bottom - upTo, fill, upTo - drawn);
        drawn = upTo;
      }
    }
    if (drawn < fill) {
      const [red, green, blue] = MAP_COLOURS.unallocated;
      context.fillStyle = `rgb(${red} ${green} ${blue})`;
      context.fillRect(x, bottom - fill, fill, fill - drawn);
    }
  }
}
