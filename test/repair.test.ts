// SPDX-License-Identifier: MIT
// Repair of images a power cut left behind: the crash simulator cuts a seeded workload at every
// host write; states with leaked clusters are checked by this engine and by qemu-img (same
// counts, same messages), repaired with `-r leaks` and with `-r all` (this engine's check), and
// qemu-img check must then find them clean, with every guest byte as before. Hand-damaged
// refcounts and OFLAG_COPIED are covered against qemu-img in test/qcow2-check.test.ts.
//
// Reproduce: QCOW2_WASM_SEED=<seed printed>.

import { it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import { checkQcow2, type Qcow2RepairMode } from '../bindings/qcow2/qcow2-check.js';
import { describeWithQemu, qemuCheck, qemuImg } from './helpers/qemu.js';
import { derivedPrng, runWorkload } from './helpers/crash-workload.js';

const SEED = Number(process.env.QCOW2_WASM_SEED ?? 4242);
const MiB = 1024 * 1024;
/** Leaky crash states repaired per mode. */
const STATES = 12;

async function guestBytes(image: Uint8Array): Promise<Uint8Array> {
  const disk = await Qcow2Image.open(createMemoryBackend(image, { writable: false }));
  try {
    return await disk.read(0, disk.virtualSize);
  } finally {
    await disk.close();
  }
}

/** qemu-img check's finding lines, in order. */
function qemuMessages(path: string): string[] {
  const result = qemuImg(['check', '-f', 'qcow2', path]);
  return (result.stdout + result.stderr).split('\n').filter((line) => /^(ERROR|Leaked|Repairing)/.test(line));
}

describeWithQemu('repairing images left by a power cut', () => {
  let dir: string;
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-repair-')); });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it(`finds the leaks qemu-img finds, repairs them (-r leaks and -r all), and qemu-img then finds the image clean`, async () => {
    const where = `seed ${SEED}`;
    const record = await runWorkload({
      name: 'repair', operations: 120, cacheBytes: 1024, fillFirst: false,
      create: { virtualSize: 1 * MiB, clusterSize: 512, refcountBits: 16 },
    }, SEED, true);
    const replay = record.backend.replay();
    const leaky: Uint8Array[] = [];
    for (let k = 0; k < record.backend.writes.length && leaky.length < STATES; k += 7) {
      replay.advance(k);
      const state = replay.state(derivedPrng(SEED, k), 0.3).bytes;
      const report = await checkQcow2(createMemoryBackend(state, { writable: false }));
      expect(report.corruptions, `${where}, cut ${k}`).toBe(0);
      if (report.leaks > 0) leaky.push(state);
    }
    expect(leaky.length, `${where}: crash states with leaks`).toBe(STATES);

    let leaksFixed = 0;
    for (const [i, state] of leaky.entries()) {
      const before = await guestBytes(state);
      for (const mode of ['leaks', 'all'] as Qcow2RepairMode[]) {
        const what = `${where}, leaky state ${i}, repair ${mode}`;
        const path = join(dir, `leaky-${i}-${mode}.qcow2`);
        writeFileSync(path, state);
        // Before: the same report as qemu-img.
        const found = await checkQcow2(createMemoryBackend(state, { writable: false }));
        const qemu = qemuCheck(path);
        expect({ corruptions: found.corruptions, leaks: found.leaks, checkErrors: found.checkErrors, imageEndOffset: found.imageEndOffset }, what)
          .toEqual({ corruptions: qemu.corruptions ?? 0, leaks: qemu.leaks ?? 0, checkErrors: qemu['check-errors'], imageEndOffset: qemu['image-end-offset'] });
        expect([...found.messages].sort(), `${what}: messages`).toEqual(qemuMessages(path).sort());
        expect(qemu.exitCode, what).toBe(3);
        // Repair through a file backend, as the CLI does.
        const backend = await openNodeBackend(path, { writable: true });
        const repaired = await checkQcow2(backend, { repair: mode });
        await backend.close();
        expect({ leaks: repaired.leaks, corruptions: repaired.corruptions, leaksFixed: repaired.leaksFixed }, what)
          .toEqual({ leaks: 0, corruptions: 0, leaksFixed: found.leaks });
        leaksFixed += repaired.leaksFixed;
        const after = qemuCheck(path);
        expect({ corruptions: after.corruptions ?? 0, leaks: after.leaks ?? 0, errors: after['check-errors'], exit: after.exitCode }, `${what}: qemu-img after`)
          .toEqual({ corruptions: 0, leaks: 0, errors: 0, exit: 0 });
        expect(Buffer.compare(await guestBytes(new Uint8Array(readFileSync(path))), before), `${what}: guest bytes changed`).toBe(0);
      }
    }
    console.log(`repair: ${STATES} leaky crash states (${where}) checked like qemu-img, repaired with -r leaks and -r all ` +
      `(${leaksFixed} leaked clusters fixed); qemu-img check then clean, guest bytes unchanged`);
  }, 300_000);
});
