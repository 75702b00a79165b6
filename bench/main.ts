// SPDX-License-Identifier: MIT
// The main job (`npm start`): the project's headline in one run, with no arguments and nothing
// to fetch. A guest writes sequentially in unaligned 4 KiB requests (and then randomly) into
// fresh 1 GiB images; each merge mode, qcow2 and raw, is measured side by side, every image is
// read back and checked (and handed to `qemu-img check` when qemu-img is installed), and the same
// pattern is run through `qemu-img bench` for comparison.

import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Qcow2Image, RawImage, openNodeBackend, type BlockImage, type WriteRequest, type MergeMode } from '../bindings/node.js';
import { fillPattern, machineLine, makeRandom, median, printTable, withTempDir } from './harness.js';

const KIB = 1024;
const MIB = 1024 * KIB;
const IMAGE_BYTES = 1024 * MIB;
const CLUSTER_BYTES = 64 * KIB;
const SEQUENTIAL_BYTES = 64 * MIB;
const REQUEST_BYTES = 4 * KIB;
const UNALIGNED_START = 512;
const RANDOM_REQUESTS = 4096;
const BATCH_REQUESTS = 32;
const ROUNDS = 3;

type Format = 'qcow2' | 'raw';
interface Workload { name: string; requests: WriteRequest[]; qemuArgs?: string[] }
interface Run { seconds: number; hostWriteCalls: number; hostWriteBytes: number; cowBytes: number; guestBytes: number; requests: number }

function makeWorkloads(): Workload[] {
  const sequential: WriteRequest[] = [];
  for (let offset = UNALIGNED_START; offset < UNALIGNED_START + SEQUENTIAL_BYTES; offset += REQUEST_BYTES) {
    const data = new Uint8Array(REQUEST_BYTES);
    fillPattern(data, offset - UNALIGNED_START);
    sequential.push({ offset, data });
  }
  const random = makeRandom(0x5eed);
  const scattered: WriteRequest[] = [];
  for (let i = 0; i < RANDOM_REQUESTS; i++) {
    const data = new Uint8Array(REQUEST_BYTES);
    fillPattern(data, i * REQUEST_BYTES, 0xfeed);
    scattered.push({ offset: (random() % (IMAGE_BYTES / REQUEST_BYTES)) * REQUEST_BYTES, data });
  }
  return [
    { name: `sequential 4 KiB from byte ${UNALIGNED_START}`, requests: sequential,
      qemuArgs: ['-c', String(SEQUENTIAL_BYTES / REQUEST_BYTES), '-d', '32', '-s', '4096', '-o', String(UNALIGNED_START)] },
    { name: 'random 4 KiB', requests: scattered },
  ];
}

function hasQemuImg(): boolean {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function openFresh(path: string, format: Format, merge: MergeMode, sync: boolean): Promise<BlockImage> {
  const backend = await openNodeBackend(path, { writable: true, create: true, sync });
  if (format === 'raw') {
    await backend.truncate!(IMAGE_BYTES);
    return RawImage.open(backend, { merge });
  }
  return Qcow2Image.create(backend, { virtualSize: IMAGE_BYTES, clusterSize: CLUSTER_BYTES, merge });
}

async function runOnce(path: string, format: Format, merge: MergeMode, sync: boolean, workload: Workload): Promise<Run> {
  const image = await openFresh(path, format, merge, sync);
  const started = performance.now();
  for (let first = 0; first < workload.requests.length; first += BATCH_REQUESTS) {
    await Promise.all(image.multiwrite(workload.requests.slice(first, first + BATCH_REQUESTS)));
  }
  await image.flush();
  const seconds = (performance.now() - started) / 1000;
  await verify(image, workload.requests);
  const stats = image.stats();
  await image.close();
  return { seconds, hostWriteCalls: stats.hostWriteCalls, hostWriteBytes: stats.hostWriteBytes, cowBytes: stats.cowBytes,
    guestBytes: stats.guestWriteBytes, requests: stats.guestWriteRequests };
}

/** Reads every request's range back; later requests win where they overlap. */
async function verify(image: BlockImage, requests: readonly WriteRequest[]): Promise<void> {
  const seen = new Set<number>();
  for (let i = requests.length - 1; i >= 0; i--) {
    const { offset, data } = requests[i];
    if (seen.has(offset)) continue;
    seen.add(offset);
    const got = await image.read(offset, (data as Uint8Array).byteLength);
    if (Buffer.compare(got, data as Uint8Array) !== 0) throw new Error(`read-back mismatch at guest offset ${offset}`);
  }
}

function qemuCheckClean(path: string): string {
  try {
    execFileSync('qemu-img', ['check', '-q', path], { stdio: 'pipe' });
    return 'clean';
  } catch (error) {
    return `NOT CLEAN (exit ${(error as { status?: number }).status})`;
  }
}

/** qemu-img bench -w on a fresh qcow2 with the same pattern: MB/s of its I/O phase. */
function qemuBench(dir: string, args: string[]): number {
  const path = join(dir, 'qemu.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${CLUSTER_BYTES}`, path, String(IMAGE_BYTES)]);
  const output = execFileSync('qemu-img', ['bench', '-w', '-t', 'writeback', '-i', 'threads', '--pattern=0xab', '-f', 'qcow2', ...args, path], { encoding: 'utf8' });
  const seconds = Number(/Run completed in ([\d.]+) seconds/.exec(output)?.[1]);
  return SEQUENTIAL_BYTES / seconds / 1e6;
}

async function main(): Promise<void> {
  const qemu = hasQemuImg();
  console.log('qcow2-wasm main job: guest writes in batches of 32 requests into fresh 1 GiB images (64 KiB clusters),');
  console.log('merged fully, only when strictly sequential (virtio-blk), or not at all (QEMU\'s block layer).');
  console.log(machineLine());
  if (qemu) console.log(execFileSync('qemu-img', ['--version'], { encoding: 'utf8' }).split('\n')[0]);
  else console.log('qemu-img is not installed: the QEMU comparison and qemu-img check are left out.');
  await withTempDir('qcow2-wasm-main-', async (dir) => {
    // [format, merge mode, synchronous Node file I/O (for emulators running the disk in a worker)]
    const configs: [Format, MergeMode, boolean][] = [
      ['qcow2', 'full', false], ['qcow2', 'adjacent', false], ['qcow2', 'off', false], ['qcow2', 'full', true],
      ['raw', 'full', false], ['raw', 'off', false],
    ];
    const keyOf = (format: Format, merge: MergeMode, sync: boolean) => `${format} ${merge}${sync ? ' sync' : ''}`;
    for (const workload of makeWorkloads()) {
      const runs = new Map<string, Run[]>();
      const checks = new Map<string, string>();
      // An untimed pass first, so the JIT has compiled every configuration's path.
      const warmUp: Workload = { name: 'warm-up', requests: workload.requests.slice(0, 2048) };
      for (const [format, merge, sync] of configs) await runOnce(join(dir, 'warm-up.img'), format, merge, sync, warmUp);
      for (let round = 0; round < ROUNDS; round++) {
        for (const [format, merge, sync] of configs) {
          const key = keyOf(format, merge, sync);
          const path = join(dir, `${format}-${merge}.img`);
          runs.set(key, [...(runs.get(key) ?? []), await runOnce(path, format, merge, sync, workload)]);
          if (qemu && format === 'qcow2') checks.set(key, qemuCheckClean(path));
        }
      }
      const qemuMbPerSecond = qemu && workload.qemuArgs ? median([0, 1, 2].map(() => qemuBench(dir, workload.qemuArgs!))) : undefined;
      const medianRun = (key: string) => runs.get(key)!.slice().sort((a, b) => a.seconds - b.seconds)[ROUNDS >> 1];
      const offSeconds = (format: Format) => medianRun(`${format} off`).seconds;
      console.log(`\n${workload.name}: ${workload.requests.length} requests, ${(workload.requests.length * REQUEST_BYTES / MIB).toFixed(0)} MiB`);
      printTable(['image', 'merge', 'host writes', 'writes/request', 'host bytes/guest byte', 'COW MiB', 'MB/s', 'vs off', ...(qemuMbPerSecond ? ['vs qemu-img bench'] : []), ...(qemu ? ['qemu-img check'] : [])],
        configs.map(([format, merge, sync]) => {
          const key = keyOf(format, merge, sync);
          const r = medianRun(key);
          const mbPerSecond = r.guestBytes / r.seconds / 1e6;
          return [sync ? `${format} (sync I/O)` : format, merge, String(r.hostWriteCalls), (r.hostWriteCalls / r.requests).toFixed(4), (r.hostWriteBytes / r.guestBytes).toFixed(3),
            (r.cowBytes / MIB).toFixed(1), mbPerSecond.toFixed(0), `${(offSeconds(format) / r.seconds).toFixed(2)}x`,
            ...(qemuMbPerSecond ? [`${(mbPerSecond / qemuMbPerSecond).toFixed(2)}x`] : []), ...(qemu ? [checks.get(key) ?? 'raw: n/a'] : [])];
        }));
      if (qemuMbPerSecond) console.log(`qemu-img bench -w -t writeback -d 32 -s 4096 -o ${UNALIGNED_START} (same pattern, fresh qcow2): ${qemuMbPerSecond.toFixed(0)} MB/s (its I/O phase; ours include the final flush)`);
    }
  });
  console.log(`\nMedians of ${ROUNDS} interleaved rounds. MB/s counts guest bytes (1e6 B/s). Every image was read back and matched what was written.`);
}

await main();
