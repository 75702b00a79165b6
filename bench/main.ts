// SPDX-License-Identifier: MIT
// The main job (`npm start`): the project's headline in one run, with no arguments and nothing
// to fetch. A guest writes sequentially in unaligned 4 KiB requests, 32 a batch, into a fresh
// 1 GiB qcow2 image and into an overlay over a fully written backing image; merging off (QEMU's
// block layer), adjacent-only (virtio-blk) and full are measured side by side with RawImage and
// `qemu-img bench` on the same pattern (when qemu-img is installed). Every image is read back.

import { execFileSync } from 'node:child_process';
import { hasQemuImg, runWorkload, sequentialRequests, writeBase, UNALIGNED_START, type Config, type Workload } from './allocating.js';
import { machineLine, withTempDir } from './harness.js';

const STREAM_BYTES = 64 * 1024 * 1024;
const ROUNDS = 3;
const CONFIGS: readonly Config[] = [
  { format: 'qcow2', merge: 'off' }, { format: 'qcow2', merge: 'adjacent' }, { format: 'qcow2', merge: 'full' },
  { format: 'qcow2', merge: 'full', sync: true }, { format: 'raw', merge: 'full' },
];

async function main(): Promise<void> {
  const qemu = hasQemuImg();
  console.log('qcow2-wasm main job: sequential 4 KiB guest writes from byte 512, in batches of 32, into 1 GiB qcow2 images');
  console.log('(64 KiB clusters) on the Node file backend: merged fully, only when strictly sequential (virtio-blk), or not at all.');
  console.log(machineLine());
  if (qemu) console.log(execFileSync('qemu-img', ['--version'], { encoding: 'utf8' }).split('\n')[0]);
  else console.log('qemu-img is not installed: the QEMU comparison is left out (apt-get install qemu-utils).');
  const workloads: Workload[] = [
    { key: 'fresh', title: `fresh image, ${STREAM_BYTES >> 20} MiB from byte ${UNALIGNED_START}`, requests: sequentialRequests(STREAM_BYTES), overBacking: false, qemuOffset: UNALIGNED_START },
    { key: 'overlay', title: `overlay over a fully written backing image, ${STREAM_BYTES >> 20} MiB from byte ${UNALIGNED_START}`, requests: sequentialRequests(STREAM_BYTES), overBacking: true, qemuOffset: UNALIGNED_START },
  ];
  await withTempDir('qcow2-wasm-main-', async (dir) => {
    await writeBase(dir);
    for (const workload of workloads) {
      const { summary } = await runWorkload(dir, workload, CONFIGS, ROUNDS, qemu, STREAM_BYTES);
      const full = summary.mbPerSecond.get('qcow2 full')!;
      const off = summary.mbPerSecond.get('qcow2 off')!;
      console.log(`=> qcow2 with full merging: ${(full / off).toFixed(1)}x the MB/s of no merging` +
        (summary.qemuMbPerSecond ? `, ${(full / summary.qemuMbPerSecond).toFixed(1)}x qemu-img bench` : ''));
    }
  });
  console.log(`\nMedians of ${ROUNDS} interleaved rounds. MB/s counts guest bytes (1e6 B/s) until every request resolved, as qemu-img bench`);
  console.log('does; "incl. flush" adds the final flush. "sync I/O": openNodeBackend(path, { sync: true }), for emulators running the');
  console.log('disk in a worker. Full figures: npm run bench:allocating.');
}

await main();
