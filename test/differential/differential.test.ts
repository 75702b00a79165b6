// SPDX-License-Identifier: MIT
// Differential stress test (test/differential/run.ts): the engine against a flat model disk on
// every image kind of test/differential/image-kinds.ts, with requests left in flight over a
// delaying, reordering backend, QEMU judging the file after every phase.
//
// Short run (npm test): one seed per image kind.
// Long run: `npm run stress:diff` (QCOW2_WASM_DIFF=long): seeds over every kind, round robin, for
//   QCOW2_WASM_DIFF_MINUTES (default 30); QCOW2_WASM_DIFF_SEED sets the first seed,
//   QCOW2_WASM_DIFF_KINDS (comma-separated kind indices) limits the kinds. It prints each finding as
//   it comes, and the seeds and counts at the end.
// Replay one run: QCOW2_WASM_DIFF_KIND=<kind index> QCOW2_WASM_DIFF_SEED=<seed>
//   QCOW2_WASM_DIFF_SIZE=<short|long> (each failure prints this command).

import { it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { describeWithQemu } from '../helpers/qemu.js';
import { IMAGE_KINDS } from './image-kinds.js';
import { DifferentialFailure, runDifferential, type RunCounts, type RunSize } from './run.js';

const SIZES: Record<string, RunSize> = {
  short: { name: 'short', phases: 3, operationsPerPhase: 120, maxInFlight: 24, settleTimeoutMs: 30_000 },
  long: { name: 'long', phases: 5, operationsPerPhase: 400, maxInFlight: 48, settleTimeoutMs: 60_000 },
};
const LONG = process.env.QCOW2_WASM_DIFF === 'long';
const SIZE = SIZES[process.env.QCOW2_WASM_DIFF_SIZE ?? (LONG ? 'long' : 'short')];
const REPLAY_KIND = process.env.QCOW2_WASM_DIFF_KIND;
const SEED_ENV = process.env.QCOW2_WASM_DIFF_SEED;
const MINUTES = Number(process.env.QCOW2_WASM_DIFF_MINUTES ?? 30);
const LONG_KINDS = process.env.QCOW2_WASM_DIFF_KINDS?.split(',').map(Number) ?? IMAGE_KINDS.map((_, i) => i);

function addCounts(total: RunCounts, more: RunCounts): void {
  for (const key of Object.keys(total) as (keyof RunCounts)[]) total[key] += more[key];
}
const summary = (c: RunCounts) => `${c.phases} phases: ${c.batches} multiwrite batches (${c.requests} requests), ${c.writes} writes, ` +
  `${c.reads} reads checked, ${c.zeroes} writeZeroes, ${c.discards} discards, ${c.flushes} flushes, ${c.sleeps} sleeps, ` +
  `${c.modeSwitches} merge-mode switches, ${c.closesInFlight} closes with requests in flight, ${c.reftableGrowths} phases that grew the refcount table; ` +
  `${c.hostWrites} host writes, ${c.hostFlushes} host flushes`;

describeWithQemu('differential stress: engine vs a flat model, QEMU judging', () => {
  let scratch: string;
  /** A run with findings keeps its files (the message says where): then the scratch directory stays. */
  let keepScratch = false;
  const run = async (kindIndex: number, seed: number): Promise<RunCounts> => {
    try {
      return await runDifferential(kindIndex, seed, SIZE, scratch);
    } catch (error) {
      keepScratch = true;
      throw error;
    }
  };
  beforeAll(() => { scratch = mkdtempSync(join(tmpdir(), 'qcow2-wasm-diff-')); });
  afterAll(() => { if (!keepScratch) rmSync(scratch, { recursive: true, force: true }); });

  if (!SIZE) throw new Error(`QCOW2_WASM_DIFF_SIZE must be one of ${Object.keys(SIZES).join(', ')}`);

  if (REPLAY_KIND !== undefined) {
    const kindIndex = Number(REPLAY_KIND);
    const seed = Number(SEED_ENV);
    it(`replay: kind ${kindIndex} (${IMAGE_KINDS[kindIndex]?.name}), seed ${seed}`, async () => {
      const counts = await run(kindIndex, seed);
      console.log(`diff replay kind ${kindIndex} seed ${seed}: ${summary(counts)}`);
    }, 600_000);
  } else if (LONG) {
    it(`every image kind, seeds round robin for ${MINUTES} minutes`, async () => {
      const firstSeed = Number(SEED_ENV ?? Date.now() % 1_000_000_000);
      const deadline = Date.now() + MINUTES * 60_000;
      const total: RunCounts = { phases: 0, batches: 0, requests: 0, writes: 0, reads: 0, zeroes: 0, discards: 0, flushes: 0,
        sleeps: 0, modeSwitches: 0, closesInFlight: 0, reftableGrowths: 0, hostWrites: 0, hostFlushes: 0 };
      const findings: string[] = [];
      const runsPerKind = IMAGE_KINDS.map(() => 0);
      let seed = firstSeed;
      for (; Date.now() < deadline; seed++) {
        const kindIndex = LONG_KINDS[(seed - firstSeed) % LONG_KINDS.length];
        try {
          addCounts(total, await run(kindIndex, seed));
        } catch (error) {
          const message = error instanceof DifferentialFailure ? error.message : `kind ${kindIndex}, seed ${seed}: ${String(error)}`;
          console.log(`\n*** FINDING ***\n${message}\n`);
          findings.push(message);
        }
        runsPerKind[kindIndex]++;
      }
      console.log(`diff long run: seeds ${firstSeed}..${seed - 1} (${seed - firstSeed} runs, ${findings.length} with findings) over ` +
        `${MINUTES} minutes; runs per kind: ${LONG_KINDS.map((i) => `${i} '${IMAGE_KINDS[i].name}' ${runsPerKind[i]}`).join(', ')}; ${summary(total)}`);
      expect(findings, 'findings (each with its replay command)').toEqual([]);
    }, MINUTES * 60_000 + 600_000);
  } else {
    const baseSeed = Number(SEED_ENV ?? 7100);
    for (const [kindIndex, kind] of IMAGE_KINDS.entries()) {
      it(`${kind.name} (seed ${baseSeed + kindIndex})`, async () => {
        const counts = await run(kindIndex, baseSeed + kindIndex);
        console.log(`diff [${kind.name}] seed ${baseSeed + kindIndex}: ${summary(counts)}`);
      }, 120_000);
    }
  }
});
