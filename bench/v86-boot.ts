// SPDX-License-Identifier: MIT
// The v86 boot benchmark (`npm run bench:v86-boot`): the Linux guest of scripts/v86-linux booted
// by v86 in headless Chromium with its root file system on a disk served over HTTP by a local
// server, in each layout:
//   v86-parts    v86's own loader over the raw disk in 1 MiB parts (fixed_chunk_size, use_parts)
//   qcow2-range  one qcow2 file with compressed clusters (qemu-img convert -c), read with Range
//                requests through openHttpBackend (its read-ahead on), under a qcow2 overlay in memory
//                (toV86Disk)
//   qcow2-parts  the same qcow2 file in 1 MiB parts with a manifest (writeSplitImage), read with
//                plain GETs through openSplitBackend, under a qcow2 overlay in memory
//   memory       the raw disk fetched whole before the clock starts and given to v86 as an
//                ArrayBuffer: no read waits, so it is the floor for any disk (a reference, not a
//                way to serve one)
// Each boot runs in a Chromium started for it alone (a fresh profile, no driver attached: the
// page reads its request from the URL and POSTs its result back), so no boot shares a browser
// with another and no DevTools session adds work to the one measured.
// Measured per boot: the time from the V86 constructor to the guest's "QW READY" line (the guest
// mounts the disk as its root, runs programs and loads modules from it and reads the module tree),
// and of that the time after its "QW DISK" line (before it the kernel boots from the initramfs and
// reads no more than the disk's partition table); the time the guest waited for its disk reads
// (from v86's IDE events), the disk bytes and requests the server sent, and the CPU time the
// browser's processes used (Linux: from /proc).
// QCOW2_WASM_V86_BOOT_ROUNDS (default 5) interleaved rounds, the layouts' order rotating from
// round to round; per layout the medians, and against v86's parts both the ratio of the medians
// and the median of each round's ratio, for the whole boot and for the time after DISK (boots of
// one round ran next to each other, so the machine's drift between rounds cancels); results in
// bench/results/v86-boot.json.
// For investigating: QCOW2_WASM_V86_BOOT_LAYOUTS (comma-separated names) boots only those, and
// writes no results. QCOW2_WASM_V86_BOOT_COMPRESSION (zlib, the default, or zstd) is qemu-img's
// compression_type. QCOW2_WASM_V86_BOOT_LINK_MBITS (megabits per second) sends the disk's bytes
// over a link of that rate, shared fairly by the responses in flight, as a user's connection to
// a remote host would (the memory layout's preload excepted: it happens before the clock); its
// results go to bench/results/v86-boot-link-<rate>mbit.json.
// Needs scripts/v86-linux/download.sh and build.sh to have run, Debian's chromium and seabios,
// qemu-img and mke2fs.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createServer } from 'vite';
import type { CompressionType } from '../bindings/qcow2/decompress.js';
import type { BootLayout, BootRequest, BootResult } from './browser/v86-boot-page.js';
import { bootFileServer, PRELOAD_PATH, type BootServer } from './v86-boot-server.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import { SPLIT_MANIFEST_NAME } from '../bindings/backends/split-manifest.js';
import { writeSplitImage } from '../bindings/tools/split-writer.js';
import { machineLine, median, printResult, printTable, runProvenance } from './harness.js';
import { CHROMIUM, CHROMIUM_ARGS, packageRootWith } from './chromium.js';

const MiB = 1024 * 1024;
const DISK_BYTES = 128 * MiB;
const PART_BYTES = 1 * MiB;
const BOOT_TIMEOUT_MS = 600_000;
/** The page's loading and opening on top of the boot's own limit. */
const BOOT_PAGE_TIMEOUT_MS = BOOT_TIMEOUT_MS + 120_000;
/** Linux's USER_HZ, the unit of utime and stime in /proc/<pid>/stat. */
const CLOCK_TICKS_PER_SECOND = 100;
const BIOS_PATH = process.env.SEABIOS_PATH ?? '/usr/share/seabios/bios.bin';

type LayoutName = 'v86-parts' | 'qcow2-range' | 'qcow2-parts' | 'memory';
const LAYOUTS: readonly LayoutName[] = ['v86-parts', 'qcow2-range', 'qcow2-parts', 'memory'];

interface BootRun extends BootResult {
  diskBytes: number;
  diskRequests: number;
  /** CPU seconds the browser's processes used from start to the result (undefined without /proc). */
  browserCpuSeconds: number | undefined;
}

/** Runs a host tool and returns its stdout; throws with its output when it fails. */
function tool(command: string, args: readonly string[]): string {
  const result = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 * MiB });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr ?? ''}${result.error ? String(result.error) : ''}`);
  return result.stdout;
}

/**
 * CPU seconds (user + system) used so far by process `rootPid` and the processes below it that are
 * still running (a child that has ended no longer counts), from /proc; undefined where there is
 * no /proc.
 */
function processTreeCpuSeconds(rootPid: number): number | undefined {
  if (!existsSync('/proc/self/stat')) return undefined;
  const ticks = new Map<number, { parent: number; ticks: number }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // After "pid (comm) ": state ppid ... utime (14th field) stime (15th).
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks.set(Number(entry), { parent: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // The process ended while we looked.
    }
  }
  const inTree = (pid: number): boolean => {
    for (let at: number | undefined = pid; at !== undefined && at > 1; at = ticks.get(at)?.parent) if (at === rootPid) return true;
    return false;
  };
  let total = 0;
  for (const [pid, entry] of ticks) if (inTree(pid)) total += entry.ticks;
  return total / CLOCK_TICKS_PER_SECOND;
}

/** Boots `request` in a Chromium of its own and returns the page's result and the browser's CPU time. */
async function bootInFreshBrowser(server: BootServer, pageUrl: string, request: BootRequest, scratch: string): Promise<{ result: BootResult; browserCpuSeconds: number | undefined }> {
  const profile = mkdtempSync(join(scratch, 'chromium-profile-'));
  const outcome = server.nextOutcome();
  const child = spawn(CHROMIUM, [...CHROMIUM_ARGS, '--headless', `--user-data-dir=${profile}`, `${pageUrl}#${encodeURIComponent(JSON.stringify(request))}`],
    { detached: true, stdio: 'ignore' });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  let timer: NodeJS.Timeout | undefined;
  try {
    const settled = await Promise.race([
      outcome,
      exited.then((code) => { throw new Error(`Chromium exited (code ${code}) before the boot reported`); }),
      new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no boot result within ${BOOT_PAGE_TIMEOUT_MS / 1000} s`)), BOOT_PAGE_TIMEOUT_MS); }),
    ]);
    const browserCpuSeconds = processTreeCpuSeconds(child.pid!);
    if ('error' in settled) throw new Error(`the boot failed in the page: ${settled.error}`);
    return { result: settled.result, browserCpuSeconds };
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(-child.pid!, 'SIGKILL');
      await exited;
    }
    rmSync(profile, { recursive: true, force: true });
  }
}

/** The guest build's directory under `root`; throws saying how to build it when a file is missing. */
function requireGuestBuild(root: string): string {
  const guestDir = join(root, 'build', 'v86-linux');
  for (const file of ['bzImage', 'initramfs.cpio', 'guest.json', 'rootfs']) {
    if (!existsSync(join(guestDir, file))) throw new Error(`${join(guestDir, file)} not found: run scripts/v86-linux/download.sh and scripts/v86-linux/build.sh first`);
  }
  return guestDir;
}

/** The disk in every layout, and the other files a boot fetches, keyed by their URL path. */
async function prepareFiles(root: string, scratch: string, compressionType: CompressionType): Promise<{ files: Map<string, Uint8Array>; qcow2Bytes: number }> {
  const guestDir = join(root, 'build', 'v86-linux');
  if (!existsSync(BIOS_PATH)) throw new Error(`${BIOS_PATH} not found (apt-get install seabios)`);
  const rawPath = join(scratch, 'disk.raw');
  const qcow2Path = join(scratch, 'disk.qcow2');
  tool('mke2fs', ['-q', '-F', '-t', 'ext4', '-E', 'root_owner=0:0', '-d', join(guestDir, 'rootfs'), rawPath, `${DISK_BYTES / 1024}`]);
  tool('qemu-img', ['convert', '-c', '-o', `compression_type=${compressionType}`, '-f', 'raw', '-O', 'qcow2', rawPath, qcow2Path]);

  const files = new Map<string, Uint8Array>();
  const v86Build = dirname(createRequire(import.meta.url).resolve('v86'));
  files.set('assets/v86.wasm', readFileSync(join(v86Build, 'v86.wasm')));
  files.set('assets/bios.bin', readFileSync(BIOS_PATH));
  files.set('assets/bzImage', readFileSync(join(guestDir, 'bzImage')));
  files.set('assets/initramfs.cpio', readFileSync(join(guestDir, 'initramfs.cpio')));
  const raw = readFileSync(rawPath);
  files.set(PRELOAD_PATH, raw);
  for (let start = 0; start < raw.byteLength; start += PART_BYTES) {
    files.set(`disk/parts/disk-${start}-${start + PART_BYTES}.img`, raw.subarray(start, start + PART_BYTES));
  }
  const qcow2 = readFileSync(qcow2Path);
  files.set('disk/disk.qcow2', qcow2);
  const qcow2Backend = await openNodeBackend(qcow2Path, { writable: false });
  try {
    await writeSplitImage(qcow2Backend, async (name, bytes) => { files.set(`disk/qcow2-parts/${name}`, bytes); }, { partBytes: PART_BYTES });
  } finally {
    await qcow2Backend.close();
  }
  return { files, qcow2Bytes: qcow2.byteLength };
}

function layoutFor(name: LayoutName, origin: string): BootLayout {
  switch (name) {
    case 'v86-parts':
      return { kind: 'v86-parts', url: `${origin}/__v86boot/disk/parts/disk.img`, sizeBytes: DISK_BYTES, chunkBytes: PART_BYTES };
    case 'qcow2-range':
      return { kind: 'qcow2-range', url: `${origin}/__v86boot/disk/disk.qcow2`, virtualBytes: DISK_BYTES };
    case 'qcow2-parts':
      return { kind: 'qcow2-parts', url: `${origin}/__v86boot/disk/qcow2-parts/${SPLIT_MANIFEST_NAME}`, virtualBytes: DISK_BYTES };
    case 'memory':
      return { kind: 'memory', url: `${origin}/__v86boot/${PRELOAD_PATH}` };
  }
}

/** The time of `run` after the guest's DISK line. */
const afterDiskMs = (run: BootResult): number => run.readyMs - run.diskFoundMs;

/** The median over rounds of each round's ratio of `name`'s time (`timeMs` of a boot) to v86's parts' in that round. */
function medianRoundRatio(runs: Record<LayoutName, BootRun[]>, name: LayoutName, timeMs: (run: BootResult) => number): number {
  return median(runs[name].map((run, round) => timeMs(run) / timeMs(runs['v86-parts'][round])));
}

async function main(): Promise<void> {
  const rounds = Number(process.env.QCOW2_WASM_V86_BOOT_ROUNDS ?? 5);
  const layouts = process.env.QCOW2_WASM_V86_BOOT_LAYOUTS?.split(',') ?? LAYOUTS;
  const unknown = layouts.filter((name) => !(LAYOUTS as readonly string[]).includes(name));
  if (unknown.length > 0) throw new Error(`QCOW2_WASM_V86_BOOT_LAYOUTS: no layout ${unknown.join(', ')} (layouts: ${LAYOUTS.join(', ')})`);
  const compressionType = process.env.QCOW2_WASM_V86_BOOT_COMPRESSION ?? 'zlib';
  if (compressionType !== 'zlib' && compressionType !== 'zstd') throw new Error('QCOW2_WASM_V86_BOOT_COMPRESSION must be zlib or zstd');
  const partial = layouts.length < LAYOUTS.length;
  const linkMbits = process.env.QCOW2_WASM_V86_BOOT_LINK_MBITS === undefined ? undefined : Number(process.env.QCOW2_WASM_V86_BOOT_LINK_MBITS);
  if (linkMbits !== undefined && !(linkMbits > 0)) throw new Error('QCOW2_WASM_V86_BOOT_LINK_MBITS must be a positive number (megabits per second)');
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) throw new Error('QCOW2_WASM_V86_BOOT_ROUNDS must be 1..20');
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (apt-get install chromium, or set CHROMIUM_PATH)`);
  const root = packageRootWith(join('bench', 'browser', 'v86-boot.html'));
  const guest = JSON.parse(readFileSync(join(requireGuestBuild(root), 'guest.json'), 'utf8')) as { kernelRelease: string; kernelArgs: string; packages: string[] };
  const scratch = mkdtempSync(join(tmpdir(), 'qcow2-wasm-v86-boot-'));
  try {
    const { files, qcow2Bytes } = await prepareFiles(root, scratch, compressionType);
    mkdirSync(join(scratch, 'vite-cache'));
    const bootServer = bootFileServer(files, linkMbits === undefined ? undefined : (linkMbits * 1e6) / 8);
    const server = await createServer({
      root,
      configFile: false,
      cacheDir: join(scratch, 'vite-cache'),
      logLevel: 'error',
      plugins: [bootServer.plugin],
      server: { host: '127.0.0.1', port: 0, hmr: false },
      optimizeDeps: { noDiscovery: true, include: ['@assemblyscript/loader', 'fflate', 'fzstd', 'v86', 'zstddec'] },
    });
    await server.listen();
    try {
      const address = server.httpServer!.address();
      if (address === null || typeof address === 'string') throw new Error('the bench server has no port');
      const origin = `http://127.0.0.1:${address.port}`;
      const chromiumVersion = tool(CHROMIUM, ['--version']).trim();
      const qemuVersion = tool('qemu-img', ['--version']).split('\n')[0];
      const v86Version = (JSON.parse(readFileSync(join(dirname(createRequire(import.meta.url).resolve('v86')), '..', 'package.json'), 'utf8')) as { version: string }).version;
      console.log(`v86 boot: Linux ${guest.kernelRelease} guest, root file system on a ${DISK_BYTES / MiB} MiB ext4 disk over HTTP; headless ${chromiumVersion}, v86 ${v86Version}, ${qemuVersion}`);
      console.log(machineLine());
      console.log(`disk: ${(statSync(join(scratch, 'disk.raw')).size / MiB).toFixed(0)} MiB raw; qcow2 with ${compressionType} compressed clusters ${(qcow2Bytes / MiB).toFixed(1)} MiB; parts of ${PART_BYTES / MiB} MiB; ${rounds} interleaved rounds; ${linkMbits === undefined ? 'no link limit' : `disk bytes over a shared ${linkMbits} Mbit/s link`}\n`);

      const runs: Record<LayoutName, BootRun[]> = { 'v86-parts': [], 'qcow2-range': [], 'qcow2-parts': [], memory: [] };
      for (let round = 0; round < rounds; round++) {
        for (let i = 0; i < layouts.length; i++) {
          const name = layouts[(round + i) % layouts.length] as LayoutName;
          const request: BootRequest = {
            assets: `${origin}/__v86boot/assets/`,
            cmdline: `${guest.kernelArgs} qw.mode=rootfs`,
            layout: layoutFor(name, origin),
            timeoutMs: BOOT_TIMEOUT_MS,
          };
          bootServer.takeStats();
          const { result, browserCpuSeconds } = await bootInFreshBrowser(bootServer, `${origin}/bench/browser/v86-boot.html`, request, scratch);
          const stats = bootServer.takeStats();
          runs[name].push({ ...result, ...stats, browserCpuSeconds });
          const r = result.diskReads;
          const reads = `; guest reads: ${r.count} (${r.answeredAtOnce} at once), ${(r.bytes / MiB).toFixed(1)} MiB, waited ${(r.waitMs / 1000).toFixed(2)} s in all, at most ${r.maxWaitMs.toFixed(0)} ms`;
          const cpu = browserCpuSeconds === undefined ? '' : `; browser CPU ${browserCpuSeconds.toFixed(1)} s`;
          console.log(`  round ${round + 1}, ${name}: ready in ${(result.readyMs / 1000).toFixed(1)} s (${(afterDiskMs(result) / 1000).toFixed(1)} s after DISK), ${(stats.diskBytes / MiB).toFixed(1)} MiB in ${stats.diskRequests} requests (${result.ready})${reads}${cpu}`);
        }
      }

      if (partial) {
        console.log('\n(only some layouts: no results written)');
        return;
      }
      const cpuSeconds = (name: LayoutName): number | undefined => {
        const measured = runs[name].map((run) => run.browserCpuSeconds);
        return measured.every((seconds) => seconds !== undefined) ? median(measured as number[]) : undefined;
      };
      const summary = Object.fromEntries(LAYOUTS.map((name) => [name, {
        readySeconds: median(runs[name].map((run) => run.readyMs)) / 1000,
        medianRoundRatio: medianRoundRatio(runs, name, (run) => run.readyMs),
        afterDiskSeconds: median(runs[name].map(afterDiskMs)) / 1000,
        afterDiskRoundRatio: medianRoundRatio(runs, name, afterDiskMs),
        readWaitSeconds: median(runs[name].map((run) => run.diskReads.waitMs)) / 1000,
        browserCpuSeconds: cpuSeconds(name),
        diskBytes: median(runs[name].map((run) => run.diskBytes)),
        diskRequests: median(runs[name].map((run) => run.diskRequests)),
      }])) as Record<LayoutName, { readySeconds: number; medianRoundRatio: number; afterDiskSeconds: number; afterDiskRoundRatio: number; readWaitSeconds: number; browserCpuSeconds: number | undefined; diskBytes: number; diskRequests: number }>;
      const baseline = summary['v86-parts'];
      console.log('');
      printTable(['layout', 'ready (s)', 'time vs v86-parts: medians', 'median of rounds', 'after DISK (s)', 'after DISK vs v86-parts: medians', 'median of rounds', 'guest waited (s)', 'browser CPU (s)', 'disk MiB', 'bytes vs v86-parts', 'requests'],
        LAYOUTS.map((name) => [name, summary[name].readySeconds.toFixed(1),
          `${(summary[name].readySeconds / baseline.readySeconds).toFixed(2)}x`,
          `${summary[name].medianRoundRatio.toFixed(2)}x`,
          summary[name].afterDiskSeconds.toFixed(1),
          `${(summary[name].afterDiskSeconds / baseline.afterDiskSeconds).toFixed(2)}x`,
          `${summary[name].afterDiskRoundRatio.toFixed(2)}x`,
          summary[name].readWaitSeconds.toFixed(2),
          summary[name].browserCpuSeconds?.toFixed(1) ?? '-',
          (summary[name].diskBytes / MiB).toFixed(1),
          `${(summary[name].diskBytes / baseline.diskBytes).toFixed(2)}x`,
          String(summary[name].diskRequests)]));
      const result = {
        bench: 'v86-boot',
        ...runProvenance(),
        versions: { chromium: chromiumVersion, v86: v86Version, qemuImg: qemuVersion, kernel: guest.kernelRelease, packages: guest.packages },
        diskBytes: DISK_BYTES,
        partBytes: PART_BYTES,
        qcow2FileBytes: qcow2Bytes,
        compressionType,
        linkMbits: linkMbits ?? null,
        rounds,
        summary,
        runs,
      };
      mkdirSync(join(root, 'bench', 'results'), { recursive: true });
      writeFileSync(join(root, 'bench', 'results', linkMbits === undefined ? 'v86-boot.json' : `v86-boot-link-${linkMbits}mbit.json`), `${JSON.stringify(result, null, 2)}\n`);
      printResult({ bench: 'v86-boot', summary });
    } finally {
      await server.close();
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
