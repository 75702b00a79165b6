// SPDX-License-Identifier: MIT
// The main job (`npm start`): the project's headline in one run, with no arguments and nothing
// to fetch. A guest writes sequentially in unaligned 4 KiB requests, 32 a batch, into a fresh
// 1 GiB qcow2 image and into an overlay over a fully written backing image; merging off (QEMU's
// block layer), adjacent-only (virtio-blk) and full are measured side by side with RawImage and
// `qemu-img bench` on the same pattern (when qemu-img is installed). Every image is read back.
// Then depth-1 latency (one 4 KiB request at a time, as an IDE controller sends them) against
// bare syscalls; reads against `qemu-img bench` in read mode and RawImage (4 KiB scattered at
// depth 1 and 32, 1 MiB sequential); compressed images read whole against `qemu-img convert -O
// raw`; and the memory of a 1 TiB image. Everything uses the defaults a user gets. Results: bench/results/main.json.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hasQemuImg, runWorkload, sequentialRequests, writeBase, UNALIGNED_START, type Config, type QemuRun, type Run, type Workload } from './allocating.js';
import { runDepth1, DEPTH1_IMAGE_BYTES } from './depth1.js';
import { measureHugeImage, runReads } from './reads.js';
import { runCompressedReads } from './compressed-read.js';
import { compressedTable, hugeImageTable, readsTable } from './reads-table.js';
import { machineLine, printTable, runProvenance, withTempDir } from './harness.js';

const STREAM_BYTES = 64 * 1024 * 1024;
const ROUNDS = 3;
const DEPTH1_REQUESTS = 20000;
const READ_REQUESTS = 20000;
const COMPRESSED_DISK_BYTES = 128 * 1024 * 1024;
const CONFIGS: readonly Config[] = [
  { format: 'qcow2', merge: 'off' }, { format: 'qcow2', merge: 'adjacent' }, { format: 'qcow2', merge: 'full' },
  { format: 'qcow2', merge: 'full', sync: false }, { format: 'raw', merge: 'full' },
];

/** One workload's figures as the results file keeps them. */
interface WorkloadResult { title: string; mbPerSecond: Record<string, number>; qemuMbPerSecond: number | undefined; runs: Record<string, Run[]>; qemu: QemuRun[] }

async function main(): Promise<void> {
  const qemu = hasQemuImg();
  const provenance = runProvenance();
  console.log('qcow2-wasm main job: sequential 4 KiB guest writes from byte 512, in batches of 32, into 1 GiB qcow2 images');
  console.log('(64 KiB clusters) on the Node file backend: merged fully, only when strictly sequential (virtio-blk), or not at all.');
  console.log(`${machineLine()}; revision ${provenance.revision}`);
  console.log(provenance.qemu ?? 'qemu-img is not installed: the QEMU comparison is left out (apt-get install qemu-utils).');
  const workloads: Workload[] = [
    { key: 'fresh', title: `fresh image, ${STREAM_BYTES >> 20} MiB from byte ${UNALIGNED_START}`, requests: sequentialRequests(STREAM_BYTES), overBacking: false, qemuOffset: UNALIGNED_START },
    { key: 'overlay', title: `overlay over a fully written backing image, ${STREAM_BYTES >> 20} MiB from byte ${UNALIGNED_START}`, requests: sequentialRequests(STREAM_BYTES), overBacking: true, qemuOffset: UNALIGNED_START },
  ];
  const results: Record<string, WorkloadResult> = {};
  const { depth1, reads, compressed, memory } = await withTempDir('qcow2-wasm-main-', async (dir) => {
    await writeBase(dir);
    for (const workload of workloads) {
      const { summary, runs, qemuRuns } = await runWorkload(dir, workload, CONFIGS, ROUNDS, qemu, STREAM_BYTES);
      const full = summary.mbPerSecond.get('qcow2 full')!;
      const off = summary.mbPerSecond.get('qcow2 off')!;
      console.log(`=> qcow2 with full merging: ${(full / off).toFixed(1)}x the MB/s of no merging` +
        (summary.qemuMbPerSecond ? `, ${(full / summary.qemuMbPerSecond).toFixed(1)}x qemu-img bench` : ''));
      results[workload.key] = {
        title: workload.title, mbPerSecond: Object.fromEntries(summary.mbPerSecond), qemuMbPerSecond: summary.qemuMbPerSecond,
        runs: Object.fromEntries(runs), qemu: qemuRuns,
      };
    }
    const depth1Result = await runDepth1(dir, DEPTH1_REQUESTS, ROUNDS);
    // Reads, compressed images and the 1 TiB image need qemu-img to make their images.
    const reads = qemu ? await runReads(dir, READ_REQUESTS, ROUNDS) : undefined;
    const compressed = qemu ? await runCompressedReads(dir, COMPRESSED_DISK_BYTES, ROUNDS) : undefined;
    const memory = qemu ? await measureHugeImage(dir) : undefined;
    return { depth1: depth1Result, reads, compressed, memory };
  });

  console.log(`\ndepth 1: ${DEPTH1_REQUESTS} random 4 KiB requests at a time each, awaited one by one, in place in a fully written ` +
    `${DEPTH1_IMAGE_BYTES >> 20} MiB image (page cache), openImageFile defaults; per request, the median over slices of 250 ` +
    `(the contenders taking turns slice by slice) of ${ROUNDS} rounds`);
  const us = (value: number) => value.toFixed(1);
  printTable(['contender', 'read µs/request', 'write µs/request', 'read vs RawImage', 'write vs RawImage', 'read vs bare', 'write vs bare'], [
    ['qcow2 (Qcow2Image)', us(depth1.qcow2.read), us(depth1.qcow2.write), `${(depth1.qcow2.read / depth1.raw.read).toFixed(2)}x`,
      `${(depth1.qcow2.write / depth1.raw.write).toFixed(2)}x`, `${(depth1.qcow2.read / depth1.bare.read).toFixed(1)}x`, `${(depth1.qcow2.write / depth1.bare.write).toFixed(1)}x`],
    ['RawImage', us(depth1.raw.read), us(depth1.raw.write), '1.00x', '1.00x',
      `${(depth1.raw.read / depth1.bare.read).toFixed(1)}x`, `${(depth1.raw.write / depth1.bare.write).toFixed(1)}x`],
    ['bare fs.readSync / fs.writeSync', us(depth1.bare.read), us(depth1.bare.write), '', '', '1.0x', '1.0x'],
  ]);

  if (reads) readsTable(reads);
  if (compressed) compressedTable(compressed);
  if (memory) hugeImageTable(memory);

  console.log(`\nMedians of ${ROUNDS} interleaved rounds. MB/s counts guest bytes (1e6 B/s) until every request resolved, as qemu-img bench`);
  console.log('does; "incl. flush" adds the final flush. "thread-pool I/O": openNodeBackend(path, { sync: false }), every transfer');
  console.log('through libuv\'s thread pool (the default moves transfers up to 128 KiB with synchronous syscalls). Full figures:');
  console.log('npm run bench:allocating.');
  mkdirSync(join('bench', 'results'), { recursive: true });
  const file = join('bench', 'results', 'main.json');
  writeFileSync(file, `${JSON.stringify({ bench: 'main', ...provenance, streamBytes: STREAM_BYTES, rounds: ROUNDS, workloads: results, depth1, reads, compressed, memory }, null, 2)}\n`);
  console.log(`Results written to ${file}.`);
}

await main();
