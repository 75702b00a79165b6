// SPDX-License-Identifier: MIT
// With an external data file, guest data must be durable in that file before an L2 entry that
// points at it reaches the image file: a crash between the two would otherwise leave entries
// pointing at data the data file never kept (stale or zero bytes read back as the guest's).
// Both files are logged on one clock; every L2 write must come after a data-file flush that
// began after every data write before it completed and that resolved before the L2 write began.

import { it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import type { Backend } from '../bindings/backends/backend.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { describeWithQemu, makeImage, qemuImg, qemuCheck } from './helpers/qemu.js';
import { keepOpen, backendBytes } from './helpers/backend-contents.js';

const KiB = 1024;
const C = 64 * KiB;

type Event =
  | { file: 'image' | 'data'; op: 'write'; position: number; issued: number; done: number }
  | { file: 'data'; op: 'flush'; issued: number; done: number };

// A backend whose writes and flushes are logged with the clock ticks at which they were issued
// and settled (the clock advances on every call and every completion, across both files).
function logged(inner: Backend, file: 'image' | 'data', log: Event[], clock: { now: number }): Backend {
  return {
    ...inner,
    async pwritev(position, buffers) {
      const issued = clock.now++;
      await inner.pwritev(position, buffers);
      log.push({ file, op: 'write', position, issued, done: clock.now++ });
    },
    async flush() {
      const issued = clock.now++;
      await inner.flush();
      if (file === 'data') log.push({ file, op: 'flush', issued, done: clock.now++ });
    },
  };
}

// The host offsets of the L2 tables the image's L1 table names.
function l2TableOffsets(image: Uint8Array): Set<number> {
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const l1Entries = view.getUint32(36);
  const l1Offset = Number(view.getBigUint64(40));
  const offsets = new Set<number>();
  for (let i = 0; i < l1Entries; i++) {
    const entry = view.getBigUint64(l1Offset + 8 * i) & 0x00fffffffffffe00n;
    if (entry !== 0n) offsets.add(Number(entry));
  }
  return offsets;
}

describeWithQemu('external data file: data durable before the L2 entries that point at it', () => {
  let dir: string;
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-datafile-')); });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('every L2 write follows a data-file flush covering the data written before it', async () => {
    const path = makeImage(dir, 'ext.qcow2', { size: 4 * 1024 * KiB, clusterSize: C, dataFile: 'ext.data' });
    const log: Event[] = [];
    const clock = { now: 0 };
    const imageFile = createMemoryBackend(new Uint8Array(readFileSync(path)));
    const dataFile = createMemoryBackend(0);
    const image = await Qcow2Image.open(logged(keepOpen(imageFile), 'image', log, clock), {
      openDataFile: async () => logged(keepOpen(dataFile), 'data', log, clock),
    });
    // Writes allocating clusters, each followed by a metadata write-back (by the timer or flush).
    for (let i = 0; i < 6; i++) {
      await image.write(i * C + 512 * i, new Uint8Array(3000).fill(i + 1));
      if (i % 2 === 1) await image.flush();
    }
    await image.close();

    const imageBytes = await backendBytes(imageFile);
    const l2Offsets = l2TableOffsets(imageBytes);
    const l2Writes = log.filter((e) => e.file === 'image' && e.op === 'write' && [...l2Offsets].some((t) => e.position >= t && e.position < t + C));
    expect(l2Writes.length).toBeGreaterThan(0);
    for (const l2Write of l2Writes) {
      const dataDoneBefore = log.filter((e) => e.file === 'data' && e.op === 'write' && e.done < l2Write.issued);
      if (dataDoneBefore.length === 0) continue;
      const lastDataDone = Math.max(...dataDoneBefore.map((e) => e.done));
      const covering = log.some((e) => e.op === 'flush' && e.issued > lastDataDone && e.done < l2Write.issued);
      expect(covering, `L2 write at host offset ${l2Write.position} (tick ${l2Write.issued}) with no data-file flush after the data written up to tick ${lastDataDone}`).toBe(true);
    }

    // And the result is an image QEMU reads as written.
    const out = join(dir, 'out.qcow2');
    writeFileSync(out, imageBytes);
    writeFileSync(join(dir, 'ext.data'), await backendBytes(dataFile));
    expect(qemuCheck(out).exitCode).toBe(0);
    const read = qemuImg(['convert', '-O', 'raw', out, join(dir, 'flat.raw')], dir);
    expect(read.code).toBe(0);
    const flat = readFileSync(join(dir, 'flat.raw'));
    for (let i = 0; i < 6; i++) {
      expect(flat.subarray(i * C + 512 * i, i * C + 512 * i + 3000).every((b) => b === i + 1)).toBe(true);
    }
  });
});
