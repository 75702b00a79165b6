// SPDX-License-Identifier: MIT
// qcow2 under backend failures: with EIO injected into random host writes (data and metadata)
// and flushes, every request settles once with IMAGE_IO_ERROR or success, nothing acknowledged
// before a successful flush is lost, and the image stays consistent (at most leaked clusters).
// After the faults stop, the file is closed and reopened, by this package and by qemu-img: it
// holds every acknowledged write (except where a failed write may have landed).

import { it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import type { Backend } from '../bindings/backends/backend.js';
import { wrapFaultyBackend } from './helpers/faulty-backend.js';
import { describeWithQemu, zoo, qemuCheck, convertToRaw, type ZooImage } from './helpers/qemu.js';
import { makePrng } from './helpers/prng.js';
import { ModelDisk } from './helpers/model.js';
import { AcknowledgedModel } from './helpers/acknowledged.js';

const SEED = Number(process.env.QCOW2_WASM_SEED ?? 99);

describeWithQemu('qcow2 with failing host writes and flushes', () => {
  let dir: string;
  let images: ZooImage[];
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-faults-'));
    images = zoo(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps acknowledged data and a consistent image (v3, overlay, extended L2)', async () => {
    let injected = 0;
    for (const name of ['v3.qcow2', 'overlay.qcow2', 'xl2.qcow2']) {
      const image = images.find((i) => i.name === name)!;
      const store = createMemoryBackend(new Uint8Array(readFileSync(image.path)));
      const prng = makePrng(SEED + name.length);
      let failing = false;
      const faulty = wrapFaultyBackend(store, {
        decide: (call) => (failing && (call.op === 'pwritev' || call.op === 'flush') && prng.int(6) === 0 ? { fail: true } : undefined),
      });
      const keepOpen: Backend = {
        kind: faulty.kind, capabilities: faulty.capabilities, limits: faulty.limits,
        getSize: () => faulty.getSize(), preadv: (p, b) => faulty.preadv(p, b), pwritev: (p, b) => faulty.pwritev(p, b),
        flush: () => faulty.flush(), close: async () => {},
      };
      const openOptions = {
        cacheBytes: 8192,
        openBacking: async (backingName: string) => createMemoryBackend(new Uint8Array(readFileSync(join(dir, backingName)))),
      };
      const disk = await Qcow2Image.open(keepOpen, openOptions);
      const acknowledged = new AcknowledgedModel(await disk.read(0, disk.virtualSize));
      failing = true;
      for (let round = 0; round < 40; round++) {
        const writes = Array.from({ length: 1 + prng.int(6) }, () => {
          const length = 1 + prng.int(40_000);
          return { offset: prng.int(disk.virtualSize - length), data: prng.fill(new Uint8Array(length)) };
        });
        const outcomes = await Promise.allSettled(disk.multiwrite(writes));
        acknowledged.record(writes.map((w, k) => ({ ...w, ok: outcomes[k].status === 'fulfilled' })));
        for (const outcome of outcomes) {
          if (outcome.status === 'rejected') {
            injected++;
            expect(outcome.reason).toMatchObject({ code: 'IMAGE_IO_ERROR' });
          }
        }
        const flushed = await disk.flush().then(() => true, (error: unknown) => {
          expect(error).toBeInstanceOf(Error);
          return false;
        });
        // Writes that succeeded and then survived a successful flush must read back. A failed
        // write leaves its range unspecified, so ranges it overlaps are not compared.
        if (flushed) {
          const failedRanges = writes.filter((_, k) => outcomes[k].status === 'rejected');
          const model = new ModelDisk();
          writes.forEach((w, k) => { if (outcomes[k].status === 'fulfilled') model.write(w.offset, w.data); });
          for (const [k, w] of writes.entries()) {
            if (outcomes[k].status !== 'fulfilled') continue;
            if (failedRanges.some((f) => f.offset < w.offset + w.data.length && w.offset < f.offset + f.data.length)) continue;
            const got = await disk.read(w.offset, w.data.length);
            expect(Buffer.compare(got, model.read(w.offset, w.data.length)), `${name}, round ${round}: acknowledged write lost`).toBe(0);
          }
        }
      }
      failing = false;
      await disk.close();
      const path = join(dir, `faults_${name}`);
      const bytes = new Uint8Array(await store.getSize());
      await store.preadv(0, [bytes]);
      writeFileSync(path, bytes);
      // The file after close: reopened by this package and converted by qemu-img.
      const reopened = await Qcow2Image.open(createMemoryBackend(bytes.slice()), { ...openOptions, readOnly: true });
      expect(acknowledged.firstMismatch(await reopened.read(0, reopened.virtualSize)), `${name}: reopened file`).toBeUndefined();
      await reopened.close();
      expect(acknowledged.firstMismatch(convertToRaw(path)), `${name}: the file as qemu-img reads it`).toBeUndefined();
      expect(acknowledged.knownBytes(), `${name}: bytes the oracle checks`).toBeGreaterThan(0);
      const check = qemuCheck(path);
      expect({ corruptions: check.corruptions ?? 0, errors: check['check-errors'] }, `${name}: qemu-img check (leaks allowed)`).toEqual({ corruptions: 0, errors: 0 });
    }
    expect(injected).toBeGreaterThan(0);
    console.log(`qcow2 faults: ${injected} requests failed by injected EIO; images stayed consistent`);
  });
});
