// SPDX-License-Identifier: MIT
// The allocating-write workloads shared by `npm start` (bench/main.ts) and the full benchmark
// (bench/allocating.bench.ts): the seed workload (sequential 4 KiB guest writes from byte 512, 32
// requests a batch) into a fresh 1 GiB qcow2 image with 64 KiB clusters or an overlay over a fully
// written backing image, random 4 KiB writes; run per merge mode against RawImage and `qemu-img
// bench` on the same pattern, with every image read back; and a CPU profile of the wasm core.

import { execFileSync } from 'node:child_process';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  Qcow2Image, RawImage, createMemoryBackend, openNodeBackend, type BlockImage, type MergeMode, type WriteRequest,
} from '../bindings/node.js';
import { fillPattern, makeRandom, median, printTable } from './harness.js';

const KIB = 1024;
const MIB = 1024 * KIB;
/** Virtual size of every image. */
export const IMAGE_BYTES = 1024 * MIB;
const CLUSTER_BYTES = 64 * KIB;
const REQUEST_BYTES = 4 * KIB;
/** Where the sequential stream starts: not cluster-aligned, as a guest's partition often is. */
export const UNALIGNED_START = 512;
const BATCH_REQUESTS = 32;

/** A named list of requests, into a fresh image or an overlay over the backing image. */
export interface Workload { key: string; title: string; requests: WriteRequest[]; overBacking: boolean; qemuOffset?: number }

/** One configuration: image format, merge mode, the Node backend's `sync` option (default 'auto'), and the qcow2 loss window (default: the library's). */
export interface Config { format: 'qcow2' | 'raw'; merge: MergeMode; sync?: boolean | 'auto'; writebackDelayMs?: number | false }

/** What one run of a configuration measured. */
export interface Run {
  /** From the first write until every request's promise resolved (qemu-img bench's measure). */
  writeSeconds: number;
  /** The final flush alone. */
  flushSeconds: number;
  guestBytes: number;
  requests: number;
  hostWriteCalls: number;
  hostWriteBytes: number;
  backingReadBytes: number;
  cowBytes: number;
}

/** What one qemu-img bench run measured: MB/s of its I/O phase, its own bytes and write syscalls from /proc. */
export interface QemuRun { mbPerSecond: number; writtenPerGuest: number; readPerGuest: number; writesPerRequest: number }

/** Sequential 4 KiB requests covering `streamBytes` from UNALIGNED_START. */
export function sequentialRequests(streamBytes: number): WriteRequest[] {
  const requests: WriteRequest[] = [];
  for (let offset = UNALIGNED_START; offset < UNALIGNED_START + streamBytes; offset += REQUEST_BYTES) {
    const data = new Uint8Array(REQUEST_BYTES);
    fillPattern(data, offset - UNALIGNED_START);
    requests.push({ offset, data });
  }
  return requests;
}

/** `count` 4 KiB requests at seeded random 4 KiB-aligned offsets of the image. */
export function randomRequests(count: number): WriteRequest[] {
  const random = makeRandom(0xa11c);
  const requests: WriteRequest[] = [];
  for (let i = 0; i < count; i++) {
    const data = new Uint8Array(REQUEST_BYTES);
    fillPattern(data, i * REQUEST_BYTES, 0xfeed);
    requests.push({ offset: (random() % (IMAGE_BYTES / REQUEST_BYTES)) * REQUEST_BYTES, data });
  }
  return requests;
}

/** True when qemu-img runs here. */
export function hasQemuImg(): boolean {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Writes the backing image `base.qcow2` in `dir`: 1 GiB, every byte written (0x11), as QEMU's overlay baseline has it. */
export async function writeBase(dir: string): Promise<void> {
  const backend = await openNodeBackend(join(dir, 'base.qcow2'), { writable: true, create: true });
  const base = await Qcow2Image.create(backend, { virtualSize: IMAGE_BYTES, clusterSize: CLUSTER_BYTES });
  const chunk = new Uint8Array(4 * MIB).fill(0x11);
  for (let offset = 0; offset < IMAGE_BYTES; offset += chunk.byteLength) await base.write(offset, chunk);
  await base.close();
}
async function openTarget(dir: string, config: Config, overBacking: boolean): Promise<Qcow2Image | RawImage> {
  const { format, merge } = config;
  const backend = await openNodeBackend(join(dir, `${format}-${merge}.img`), { writable: true, create: true, sync: config.sync });
  if (format === 'raw') {
    await backend.truncate!(0);
    await backend.truncate!(IMAGE_BYTES);
    return RawImage.open(backend, { merge });
  }
  return Qcow2Image.create(backend, {
    virtualSize: IMAGE_BYTES, clusterSize: CLUSTER_BYTES, merge,
    ...(config.writebackDelayMs !== undefined ? { writebackDelayMs: config.writebackDelayMs } : {}),
    ...(overBacking ? { backingFile: 'base.qcow2', backingFormat: 'qcow2' as const, openBacking: () => openNodeBackend(join(dir, 'base.qcow2')) } : {}),
  });
}

/** Submits the requests in batches of 32, one batch at a time (a virtio queue's worth). */
export async function drive(image: BlockImage, requests: readonly WriteRequest[]): Promise<void> {
  for (let first = 0; first < requests.length; first += BATCH_REQUESTS) {
    await Promise.all(image.multiwrite(requests.slice(first, first + BATCH_REQUESTS)));
  }
}

/** Runs `workload` once into a new image of `config` in `dir` (base.qcow2 there for overlays), reads it back. */
export async function runOnce(dir: string, config: Config, workload: Workload): Promise<Run> {
  const image = await openTarget(dir, config, workload.overBacking);
  const started = performance.now();
  await drive(image, workload.requests);
  const written = performance.now();
  await image.flush();
  const flushed = performance.now();
  await verify(image, workload.requests);
  const stats = image.stats();
  const backingReadBytes = image instanceof Qcow2Image ? (image.backing?.stats().hostReadBytes ?? 0) : 0;
  await image.close();
  return {
    writeSeconds: (written - started) / 1000, flushSeconds: (flushed - written) / 1000, guestBytes: stats.guestWriteBytes,
    requests: stats.guestWriteRequests, hostWriteCalls: stats.hostWriteCalls, hostWriteBytes: stats.hostWriteBytes, backingReadBytes,
    cowBytes: stats.cowBytes,
  };
}

/** Reads every request's range back (the last write of each offset wins). */
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

/** qemu-img bench -w on a fresh qcow2 (or an overlay over the base) with the seed pattern; its own I/O from /proc. */
export function qemuBench(dir: string, overBacking: boolean, offset: number, streamBytes: number): QemuRun {
  const path = join(dir, 'qemu.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${CLUSTER_BYTES}`,
    ...(overBacking ? ['-b', 'base.qcow2', '-F', 'qcow2'] : []), path, String(IMAGE_BYTES)], { cwd: dir });
  const count = streamBytes / REQUEST_BYTES;
  // /proc/$$/io of the shell adds up the children it has reaped: qemu-img's bytes and syscalls
  // (plus a few of grep's own, negligible against thousands of requests).
  const script = 'grep -E "^(rchar|wchar|syscw)" /proc/$$/io; qemu-img bench -w -t writeback -i threads --pattern=0xab -f qcow2 ' +
    `-c ${count} -d 32 -s ${REQUEST_BYTES} -o ${offset} "$1"; grep -E "^(rchar|wchar|syscw)" /proc/$$/io`;
  const output = execFileSync('sh', ['-c', script, 'sh', path], { encoding: 'utf8' });
  const counter = (name: string) => [...output.matchAll(new RegExp(`^${name}: (\\d+)$`, 'gm'))].map((m) => Number(m[1]));
  const [readBefore, readAfter] = counter('rchar');
  const [writtenBefore, writtenAfter] = counter('wchar');
  const [writeCallsBefore, writeCallsAfter] = counter('syscw');
  const seconds = Number(/Run completed in ([\d.]+) seconds/.exec(output)?.[1]);
  const guestBytes = count * REQUEST_BYTES;
  return {
    mbPerSecond: guestBytes / seconds / 1e6, writtenPerGuest: (writtenAfter - writtenBefore) / guestBytes,
    readPerGuest: (readAfter - readBefore) / guestBytes, writesPerRequest: (writeCallsAfter - writeCallsBefore) / count,
  };
}

/** What the CPU profile of the memory-backend run found, in milliseconds of sampled self time. */
export interface CoreShare {
  /** Self time in wasm functions (the core). */
  wasmMs: number;
  /** Self time in the memory backend's own functions (copying into its pages, first-touch page faults). */
  backendMs: number;
  /** All non-idle self time, garbage collection included. */
  totalMs: number;
}

/**
 * Runs the workload on the memory backend under the V8 sampling profiler (after an untimed
 * warm-up) and attributes self time to the wasm core, the backend and everything else.
 */
export async function profileCoreShare(requests: readonly WriteRequest[]): Promise<CoreShare> {
  const warm = await Qcow2Image.create(createMemoryBackend(), { virtualSize: IMAGE_BYTES, clusterSize: CLUSTER_BYTES });
  await drive(warm, requests.slice(0, 8192));
  await warm.close();
  const image = await Qcow2Image.create(createMemoryBackend(), { virtualSize: IMAGE_BYTES, clusterSize: CLUSTER_BYTES });
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 100 });
  await session.post('Profiler.start');
  await drive(image, requests);
  await image.flush();
  const { profile } = await session.post('Profiler.stop');
  session.disconnect();
  await image.close();
  const deltas = profile.timeDeltas ?? [];
  const selfMs = new Map<number, number>();
  (profile.samples ?? []).forEach((node, i) => selfMs.set(node, (selfMs.get(node) ?? 0) + (deltas[i] ?? 0) / 1000));
  const share: CoreShare = { wasmMs: 0, backendMs: 0, totalMs: 0 };
  for (const node of profile.nodes) {
    const ms = selfMs.get(node.id) ?? 0;
    if (node.callFrame.functionName === '(idle)') continue;
    share.totalMs += ms;
    if (node.callFrame.url.startsWith('wasm://')) share.wasmMs += ms;
    else if (node.callFrame.url.endsWith('/backends/memory.js')) share.backendMs += ms;
  }
  return share;
}

const ratio = (value: number) => value.toFixed(3);

/** The medians of one workload's rounds, as printed. */
export interface WorkloadSummary { mbPerSecond: Map<string, number>; qemuMbPerSecond: number | undefined }

/** Label of a configuration in tables and charts. */
export function configKey(config: Config): string {
  const io = config.sync === true ? ' (sync I/O)' : config.sync === false ? ' (thread-pool I/O)' : '';
  const window = config.writebackDelayMs === undefined ? '' : config.writebackDelayMs === false ? ', no loss window' : `, loss window ${config.writebackDelayMs} ms`;
  return `${config.format === 'raw' ? 'RawImage' : 'qcow2'} ${config.merge}${io}${window}`;
}

/**
 * Runs `workload` for every config, `rounds` times interleaved (after an untimed warm-up of each:
 * the JIT needs a few thousand batches), plus qemu-img bench when `withQemu` and the workload has
 * a QEMU pattern; prints the table of medians and returns them. The last config is the RawImage
 * baseline of the "vs RawImage" column.
 */
export async function runWorkload(dir: string, workload: Workload, configs: readonly Config[], rounds: number, withQemu: boolean,
                                  streamBytes: number): Promise<{ summary: WorkloadSummary; runs: Map<string, Run[]>; qemuRuns: QemuRun[] }> {
  const warmUp: Workload = { ...workload, requests: workload.requests.slice(0, 8192) };
  for (const config of configs) await runOnce(dir, config, warmUp);
  const runs = new Map<string, Run[]>();
  const qemuRuns: QemuRun[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const config of configs) {
      const key = configKey(config);
      runs.set(key, [...(runs.get(key) ?? []), await runOnce(dir, config, workload)]);
    }
    if (withQemu && workload.qemuOffset !== undefined) qemuRuns.push(qemuBench(dir, workload.overBacking, workload.qemuOffset, streamBytes));
  }
  const medianOf = (key: string, pick: (run: Run) => number) => median(runs.get(key)!.map(pick));
  const mbPerSecond = new Map(configs.map((c) => [configKey(c), medianOf(configKey(c), (r) => r.guestBytes / r.writeSeconds / 1e6)]));
  const qemuMb = qemuRuns.length > 0 ? median(qemuRuns.map((q) => q.mbPerSecond)) : undefined;
  const rawMb = mbPerSecond.get(configKey(configs[configs.length - 1]))!;
  console.log(`\n${workload.title}: ${workload.requests.length} requests`);
  const rows = configs.map((config) => {
    const key = configKey(config);
    const mb = mbPerSecond.get(key)!;
    return [key, ratio(medianOf(key, (r) => r.hostWriteBytes / r.guestBytes)), ratio(medianOf(key, (r) => r.backingReadBytes / r.guestBytes)),
      medianOf(key, (r) => r.hostWriteCalls / r.requests).toFixed(4), mb.toFixed(0),
      medianOf(key, (r) => r.guestBytes / (r.writeSeconds + r.flushSeconds) / 1e6).toFixed(0),
      `${(mb / rawMb).toFixed(2)}x`, ...(qemuMb ? [`${(mb / qemuMb).toFixed(2)}x`] : [])];
  });
  const qemuRow = qemuMb ? [['qemu-img bench (QEMU 7.2)', ratio(median(qemuRuns.map((q) => q.writtenPerGuest))),
    ratio(median(qemuRuns.map((q) => q.readPerGuest))), median(qemuRuns.map((q) => q.writesPerRequest)).toFixed(4), qemuMb.toFixed(0), 'n/a', `${(qemuMb / rawMb).toFixed(2)}x`, '1.00x']] : [];
  printTable(['image, merge', 'host bytes written/guest byte', 'backing bytes read/guest byte', 'host writes/request', 'MB/s',
    'MB/s incl. flush', 'vs RawImage', ...(qemuMb ? ['vs qemu-img bench'] : [])], [...rows, ...qemuRow]);
  return { summary: { mbPerSecond, qemuMbPerSecond: qemuMb }, runs, qemuRuns };
}
