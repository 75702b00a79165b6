// SPDX-License-Identifier: MIT
// A write whose data write (or copy-on-write read) fails gives back the clusters it took: after
// flush and close, qemu-img check finds no leak and no corruption, and the failed write's range
// reads as before it (bytes that failed to land never show). Faults are injected into the Nth
// host write of the image, or the Nth read of its backing file, on fresh images, overlays over a
// backing file, extended L2, v2, with compressed clusters, with deferred copy-on-write on and
// off, and among concurrent writes.

import { it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import type { OpenOptions } from '../bindings/dispatch/image.js';
import type { Backend } from '../bindings/backends/backend.js';
import { wrapFaultyBackend } from './helpers/faulty-backend.js';
import { describeWithQemu, makeImage, qemuCheck, convertToRaw, type MakeImageOptions } from './helpers/qemu.js';
import { makePrng, type Prng } from './helpers/prng.js';

const SEED = Number(process.env.QCOW2_WASM_SEED ?? 12);
const KiB = 1024;
const SIZE = 4 * 1024 * KiB;

interface Scenario {
  name: string;
  image: Omit<MakeImageOptions, 'size'>;
  /** A backing file made first (raw, patterned), named in the image. */
  backing?: boolean;
  deferredCow: boolean;
  /** Inject into the backing file's reads (copy-on-write reads) instead of the image's writes. */
  failBackingReads?: boolean;
}

const clusterSize = 16 * KiB;
const scenarios: Scenario[] = [
  { name: 'fresh v3', image: { clusterSize }, deferredCow: true },
  { name: 'fresh v3 with compressed and zero clusters', image: { clusterSize, ops: [
    { op: 'compressed', offset: 0, length: 16 * clusterSize, pattern: 0x5a },
    { op: 'write', offset: 20 * clusterSize, length: 8 * clusterSize, pattern: 0x33 },
    { op: 'zero', offset: 22 * clusterSize, length: 2 * clusterSize },
  ] }, deferredCow: true },
  { name: 'v2', image: { clusterSize, compat: '0.10', ops: [{ op: 'write', offset: 3 * clusterSize, length: 40 * KiB, pattern: 0x44 }] }, deferredCow: false },
  { name: 'overlay, deferred copy-on-write on', image: { clusterSize }, backing: true, deferredCow: true },
  { name: 'overlay, deferred copy-on-write off', image: { clusterSize }, backing: true, deferredCow: false },
  { name: 'overlay, failing copy-on-write reads', image: { clusterSize }, backing: true, deferredCow: true, failBackingReads: true },
  { name: 'extended L2 overlay', image: { clusterSize: 64 * KiB, extendedL2: true }, backing: true, deferredCow: true },
  { name: 'v2 overlay', image: { clusterSize, compat: '0.10' }, backing: true, deferredCow: true },
];

describeWithQemu('qcow2 writes that fail before they commit', () => {
  let dir: string;
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-abort-')); });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  for (const [index, scenario] of scenarios.entries()) {
    it(`${scenario.name}: leaks nothing and the failed range reads as before`, async () => {
      const session = await openScenario(dir, `s${index}`, scenario);
      const prng = makePrng(SEED + index);
      const { image } = session;
      const clusterBytes = image.header.clusterSize;
      let failures = 0;
      for (let round = 0; round < 24; round++) {
        // One write inside one cluster (one plan, one host write): it lands whole or not at all.
        const offset = prng.int(SIZE - 1);
        const cluster = Math.floor(offset / clusterBytes) * clusterBytes;
        const length = 1 + prng.int(Math.min(cluster + clusterBytes, SIZE) - offset);
        const data = prng.fill(new Uint8Array(length));
        const before = await image.read(offset, length);
        session.failNext(1 + prng.int(2));
        const outcome = await image.write(offset, data).then(() => 'ok' as const, (error: unknown) => error);
        session.failNext(0);
        if (outcome === 'ok') {
          expectBytes(await image.read(offset, length), data, `round ${round}: a write that succeeded`);
        } else {
          failures++;
          expect(outcome).toMatchObject({ code: 'IMAGE_IO_ERROR' });
          expectBytes(await image.read(offset, length), before, `round ${round}: a write that failed reads as before`);
        }
        if (round % 6 === 5) {
          // A failing flush (metadata write-back, pending copies) is retried: nothing is lost.
          session.failNextFlush();
          await image.flush().catch((error: unknown) => expect(error).toMatchObject({ code: expect.stringMatching(/IO_ERROR$/) }));
          await image.flush();
        }
      }
      // Several writes at once, in distinct clusters, one host write failing: each lands or not.
      for (let round = 0; round < 6; round++) {
        const writes = spreadWrites(prng, clusterBytes, 6);
        const before = await Promise.all(writes.map((w) => image.read(w.offset, w.data.length)));
        session.failNext(1 + prng.int(writes.length));
        const outcomes = await Promise.allSettled(writes.map((w) => image.write(w.offset, w.data)));
        session.failNext(0);
        for (const [k, w] of writes.entries()) {
          const got = await image.read(w.offset, w.data.length);
          if (outcomes[k].status === 'fulfilled') {
            expectBytes(got, w.data, `concurrent round ${round}: write ${k} succeeded`);
          } else {
            failures++;
            // Its request may share a merged host write with others: every byte is old or new.
            const mixed = got.findIndex((byte, i) => byte !== before[k][i] && byte !== w.data[i]);
            expect(mixed, `concurrent round ${round}: write ${k} failed, byte ${mixed} is neither old nor new`).toBe(-1);
          }
        }
      }
      expect(failures, 'injected failures').toBeGreaterThan(0);
      const content = await image.read(0, SIZE);
      await image.close();
      writeFileSync(session.path, await session.fileBytes());
      const check = qemuCheck(session.path);
      expect({ corruptions: check.corruptions ?? 0, leaks: check.leaks ?? 0, errors: check['check-errors'] }, 'qemu-img check')
        .toEqual({ corruptions: 0, leaks: 0, errors: 0 });
      expectBytes(convertToRaw(session.path), content, 'the image as qemu-img reads it');
    });
  }
});

interface Session {
  image: Qcow2Image;
  path: string;
  /** Fails the `n`th matching call from now (0: none). */
  failNext(n: number): void;
  /** Fails the next flush of the image file. */
  failNextFlush(): void;
  fileBytes(): Promise<Uint8Array>;
}

async function openScenario(dir: string, name: string, scenario: Scenario): Promise<Session> {
  let backingName: string | undefined;
  if (scenario.backing) {
    backingName = `${name}-base.raw`;
    const base = new Uint8Array(SIZE);
    makePrng(SEED).fill(base);
    writeFileSync(join(dir, backingName), base);
  }
  const path = makeImage(dir, `${name}.qcow2`, {
    size: SIZE, ...scenario.image, ...(backingName ? { backingFile: backingName, backingFormat: 'raw' as const } : {}),
  });
  const file = createMemoryBackend(new Uint8Array(readFileSync(path)));
  // The image closes its backend; the file's bytes are read after that.
  const store: Backend = { ...file, close: async () => {} };
  let countdown = 0;
  let failFlush = false;
  const decide = (op: string) => (call: { op: string }) => {
    if (call.op === 'flush' && failFlush) {
      failFlush = false;
      return { fail: true };
    }
    if (call.op !== op || countdown === 0) return undefined;
    countdown--;
    return countdown === 0 ? { fail: true } : undefined;
  };
  const faultyImage = wrapFaultyBackend(store, { decide: decide(scenario.failBackingReads ? 'none' : 'pwritev') });
  const options: OpenOptions = {
    deferredCow: scenario.deferredCow,
    writebackDelayMs: false,
    openBacking: async (backing) => {
      return wrapFaultyBackend(createMemoryBackend(new Uint8Array(readFileSync(join(dir, backing)))),
        { decide: scenario.failBackingReads ? decide('preadv') : undefined });
    },
  };
  const image = await Qcow2Image.open(faultyImage, options);
  return {
    image, path,
    failNext: (n) => { countdown = n; },
    failNextFlush: () => { failFlush = true; },
    fileBytes: async () => {
      const bytes = new Uint8Array(await store.getSize());
      await store.preadv(0, [bytes]);
      return bytes;
    },
  };
}

// `count` writes in distinct clusters, each inside its cluster.
function spreadWrites(prng: Prng, clusterBytes: number, count: number): { offset: number; data: Uint8Array }[] {
  const clusters = new Set<number>();
  while (clusters.size < count) clusters.add(prng.int(SIZE / clusterBytes));
  return [...clusters].map((cluster) => {
    const inCluster = prng.int(clusterBytes - 1);
    const length = 1 + prng.int(clusterBytes - inCluster);
    return { offset: cluster * clusterBytes + inCluster, data: prng.fill(new Uint8Array(length)) };
  });
}

function expectBytes(got: Uint8Array, want: Uint8Array, what: string): void {
  const at = got.findIndex((byte, i) => byte !== want[i]);
  expect(at === -1 && got.length === want.length ? -1 : at, `${what}: first differing byte`).toBe(-1);
}
