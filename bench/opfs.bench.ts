// SPDX-License-Identifier: MIT
// The OPFS benchmark (`node dist/bench/opfs.bench.js`): the seed workload, 256 MiB of sequential
// 4 KiB writes from byte 512 into a fresh 1 GiB qcow2 image with 64 KiB clusters, 32 requests
// per multiwrite batch, on the sync-access OPFS backend in a worker of headless Chromium, merging
// off against full, medians of 3 interleaved rounds. Also measures plain OPFS writes of 4 KiB,
// 128 KiB and 1 MiB: the sizes merge off and merge full issue, and the cost merging avoids. Chromium runs on a profile directory on disk (OPFS of
// a profile-less context lives in memory). QCOW2_WASM_OPFS_BENCH_MIB scales the workload down.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Page } from 'playwright';
import { createServer } from 'vite';
import type { BenchRequest, Qcow2Run } from './browser/opfs-worker.js';
import { machineLine, median, printResult, printTable } from './harness.js';
import { CHROMIUM, CHROMIUM_ARGS, packageRootWith } from './chromium.js';

const MIB = 1024 * 1024;
const ROUNDS = 3;

const mbPerSecond = (bytes: number, seconds: number): number => bytes / MIB / seconds;

async function main(): Promise<void> {
  const totalMiB = Number(process.env.QCOW2_WASM_OPFS_BENCH_MIB ?? 256);
  if (!Number.isInteger(totalMiB) || totalMiB < 1 || totalMiB > 1000) throw new Error('QCOW2_WASM_OPFS_BENCH_MIB must be 1..1000');
  const totalBytes = totalMiB * MIB;
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (apt-get install chromium, or set CHROMIUM_PATH)`);

  const scratch = mkdtempSync(join(tmpdir(), 'qcow2-wasm-opfs-bench-'));
  const server = await createServer({
    root: packageRootWith(join('bench', 'browser', 'opfs.html')),
    configFile: false,
    cacheDir: join(scratch, 'vite-cache'),
    logLevel: 'error',
    server: { host: '127.0.0.1', port: 0, hmr: false },
    optimizeDeps: { noDiscovery: true, include: ['@assemblyscript/loader', 'fflate', 'fzstd'] },
  });
  await server.listen();
  const context = await chromium.launchPersistentContext(join(scratch, 'profile'), { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  try {
    const address = server.httpServer!.address();
    if (address === null || typeof address === 'string') throw new Error('the bench server has no port');
    const page: Page = context.pages()[0] ?? (await context.newPage());
    await page.goto(`http://127.0.0.1:${address.port}/bench/browser/opfs.html`);
    await page.waitForFunction(() => 'opfsBench' in window, undefined, { timeout: 120_000 });
    const run = <T>(request: BenchRequest): Promise<T> =>
      page.evaluate((r) => (window as unknown as { opfsBench: { run(r: BenchRequest): Promise<unknown> } }).opfsBench.run(r), request) as Promise<T>;
    const version = context.browser()?.version() ?? (await page.evaluate(() => navigator.userAgent));

    console.log(`OPFS (sync access handle in a dedicated worker), headless Chromium ${version}`);
    console.log(machineLine());
    console.log(`seed workload: ${totalMiB} MiB of sequential 4 KiB writes from byte 512, fresh 1 GiB qcow2, 64 KiB clusters, 32 requests per batch; medians of ${ROUNDS} interleaved rounds\n`);

    const runs: Record<'off' | 'full', Qcow2Run[]> = { off: [], full: [] };
    const plainSizes = { '4 KiB': 4096, '128 KiB': 128 * 1024, '1 MiB': MIB } as const;
    const plain: Record<keyof typeof plainSizes, number[]> = { '4 KiB': [], '128 KiB': [], '1 MiB': [] };
    const plainBytes = Math.min(totalBytes, 64 * MIB);
    for (let round = 0; round < ROUNDS; round++) {
      for (const merge of ['off', 'full'] as const) {
        const result = await run<Qcow2Run>({ task: 'qcow2', merge, totalBytes });
        if (!result.verified) throw new Error(`merge ${merge}: the image did not read back what was written`);
        runs[merge].push(result);
        console.log(`  round ${round + 1}, merge ${merge}: ${mbPerSecond(totalBytes, result.seconds).toFixed(1)} MB/s`);
      }
      for (const [label, writeBytes] of Object.entries(plainSizes) as Array<[keyof typeof plainSizes, number]>) {
        plain[label].push(await run<number>({ task: 'plain', writeBytes, totalBytes: plainBytes }));
      }
    }

    const rows: string[][] = [];
    const summary: Record<string, unknown> = {};
    for (const merge of ['off', 'full'] as const) {
      const r = runs[merge];
      const seconds = median(r.map((x) => x.seconds));
      const speed = mbPerSecond(totalBytes, seconds);
      const last = r[r.length - 1]!;
      summary[merge] = { mbPerSecond: speed, seconds, hostWriteCalls: last.hostWriteCalls, guestWriteRequests: last.guestWriteRequests, cowBytes: last.cowBytes };
      rows.push([`qcow2, merge ${merge}`, (last.hostWriteCalls / last.guestWriteRequests).toFixed(4), (last.hostWriteBytes / totalBytes).toFixed(3),
        String(last.cowBytes), speed.toFixed(1), '']);
    }
    const ratio = (summary.full as { mbPerSecond: number }).mbPerSecond / (summary.off as { mbPerSecond: number }).mbPerSecond;
    rows[1]![5] = `${ratio.toFixed(1)}x`;
    rows[0]![5] = '1.0x';
    // Plain sequential OPFS writes of one size each: 4 KiB is what merge off issues, 128 KiB what
    // merge full issues for 32-request batches (its ceiling), 1 MiB for comparison.
    const plainSpeeds: Record<string, number> = {};
    for (const label of Object.keys(plainSizes) as Array<keyof typeof plainSizes>) {
      plainSpeeds[label] = mbPerSecond(plainBytes, median(plain[label]));
    }
    for (const label of Object.keys(plainSizes) as Array<keyof typeof plainSizes>) {
      const speed = plainSpeeds[label]!;
      rows.push([`plain OPFS, ${label} writes (${plainBytes / MIB} MiB)`, '', '', '', speed.toFixed(1),
        label === '4 KiB' ? '' : `${(speed / plainSpeeds['4 KiB']!).toFixed(1)}x vs 4 KiB`]);
    }
    console.log('');
    printTable(['workload', 'host writes / request', 'host bytes / guest byte', 'COW bytes', 'MB/s', 'vs off'], rows);
    printResult({ benchmark: 'opfs', chromium: version, machine: machineLine(), totalMiB, rounds: ROUNDS, ...summary,
      fullOverOff: ratio, plainMBps: plainSpeeds });
  } finally {
    await context.close();
    await server.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
