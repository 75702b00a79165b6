// SPDX-License-Identifier: MIT
// Allocating writes without waste (`npm run bench:allocating`): the seed workload (sequential 4 KiB
// guest writes from byte 512, 32 requests a batch, 256 MiB) into a fresh 1 GiB qcow2 image with
// 64 KiB clusters, the same into an overlay over a fully written backing image, and random 4 KiB
// writes into a fresh image; merging off, adjacent-only and full against RawImage on the same
// requests and `qemu-img bench` on the same pattern, in one run (bench/allocating.ts). Then the
// seed workload on the memory backend under the V8 profiler: the wasm core's CPU share.
// `--quick`: 64 MiB streams, one round. Writes bench/results/allocating.json and two SVG charts.

import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MergeMode } from '../bindings/node.js';
import { configKey, hasQemuImg, randomRequests, runWorkload, sequentialRequests, profileCoreShare, writeBase, UNALIGNED_START, type Config, type Workload } from './allocating.js';
import { machineInfo, machineLine, printResult, withTempDir } from './harness.js';
import { barChartSvg } from './plot.js';

const MIB = 1024 * 1024;
const QUICK = process.argv.includes('--quick');
const STREAM_BYTES = (QUICK ? 64 : 256) * MIB;
const RANDOM_REQUESTS = QUICK ? 4096 : 16384;
const ROUNDS = QUICK ? 1 : 3;
const MODES: readonly MergeMode[] = ['off', 'adjacent', 'full'];
const CONFIGS: readonly Config[] = [...MODES.map((merge) => ({ format: 'qcow2' as const, merge })), { format: 'raw', merge: 'full' }];

async function main(): Promise<void> {
  const qemu = hasQemuImg();
  console.log(`allocating writes: ${STREAM_BYTES / MIB} MiB streams in batches of 32, 1 GiB images, 64 KiB clusters, Node file backend`);
  console.log(machineLine());
  if (qemu) console.log(execFileSync('qemu-img', ['--version'], { encoding: 'utf8' }).split('\n')[0]);
  else console.log('qemu-img is not installed: the QEMU columns are left out.');
  const workloads: Workload[] = [
    { key: 'sequential-fresh', title: `sequential 4 KiB from byte ${UNALIGNED_START}, fresh image`, requests: sequentialRequests(STREAM_BYTES), overBacking: false, qemuOffset: UNALIGNED_START },
    { key: 'sequential-overlay', title: `sequential 4 KiB from byte ${UNALIGNED_START}, overlay over a fully written backing image`, requests: sequentialRequests(STREAM_BYTES), overBacking: true, qemuOffset: UNALIGNED_START },
    { key: 'random-fresh', title: `random 4 KiB (${RANDOM_REQUESTS} requests), fresh image`, requests: randomRequests(RANDOM_REQUESTS), overBacking: false },
  ];
  const results: Record<string, unknown> = {};
  mkdirSync(join('bench', 'results'), { recursive: true });
  await withTempDir('qcow2-wasm-allocating-', async (dir) => {
    await writeBase(dir);
    for (const workload of workloads) {
      const { summary, runs, qemuRuns } = await runWorkload(dir, workload, CONFIGS, ROUNDS, qemu, STREAM_BYTES);
      results[workload.key] = { runs: Object.fromEntries(runs), qemu: qemuRuns };
      if (workload.qemuOffset === undefined) continue;
      const bars = CONFIGS.map((config) => ({ label: configKey(config), value: summary.mbPerSecond.get(configKey(config))! }));
      if (summary.qemuMbPerSecond) bars.push({ label: 'qemu-img bench', value: summary.qemuMbPerSecond });
      writeFileSync(join('bench', 'results', `${workload.key}.svg`), barChartSvg(`${workload.title}: MB/s, median of ${ROUNDS}`, bars));
    }
  });
  const profile = await profileCoreShare(workloads[0].requests);
  const percent = (part: number, whole: number) => `${((100 * part) / whole).toFixed(1)}%`;
  console.log(`\nCPU profile of the sequential workload on the memory backend: ${profile.totalMs.toFixed(0)} ms of non-idle CPU; ` +
    `the wasm core ${profile.wasmMs.toFixed(0)} ms (${percent(profile.wasmMs, profile.totalMs)} of all, ` +
    `${percent(profile.wasmMs, profile.totalMs - profile.backendMs)} of what is not the backend's copying, ${profile.backendMs.toFixed(0)} ms).`);
  console.log(`Medians of ${ROUNDS} interleaved rounds; MB/s counts guest bytes (1e6 B/s) until every request resolved, as qemu-img bench does; every image was read back.`);
  const result = { bench: 'allocating', machine: machineInfo(), streamBytes: STREAM_BYTES, rounds: ROUNDS, results, profile };
  writeFileSync(join('bench', 'results', 'allocating.json'), `${JSON.stringify(result, null, 2)}\n`);
  printResult({ bench: 'allocating', wasmShareOfAll: profile.wasmMs / profile.totalMs, wasmShareOutsideBackend: profile.wasmMs / (profile.totalMs - profile.backendMs) });
}

await main();
