// SPDX-License-Identifier: MIT
// The cost of the loss window (`npm run bench:loss-window`): the main job's seed workload
// (sequential unaligned 4 KiB writes, 32 a batch, 64 MiB into a fresh 1 GiB qcow2 image and into
// an overlay) with the timed metadata write-back off, at its default (1000 ms), and at shorter
// delays that make it fire many times during the run, side by side in interleaved rounds.

import { runWorkload, sequentialRequests, writeBase, UNALIGNED_START, type Config, type Workload } from './allocating.js';
import { machineLine, withTempDir } from './harness.js';

const STREAM_BYTES = 64 * 1024 * 1024;
const ROUNDS = 5;
const CONFIGS: readonly Config[] = [
  { format: 'qcow2', merge: 'full', writebackDelayMs: false }, { format: 'qcow2', merge: 'full', writebackDelayMs: 1000 },
  { format: 'qcow2', merge: 'full', writebackDelayMs: 100 }, { format: 'qcow2', merge: 'full', writebackDelayMs: 10 },
  { format: 'raw', merge: 'full' },
];

async function main(): Promise<void> {
  console.log('qcow2-wasm loss window cost: the main job\'s workload with the timed metadata write-back off and on.');
  console.log(machineLine());
  const workloads: Workload[] = [
    { key: 'fresh', title: `fresh image, ${STREAM_BYTES >> 20} MiB from byte ${UNALIGNED_START}`, requests: sequentialRequests(STREAM_BYTES), overBacking: false },
    { key: 'overlay', title: `overlay over a fully written backing image, ${STREAM_BYTES >> 20} MiB from byte ${UNALIGNED_START}`, requests: sequentialRequests(STREAM_BYTES), overBacking: true },
  ];
  await withTempDir('qcow2-wasm-loss-window-', async (dir) => {
    await writeBase(dir);
    for (const workload of workloads) {
      const { summary } = await runWorkload(dir, workload, CONFIGS, ROUNDS, false, STREAM_BYTES);
      const off = summary.mbPerSecond.get('qcow2 full, no loss window')!;
      for (const delay of [1000, 100, 10]) {
        const on = summary.mbPerSecond.get(`qcow2 full, loss window ${delay} ms`)!;
        console.log(`=> loss window ${delay} ms: ${(on / off).toFixed(3)}x the MB/s without it`);
      }
    }
  });
  console.log(`\nMedians of ${ROUNDS} interleaved rounds. MB/s counts guest bytes until every request resolved.`);
}

await main();
