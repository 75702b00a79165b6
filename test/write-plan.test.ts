// SPDX-License-Identifier: MIT
// The write plan record: for images qemu-img made, the core's plan of one write names the right
// copy-on-write source for the head and the tail (nothing, zeros, backing file, old data at the
// host offset qemu-img map reports, compressed cluster, or the mapping where subclusters mix),
// the clusters it takes, whether the tail may be deferred, and describeContent answers the same
// for gaps. Planning takes clusters: every plan here is aborted, and the refcounts are back.

import { it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import type { Backend } from '../bindings/backends/backend.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import type { Qcow2Core } from '../bindings/qcow2/qcow2-core.js';
import type { WritePlan } from '../bindings/qcow2/qcow2-write-plan-record.js';
import { describeWithQemu, makeImage, qemuImg, qemuMap, qemuCheck, type MakeImageOptions } from './helpers/qemu.js';

const KiB = 1024;
const C = 64 * KiB;

interface Opened { core: Qcow2Core; backend: Backend; image: Qcow2Image; file: Backend }

// The core of an image opened in memory (the image wires table copies and the backing size),
// with a backing file of `backingBytes` bytes of 0x11 when the image names one.
async function openCore(path: string, backingBytes = 2 * 1024 * KiB): Promise<Opened> {
  const memory = createMemoryBackend(new Uint8Array(readFileSync(path)));
  const file: Backend = { ...memory, close: async () => {} }; // read after the image closes
  const image = await Qcow2Image.open(file, {
    writebackDelayMs: false,
    openBacking: async () => createMemoryBackend(new Uint8Array(backingBytes).fill(0x11)),
    openDataFile: async () => createMemoryBackend(0),
  });
  const internals = image as unknown as { core: Qcow2Core; backend: Backend };
  return { core: internals.core, backend: internals.backend, image, file };
}

// Plans one write and aborts it (nothing is written or committed).
async function planOnce(opened: Opened, guestOffset: number, length: number): Promise<WritePlan> {
  const plan = await opened.core.plan(guestOffset, length, opened.backend);
  await opened.core.abort(plan, opened.backend);
  return plan;
}

describeWithQemu('the write plan record', () => {
  let dir: string;
  let n = 0;
  const image = (o: MakeImageOptions) => makeImage(dir, `p${n++}.qcow2`, o);
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-plan-'));
    writeFileSync(join(dir, 'base.raw'), new Uint8Array(2 * 1024 * KiB).fill(0x11));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('fresh image: nothing to copy into new clusters; the clusters taken are given back by abort', async () => {
    const path = image({ size: 4 * 1024 * KiB });
    const opened = await openCore(path);
    const plan = await planOnce(opened, C + 100, 3 * C);
    expect(plan).toMatchObject({ kind: 'allocate', guestStart: C, guestEnd: 5 * C, takenClusters: 4, tailDeferrable: false });
    expect(plan.head).toMatchObject({ source: 'none', guestOffset: C, bytes: 100 });
    expect(plan.tail).toMatchObject({ source: 'none', guestOffset: 4 * C + 100, bytes: C - 100 });
    // Aborted: the next plan takes the next clusters (allocation never moves back over clusters
    // a failed write may have touched).
    const again = await planOnce(opened, C, C);
    expect(again.takenHost).toBe(plan.takenHost + 4 * C);
    // The refcounts the image writes back at close count none of them.
    await opened.image.close();
    const bytes = new Uint8Array(await opened.file.getSize());
    await opened.file.preadv(0, [bytes]);
    writeFileSync(path, bytes);
    const check = qemuCheck(path);
    expect({ corruptions: check.corruptions ?? 0, leaks: check.leaks ?? 0 }).toEqual({ corruptions: 0, leaks: 0 });
  });

  it('overlay: head and tail come from the backing file; a tail in a cluster written from its start may be deferred', async () => {
    const opened = await openCore(image({ size: 2 * 1024 * KiB, backingFile: 'base.raw', backingFormat: 'raw' }));
    const middle = await planOnce(opened, 100, 200);
    expect(middle).toMatchObject({ kind: 'allocate', guestStart: 0, guestEnd: C, takenClusters: 1, tailDeferrable: false });
    expect(middle.head).toMatchObject({ source: 'backing', guestOffset: 0, bytes: 100, sourceBytes: 100 });
    expect(middle.tail).toMatchObject({ source: 'backing', guestOffset: 300, bytes: C - 300 });
    const fromStart = await planOnce(opened, 2 * C, C + 10);
    expect(fromStart).toMatchObject({ kind: 'allocate', guestStart: 2 * C, guestEnd: 4 * C, tailDeferrable: true });
    expect(fromStart.head).toMatchObject({ source: 'none', bytes: 0 });
    expect(fromStart.tail).toMatchObject({ source: 'backing', guestOffset: 3 * C + 10 });
    // Past the backing file's end, unallocated bytes read as zeros: nothing to copy.
    const short = await openCore(image({ size: 2 * 1024 * KiB, backingFile: 'base.raw', backingFormat: 'raw' }), C);
    const pastBacking = await planOnce(short, 5 * C + 7, 9);
    expect([pastBacking.head.source, pastBacking.tail.source, pastBacking.tailDeferrable]).toEqual(['none', 'none', false]);
  });

  it('old clusters: compressed, zero, and shared data at the host offset qemu-img map reports', async () => {
    const path = image({ size: 2 * 1024 * KiB, ops: [
      { op: 'compressed', offset: 0, length: C, pattern: 0x22 },
      { op: 'zero', offset: 2 * C, length: C },
      { op: 'write', offset: 4 * C, length: C, pattern: 0x33 },
    ] });
    // A snapshot shares cluster 4: the active image must copy it (its data stays where it is).
    expect(qemuImg(['snapshot', '-c', 'snap', path]).code).toBe(0);
    const dataHost = qemuMap(path).find((entry) => entry.start <= 4 * C && 4 * C < entry.start + entry.length)!.offset!;
    const opened = await openCore(path);
    const compressed = await planOnce(opened, 100, 50);
    expect(compressed.head).toMatchObject({ source: 'compressed', guestOffset: 0, bytes: 100 });
    expect(compressed.head.compressedBytes).toBeGreaterThan(0);
    expect(compressed.tail.source).toBe('compressed');
    const zero = await planOnce(opened, 2 * C + 100, 50);
    expect([zero.head.source, zero.tail.source]).toEqual(['none', 'none']);
    const shared = await planOnce(opened, 4 * C + 1000, 24);
    expect(shared.head).toMatchObject({ source: 'data', guestOffset: 4 * C, bytes: 1000, hostOffset: dataHost });
    expect(shared.tail).toMatchObject({ source: 'data', guestOffset: 4 * C + 1024, hostOffset: dataHost + 1024 });
    expect(qemuCheck(path).corruptions ?? 0).toBe(0);
  });

  it('extended L2: subclusters filled in place need no copy of what is there; mixed subclusters read through the mapping', async () => {
    const sub = C / 32;
    const path = image({ size: 2 * 1024 * KiB, extendedL2: true, backingFile: 'base.raw', backingFormat: 'raw', ops: [
      { op: 'write', offset: 0, length: 4 * sub, pattern: 0x44 },
      { op: 'write', offset: 2 * C, length: 4 * sub, pattern: 0x55 },
    ] });
    expect(qemuImg(['snapshot', '-c', 'snap', path]).code).toBe(0);
    const opened = await openCore(path);
    // A write that ends inside an allocated subcluster and starts in an unallocated one.
    const fresh = await openCore(image({ size: 2 * 1024 * KiB, extendedL2: true, backingFile: 'base.raw', backingFormat: 'raw', ops: [
      { op: 'write', offset: 0, length: 4 * sub, pattern: 0x44 },
    ] }));
    const fill = await planOnce(fresh, 3 * sub + 10, sub);
    expect(fill).toMatchObject({ kind: 'fill-subclusters', guestStart: 3 * sub, guestEnd: 5 * sub, takenClusters: 0 });
    expect(fill.head).toMatchObject({ source: 'none', bytes: 10 });
    expect(fill.tail).toMatchObject({ source: 'backing', guestOffset: 4 * sub + 10 });
    // The shared cluster 2 is copied whole: its head spans allocated and unallocated subclusters.
    const mixed = await planOnce(opened, 2 * C + 10 * sub, 10);
    expect(mixed).toMatchObject({ kind: 'allocate', guestStart: 2 * C, guestEnd: 3 * C, tailDeferrable: false });
    expect(mixed.head).toMatchObject({ source: 'mapped', guestOffset: 2 * C, bytes: 10 * sub });
    expect(mixed.tail.source).toBe('backing');
    // A cluster without a host cluster: only the written subclusters are allocated.
    const bySub = await planOnce(opened, 5 * C + sub + 3, 10);
    expect(bySub).toMatchObject({ kind: 'allocate-subclusters', guestStart: 5 * C + sub, guestEnd: 5 * C + 2 * sub, takenClusters: 1 });
    expect(bySub.head).toMatchObject({ source: 'backing', bytes: 3 });
  });

  it('external data file: zeros must be written; past the virtual size the source gives nothing', async () => {
    const size = 3 * C + 1024; // qemu-img rounds sizes to 512 bytes
    const opened = await openCore(image({ size, dataFile: 'p-data.raw' }));
    const plan = await planOnce(opened, 3 * C + 10, 20);
    expect(plan).toMatchObject({ kind: 'allocate', guestStart: 3 * C, guestEnd: 4 * C, takenClusters: 0, hostStart: 3 * C });
    expect(plan.head).toMatchObject({ source: 'zeros', bytes: 10, sourceBytes: 10 });
    expect(plan.tail).toMatchObject({ source: 'zeros', guestOffset: 3 * C + 30, bytes: C - 30, sourceBytes: 1024 - 30 });
  });

  it('describeContent: what a gap reads as, for a fresh target or any other', async () => {
    const opened = await openCore(image({ size: 2 * 1024 * KiB, backingFile: 'base.raw', backingFormat: 'raw', ops: [
      { op: 'zero', offset: C, length: C },
    ] }));
    expect(await opened.core.describeContent(100, 50, false, opened.backend)).toMatchObject({ source: 'backing', guestOffset: 100, bytes: 50 });
    expect((await opened.core.describeContent(C + 100, 50, false, opened.backend)).source).toBe('zeros');
    expect((await opened.core.describeContent(C + 100, 50, true, opened.backend)).source).toBe('none');
  });
});
