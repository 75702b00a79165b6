// SPDX-License-Identifier: MIT
// New L2 tables in write-back (assembly/new-tables.ts, bindings/qcow2/qcow2-writeback.ts): a table
// allocated empty reaches the file whole (zeros where no slice is dirty) before the L1 entry that
// points at it, and only once: later write-backs write only its dirty slices, also when the L1
// entry is still to be written.

import { describe, expect, it } from 'vitest';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createQcow2 } from '../bindings/qcow2/qcow2-create.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { scriptedBackend, type ScriptedCall } from './helpers/scripted-backend.js';

const CLUSTER = 65536;

/** 4 KiB of non-zero bytes that differ with `salt`. */
const pattern = (size: number, salt: number): Uint8Array => new Uint8Array(size).map((_, i) => 1 + ((i * 7 + salt) % 251));
const GIB = 2 ** 30;

/** Host byte ranges of the writes among `calls` that fall in [start, end), merged and sorted. */
function writtenRanges(calls: readonly ScriptedCall[], start: number, end: number): [number, number][] {
  const ranges = calls
    .filter((c) => c.op === 'pwritev' && c.position < end && c.position + c.length > start)
    .map((c): [number, number] => [Math.max(c.position, start), Math.min(c.position + c.length, end)])
    .sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const range of ranges) {
    const last = merged[merged.length - 1];
    if (last && range[0] <= last[1]) last[1] = Math.max(last[1], range[1]);
    else merged.push([...range]);
  }
  return merged;
}

describe('new L2 tables in write-back', () => {
  it('are written whole before their L1 entries, and never again', async () => {
    const inner = createMemoryBackend();
    await createQcow2(inner, { virtualSize: 2 * GIB, clusterSize: CLUSTER });
    const file = scriptedBackend(inner);
    const image = await Qcow2Image.open(file);
    // Two new tables: L1 entries 0 and 2 (an entry maps 512 MiB).
    await image.write(0, pattern(4096, 1));
    await image.write(GIB, pattern(4096, 2));
    // While the write-back waits on its first barrier (its copy of the metadata taken), a third
    // table is allocated (L1 entry 3) and the second slice of the first table written: the L1
    // copy goes stale, so the flush's second write-back finds entries 0..3 still dirty.
    const start = file.calls.length;
    file.hold('flush');
    const flushing = image.flush();
    await file.whenParked('flush');
    await image.write(1.5 * GIB, pattern(4096, 3));
    await image.write(32 * 2 ** 20, pattern(4096, 4));
    file.release('flush');
    await flushing;
    await image.close();

    const bytes = await file.snapshot();
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const l1Offset = Number(view.getBigUint64(40));
    const tableOf = (l1Index: number) => Number(view.getBigUint64(l1Offset + 8 * l1Index) & 0x00fffffffffffe00n);
    const [first, second, third] = [tableOf(0), tableOf(2), tableOf(3)];
    expect([first, second, third].every((t) => t > 0 && t % CLUSTER === 0), `L2 tables at ${[first, second, third]}`).toBe(true);

    const calls = file.calls.slice(start);
    const writesL1Entry = (l1Index: number) => (c: ScriptedCall) =>
      c.op === 'pwritev' && c.position <= l1Offset + 8 * l1Index && c.position + c.length >= l1Offset + 8 * (l1Index + 1);
    const firstL1Write = calls.findIndex(writesL1Entry(0));
    const thirdL1Write = calls.findLastIndex(writesL1Entry(3));
    expect(firstL1Write, 'the L1 table is written').toBeGreaterThan(0);
    expect(thirdL1Write, 'L1 entry 3 is written').toBeGreaterThan(firstL1Write);
    const whole = (table: number): [number, number][] => [[table, table + CLUSTER]];
    expect(writtenRanges(calls.slice(0, firstL1Write), first, first + CLUSTER), 'first table').toEqual(whole(first));
    expect(writtenRanges(calls.slice(0, firstL1Write), second, second + CLUSTER), 'second table').toEqual(whole(second));
    expect(writtenRanges(calls.slice(0, thirdL1Write), third, third + CLUSTER), 'third table').toEqual(whole(third));
    // After the first L1 write: of the first table only its second slice, of the second nothing.
    expect(writtenRanges(calls.slice(firstL1Write), first, first + CLUSTER)).toEqual([[first + 4096, first + 8192]]);
    expect(writtenRanges(calls.slice(firstL1Write), second, second + CLUSTER)).toEqual([]);

    const reopened = await Qcow2Image.open(createMemoryBackend(bytes));
    expect(await reopened.read(0, 4096)).toEqual(pattern(4096, 1));
    expect(await reopened.read(GIB, 4096)).toEqual(pattern(4096, 2));
    expect(await reopened.read(1.5 * GIB, 4096)).toEqual(pattern(4096, 3));
    expect(await reopened.read(32 * 2 ** 20, 4096)).toEqual(pattern(4096, 4));
    await reopened.close();
  });
});
