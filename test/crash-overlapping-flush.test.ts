// SPDX-License-Identifier: MIT
// Crash consistency of overlapping flushes: two or more flush() calls in flight at
// once, with writes acknowledged between them, over the crash simulator with slow backend flushes.
// A power cut after every host write: in the state that keeps only what backend flushes made
// durable, and in random states that also keep some later writes (some torn), every write
// acknowledged before the call of a flush that had resolved by the cut must read back whole.
//
// Reproduce a failure: QCOW2_WASM_SEED=<seed printed>.

import { it, expect } from 'vitest';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { checkQcow2 } from '../bindings/qcow2/qcow2-check.js';
import { derivedPrng } from './helpers/crash-workload.js';
import { guaranteedWrites, runFlushOverlapWorkload, type FlushWorkloadSetting } from './helpers/crash-flush-workload.js';
import type { CrashState } from './helpers/crash-backend.js';

const SEED = Number(process.env.QCOW2_WASM_SEED ?? 4242);
const SEEDS = 3;
const KiB = 1024;

const SETTING: FlushWorkloadSetting = { clusterSize: 4 * KiB, virtualSize: 1024 * KiB, prefilledBytes: 512 * KiB, writes: 120, flushDelayMs: 3 };

it(`${SEEDS} seeds: writes acknowledged before a resolved flush survive a power cut at every point, with flushes overlapping`, async () => {
  for (let seed = SEED; seed < SEED + SEEDS; seed++) {
    const where = `seed ${seed} (replay: QCOW2_WASM_SEED=${seed} npx vitest run --project node test/crash-overlapping-flush.test.ts)`;
    const record = await runFlushOverlapWorkload(SETTING, seed);
    const { backend } = record;
    expect(record.errors.map(String), `${where}: failed guest requests`).toEqual([]);
    expect(backend.overlaps, `${where}: overlapping host calls in flight`).toEqual([]);
    expect(record.maxFlushesInFlight, `${where}: the workload should overlap flushes`).toBeGreaterThan(1);
    const replay = backend.replay();
    let states = 0;
    let guaranteedChecks = 0;
    for (let k = 0; k < backend.writes.length; k++) {
      replay.advance(k);
      const cutClock = replay.cutClock(k);
      const guaranteed = guaranteedWrites(record, cutClock);
      // The strictest state at every cut; a random one (some later writes kept, some torn) at every 4th.
      const candidates: [string, CrashState][] = [['durable only', replay.durableState()]];
      if (k % 4 === 0) candidates.push(['random', replay.state(derivedPrng(seed, k), k % 8 === 0 ? 0 : 0.5)]);
      for (const [name, state] of candidates) {
        const what = `${where}: cut after host write ${k} of ${backend.writes.length}, ${name} state (kept ${state.kept}, torn ${state.torn}, lost ${state.lost})`;
        const image = await Qcow2Image.open(createMemoryBackend(state.bytes, { writable: false }));
        const contents = await image.read(0, record.virtualSize);
        await image.close();
        const missing = guaranteed.filter((w) => Buffer.compare(contents.subarray(w.offset, w.offset + w.data.byteLength), w.data) !== 0);
        expect(missing.map((w) => `guest write [${w.offset}, +${w.data.byteLength}) acknowledged at clock ${w.ackedAt}`),
          `${what}: acknowledged and flushed writes lost (cut at clock ${cutClock})`).toEqual([]);
        guaranteedChecks += guaranteed.length;
        if (k % 16 === 0) {
          const report = await checkQcow2(createMemoryBackend(state.bytes, { writable: false }));
          expect({ corruptions: report.corruptions, checkErrors: report.checkErrors }, `${what}: check`).toEqual({ corruptions: 0, checkErrors: 0 });
        }
        states++;
      }
    }
    console.log(`crash, overlapping flushes: seed ${seed}: ${record.writes.length} guest writes, ${record.flushes.length} guest flushes ` +
      `(up to ${record.maxFlushesInFlight} in flight), ${backend.writes.length} host writes, ${backend.flushes.length} host flushes; ` +
      `${states} crash states, ${guaranteedChecks} guaranteed writes checked`);
  }
}, 300_000);
