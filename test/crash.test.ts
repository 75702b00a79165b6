// SPDX-License-Identifier: MIT
// Crash consistency: a seeded workload of mixed guest operations runs over the crash
// simulator; then, for every host write in turn, the power is cut just after it, and several
// crash states are built (what flushes made durable plus a random subset of the later writes,
// some torn at 512-byte sectors). Each state must open, this engine's check must find no
// corruption (leaks allowed), qemu-img check must agree (every state in long runs, a seeded
// sample otherwise), and every byte must read as the last completed flush guarantees or as a
// value written to it since.
//
// Long run: QCOW2_WASM_LONG=1 (more operations, more states per cut, qemu-img on every state).
// Reproduce a failure: QCOW2_WASM_SEED=<seed printed>.

import { it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { checkQcow2, type Qcow2CheckReport } from '../bindings/qcow2/qcow2-check.js';
import { describeWithQemu, qemuCheck } from './helpers/qemu.js';
import { makePrng } from './helpers/prng.js';
import { ContentChecker, backingOpener, derivedPrng, runWorkload, type WorkloadSetting } from './helpers/crash-workload.js';

const LONG = process.env.QCOW2_WASM_LONG === '1';
const SEED = Number(process.env.QCOW2_WASM_SEED ?? 20261127);
/** Crash states built per cut point. */
const STATES_PER_CUT = LONG ? 6 : 1;
/** Share of the states (besides the first of every cut) that qemu-img check also runs on. */
const QEMU_SAMPLE = LONG ? 1 : 0.04;
const KiB = 1024;
const MiB = 1024 * KiB;

/** Byte offset of refcount_table_clusters (u32) in the header. */
const REFTABLE_CLUSTERS_FIELD = 56;
const INCOMPATIBLE_FEATURES_FIELD = 72;

/**
 * A workload setting and the fewest cut points (host writes, each a power cut) it must give:
 * fewer means the workload stopped reaching the code it is meant to cut (about 60% of today's).
 */
type CrashSetting = WorkloadSetting & { minCutPoints: number };

function settings(): CrashSetting[] {
  const backing = makePrng(SEED ^ 0xbacc).fill(new Uint8Array(2 * MiB));
  const scale = LONG ? 3 : 1;
  return [
    {
      // 512-byte clusters with 64-bit refcounts: a refcount block covers 64 clusters and the first
      // refcount table 4096, so L2 tables, refcount blocks and refcount-table growth come quickly.
      name: 'fresh v3, 512 B clusters, refcount_bits=64', operations: 250 * scale, cacheBytes: 1024, fillFirst: true, minCutPoints: 500 * scale,
      create: { virtualSize: 2.5 * MiB, clusterSize: 512, refcountBits: 64 },
    },
    {
      name: 'overlay on a raw backing file, 4 KiB clusters', operations: 200 * scale, cacheBytes: 2048, backing, minCutPoints: 400 * scale,
      create: { virtualSize: 2 * MiB, clusterSize: 4 * KiB },
    },
    {
      name: 'lazy refcounts, v3, 4 KiB clusters, refcount_bits=8', operations: 150 * scale, cacheBytes: 4096, minCutPoints: 250 * scale,
      create: { virtualSize: 2 * MiB, clusterSize: 4 * KiB, refcountBits: 8, lazyRefcounts: true },
    },
  ];
}

/** The fields of a qemu-img check that must agree with ours. */
const counts = (r: { corruptions: number; leaks: number; checkErrors: number }) => ({ corruptions: r.corruptions, leaks: r.leaks, checkErrors: r.checkErrors });

describeWithQemu('crash consistency: a power cut after every host write', () => {
  let dir: string;
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-crash-')); });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  for (const [settingIndex, setting] of settings().entries()) {
    it(setting.name, async () => {
      const seed = SEED + settingIndex;
      const where = `${setting.name}, seed ${seed} (QCOW2_WASM_SEED=${SEED})`;
      const record = await runWorkload(setting, seed, true);
      const initialReftableClusters = new DataView(record.initialImage.buffer).getUint32(REFTABLE_CLUSTERS_FIELD);
      const { backend } = record;
      expect(backend.overlaps, `${where}: overlapping host calls in flight`).toEqual([]);
      expect(backend.writes.length, `${where}: cut points (host writes) the workload gave`).toBeGreaterThanOrEqual(setting.minCutPoints);
      if (setting.backing) writeFileSync(join(dir, 'base.raw'), setting.backing);

      const finalBytes = backend.snapshot();
      const grown = new DataView(finalBytes.buffer).getUint32(REFTABLE_CLUSTERS_FIELD) > initialReftableClusters;
      const checker = new ContentChecker(record);
      const replay = backend.replay();
      const openBacking = backingOpener(setting.backing);
      const virtualSize = setting.create.virtualSize;
      let states = 0;
      let byQemu = 0;
      let withLeaks = 0;
      let torn = 0;
      let lost = 0;
      const samplePrng = derivedPrng(seed, 0xc0ffee);
      for (let k = 0; k < backend.writes.length; k++) {
        replay.advance(k);
        const cutClock = replay.cutClock(k);
        for (let s = 0; s < STATES_PER_CUT; s++) {
          const state = s === 0 && k === backend.writes.length - 1 ? replay.fullState()
            : replay.state(derivedPrng(seed, k, s), (s + k) % 2 === 0 ? 0 : 0.5);
          const what = `${where}: cut after host write ${k} of ${backend.writes.length}, state ${s} (kept ${state.kept}, torn ${state.torn}, lost ${state.lost})`;
          torn += state.torn;
          lost += state.lost;
          const dirty = (new DataView(state.bytes.buffer).getBigUint64(INCOMPATIBLE_FEATURES_FIELD) & 1n) !== 0n;
          expect(dirty, `${what}: the engine never sets the dirty bit`).toBe(false);

          // 1. It opens, and every byte reads as the history allows.
          const image = await Qcow2Image.open(createMemoryBackend(state.bytes, { writable: false }), { openBacking });
          const contents = await image.read(0, virtualSize);
          await image.close();
          const violations = checker.check(cutClock, contents);
          expect(violations, `${what}: guest bytes lost or invented`).toEqual([]);

          // 2. This engine's check finds no corruption.
          const ours: Qcow2CheckReport = await checkQcow2(createMemoryBackend(state.bytes, { writable: false }));
          expect({ corruptions: ours.corruptions, checkErrors: ours.checkErrors, messages: ours.messages.filter((m) => !m.startsWith('Leaked')) },
            `${what}: check`).toEqual({ corruptions: 0, checkErrors: 0, messages: [] });
          if (ours.leaks > 0) withLeaks++;

          // 3. qemu-img check agrees (a sample, or every state in long runs).
          if (s === 0 && k % 50 === 0 || samplePrng.next() / 2 ** 32 < QEMU_SAMPLE) {
            const path = join(dir, 'state.qcow2');
            writeFileSync(path, state.bytes);
            const qemu = qemuCheck(path);
            expect(counts({ corruptions: qemu.corruptions ?? 0, leaks: qemu.leaks ?? 0, checkErrors: qemu['check-errors'] }), `${what}: qemu-img check`)
              .toEqual(counts(ours));
            byQemu++;
          }
          states++;
        }
      }
      const c = record.counts;
      console.log(`crash [${setting.name}] seed ${seed}: ${setting.operations} guest ops (${c.batches} multiwrite batches of ${c.requests} requests, ` +
        `${c.writes} writes, ${c.zeroes} writeZeroes, ${c.discards} discards, ${c.flushes} flushes), ${backend.writes.length} host writes, ` +
        `${backend.flushes.length} host flushes; ${backend.writes.length} cut points, ${states} states verified by open + read-back + check(), ` +
        `${byQemu} also by qemu-img check; ${withLeaks} states had leaks; ${torn} torn and ${lost} lost writes; refcount table grown: ${grown} (${initialReftableClusters} -> ${new DataView(finalBytes.buffer).getUint32(REFTABLE_CLUSTERS_FIELD)} clusters, file ${finalBytes.length} bytes)`);
      if (settingIndex === 0) expect(grown, `${where}: the workload should grow the refcount table`).toBe(true);
      expect(states).toBe(backend.writes.length * STATES_PER_CUT);
      // The states really were crash states: some writes torn, some lost, some checked by qemu-img.
      expect({ torn: torn > 0, lost: lost > 0, byQemu: byQemu > 0 }, `${where}: kinds of crash state exercised`).toEqual({ torn: true, lost: true, byQemu: true });
    }, LONG ? 3_600_000 : 600_000);
  }
});
