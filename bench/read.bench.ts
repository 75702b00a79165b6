// SPDX-License-Identifier: MIT
// qcow2 read benchmarks (the engine's read path against RawImage and qemu-img bench, same run):
// random 4 KiB and sequential 1 MiB reads over a fully written 1 GiB image; the wasm mapping's
// lookup rate with a warm and a cold L2 cache; and memory for a 1 TiB virtual image.
// Needs qemu-img to build the images. `--quick` shrinks everything for a smoke run.

import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Bench } from 'tinybench';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { RawImage } from '../bindings/raw/raw-image.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import type { BlockImage } from '../bindings/dispatch/image.js';
import { machineLine, median, printResult, printTable, withTempDir, makeRandom } from './harness.js';

const MIB = 1024 * 1024;
const quick = process.argv.includes('--quick');
const IMAGE_BYTES = quick ? 64 * MIB : 1024 * MIB;
const RANDOM_READS = quick ? 4096 : 65536;
const DEPTH = 32;
const ROUNDS = quick ? 1 : 3;

function run(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8' });
}

/** Random 4 KiB reads at depth 32 over the first `spanBytes` of the image. */
async function randomReads(image: BlockImage, spanBytes = image.virtualSize): Promise<number> {
  const random = makeRandom(1234);
  const blocks = spanBytes / 4096;
  const buffers = Array.from({ length: DEPTH }, () => new Uint8Array(4096));
  const started = performance.now();
  let issued = 0;
  const worker = async (slot: number) => {
    while (issued < RANDOM_READS) {
      issued++;
      await image.readInto((random() % blocks) * 4096, buffers[slot]);
    }
  };
  await Promise.all(buffers.map((_, slot) => worker(slot)));
  return (RANDOM_READS * 4096) / ((performance.now() - started) / 1000) / 1e6;
}

/** Sequential 1 MiB reads, 4 in flight, over the whole image. */
async function sequentialReads(image: BlockImage): Promise<number> {
  const buffers = Array.from({ length: 4 }, () => new Uint8Array(MIB));
  const started = performance.now();
  let next = 0;
  const worker = async (slot: number) => {
    while (next < image.virtualSize) {
      const offset = next;
      next += MIB;
      await image.readInto(offset, buffers[slot]);
    }
  };
  await Promise.all(buffers.map((_, slot) => worker(slot)));
  return image.virtualSize / ((performance.now() - started) / 1000) / 1e6;
}

/** qemu-img bench read MB/s (writeback cache, thread pool) for 4 KiB "random" or 1 MiB sequential. */
function qemuBenchRead(path: string, format: string, pattern: 'random' | 'sequential'): number {
  const args = pattern === 'random'
    ? ['bench', '-f', format, '-c', String(RANDOM_READS), '-d', String(DEPTH), '-s', '4096', '-S', String(4096 * 100003), '-t', 'writeback', '-i', 'threads', path]
    : ['bench', '-f', format, '-c', String(IMAGE_BYTES / MIB), '-d', '4', '-s', String(MIB), '-t', 'writeback', '-i', 'threads', path];
  const output = run('qemu-img', args);
  const seconds = Number(/Run completed in ([\d.]+) seconds/.exec(output)?.[1]);
  const bytes = pattern === 'random' ? RANDOM_READS * 4096 : IMAGE_BYTES;
  return bytes / seconds / 1e6;
}

async function main(): Promise<void> {
  console.log(`qcow2 read benchmarks${quick ? ' (quick)' : ''}: ${IMAGE_BYTES / MIB} MiB image, 64 KiB clusters, fully written`);
  console.log(machineLine());
  console.log(run('qemu-img', ['--version']).split('\n')[0]);
  await withTempDir('qcow2-wasm-read-bench-', async (dir) => {
    const qcow2Path = join(dir, 'full.qcow2');
    const rawPath = join(dir, 'full.raw');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2Path, String(IMAGE_BYTES)]);
    run('qemu-img', ['bench', '-w', '-f', 'qcow2', '-c', String(IMAGE_BYTES / MIB), '-d', '8', '-s', String(MIB), '--pattern=0x5a', '-t', 'writeback', qcow2Path]);
    run('qemu-img', ['convert', '-O', 'raw', qcow2Path, rawPath]);

    // 1. Throughput, rounds interleaved, medians.
    const results: Record<string, number[]> = {};
    const add = (key: string, value: number) => (results[key] ??= []).push(value);
    for (let round = 0; round < ROUNDS; round++) {
      const qcow2 = await Qcow2Image.open(await openNodeBackend(qcow2Path));
      const raw = await RawImage.open(await openNodeBackend(rawPath), { readOnly: true });
      add('qcow2 random 4K', await randomReads(qcow2));
      const qcow2Sync = await Qcow2Image.open(await openNodeBackend(qcow2Path, { sync: true }));
      add('qcow2 sync random 4K', await randomReads(qcow2Sync));
      add('qcow2 sync sequential 1M', await sequentialReads(qcow2Sync));
      await qcow2Sync.close();
      add('raw random 4K', await randomReads(raw));
      add('qemu qcow2 random 4K', qemuBenchRead(qcow2Path, 'qcow2', 'random'));
      add('qcow2 sequential 1M', await sequentialReads(qcow2));
      add('raw sequential 1M', await sequentialReads(raw));
      add('qemu qcow2 sequential 1M', qemuBenchRead(qcow2Path, 'qcow2', 'sequential'));
      await qcow2.close();
      await raw.close();
    }
    const m = (key: string) => median(results[key]);
    printTable(['pattern', 'Qcow2Image MB/s', 'RawImage MB/s', 'qcow2/raw', 'qemu-img bench MB/s', 'ours/qemu'], [
      ['random 4 KiB, depth 32', m('qcow2 random 4K').toFixed(0), m('raw random 4K').toFixed(0),
        (m('qcow2 random 4K') / m('raw random 4K')).toFixed(2), m('qemu qcow2 random 4K').toFixed(0),
        (m('qcow2 random 4K') / m('qemu qcow2 random 4K')).toFixed(2)],
      ['sequential 1 MiB, depth 4', m('qcow2 sequential 1M').toFixed(0), m('raw sequential 1M').toFixed(0),
        (m('qcow2 sequential 1M') / m('raw sequential 1M')).toFixed(2), m('qemu qcow2 sequential 1M').toFixed(0),
        (m('qcow2 sequential 1M') / m('qemu qcow2 sequential 1M')).toFixed(2)],
      ['random 4 KiB, sync Node backend', m('qcow2 sync random 4K').toFixed(0), m('raw random 4K').toFixed(0),
        (m('qcow2 sync random 4K') / m('raw random 4K')).toFixed(2), m('qemu qcow2 random 4K').toFixed(0),
        (m('qcow2 sync random 4K') / m('qemu qcow2 random 4K')).toFixed(2)],
      ['sequential 1 MiB, sync Node backend', m('qcow2 sync sequential 1M').toFixed(0), m('raw sequential 1M').toFixed(0),
        (m('qcow2 sync sequential 1M') / m('raw sequential 1M')).toFixed(2), m('qemu qcow2 sequential 1M').toFixed(0),
        (m('qcow2 sync sequential 1M') / m('qemu qcow2 sequential 1M')).toFixed(2)],
    ]);

    // 2. Mapping lookups per second, warm cache (all slices cached) and cold (the smallest cache,
    //    4 slices mapping 128 MiB, over random clusters of the whole image: most lookups load a
    //    slice; in --quick mode the image fits that cache, so both are warm).
    const warm = await Qcow2Image.open(await openNodeBackend(qcow2Path));
    const cold = await Qcow2Image.open(await openNodeBackend(qcow2Path), { cacheBytes: 0 });
    const random = makeRandom(99);
    const clusters = IMAGE_BYTES / 65536;
    const target = new Uint8Array(512);
    const bench = new Bench({ time: quick ? 200 : 1000, warmupTime: 100 });
    // The wasm mapping alone (the image's private core, reached for measurement only).
    const coreOf = (image: Qcow2Image) => (image as unknown as { core: { map(o: number, l: number, b: unknown): Promise<unknown> }; backend: unknown });
    bench.add('map 512 B, warm L2 cache', async () => {
      const image = coreOf(warm);
      await image.core.map((random() % clusters) * 65536, 512, image.backend);
    });
    bench.add('map 512 B, cold L2 cache (slice load per lookup)', async () => {
      const image = coreOf(cold);
      await image.core.map((random() % clusters) * 65536, 512, image.backend);
    });
    bench.add('read 512 B through Qcow2Image, warm', async () => { await warm.readInto((random() % clusters) * 65536, target); });
    await bench.run();
    printTable(['operation', 'ops/s', 'mean µs'], bench.tasks.map((task) => {
      const result = task.result as { state?: string; error?: unknown; throughput?: { mean: number }; latency?: { mean: number } } | undefined;
      if (!result?.throughput) throw new Error(`benchmark '${task.name}' did not complete: ${String(result?.error ?? result?.state)}`);
      return [task.name, result.throughput.mean.toFixed(0), ((result.latency?.mean ?? 0) * 1000).toFixed(2)];
    }));
    await warm.close();
    await cold.close();

    // 3. Memory: a 1 TiB virtual image, random reads over its first 1 GiB with the default cache.
    const hugePath = join(dir, 'huge.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', hugePath, '1T']);
    run('qemu-img', ['bench', '-w', '-f', 'qcow2', '-c', String(IMAGE_BYTES / MIB), '-d', '8', '-s', String(MIB), '--pattern=0x33', '-t', 'writeback', hugePath]);
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    const huge = await Qcow2Image.open(await openNodeBackend(hugePath));
    const hugeMbPerSecond = await randomReads(huge, IMAGE_BYTES);
    const rssAfter = process.memoryUsage().rss;
    const wasmBytes = huge.coreMemoryBytes();
    await huge.close();
    printTable(['1 TiB virtual image, default cache', 'value'], [
      ['random 4 KiB reads over 1 GiB, MB/s', hugeMbPerSecond.toFixed(0)],
      ['wasm memory of the image, MiB', (wasmBytes / MIB).toFixed(2)],
      ['process RSS growth, MiB', ((rssAfter - rssBefore) / MIB).toFixed(1)],
    ]);
    printResult({
      bench: 'read', imageBytes: IMAGE_BYTES, rounds: ROUNDS, medians: Object.fromEntries(Object.keys(results).map((k) => [k, m(k)])),
      lookups: bench.tasks.map((t) => ({ name: t.name, opsPerSecond: (t.result as { throughput?: { mean: number } })?.throughput?.mean })),
      hugeImage: { wasmBytes, rssGrowthBytes: rssAfter - rssBefore, randomMbPerSecond: hugeMbPerSecond },
    });
  });
}

await main();
