// SPDX-License-Identifier: MIT
// The browser export memory benchmark (`npm run bench:export-memory`): the example page
// (examples/browser, built with Vite) in headless Chromium opens a 3 GiB qcow2 base served over
// HTTP with Range requests (512 MiB of data in it) under its OPFS overlay, the page writes 64 MiB
// into the overlay, and then:
//   export     the page's "Export disk" button: the flattened disk streamed as qcow2 into an OPFS
//              file and offered as a download (the path browsers without showSaveFilePicker take;
//              the picker path writes through the same stream backend)
//   raw-stream convertToRawStream of the same disk into a WritableStream that counts the bytes
//              (all 3 GiB, zeros included)
//   qcow2-discarded  the export's convertToQcow2 into a backend that drops the bytes: what
//              reading and converting cost without the file writes
//   qcow2-stream  convertToQcow2Stream (for sinks that cannot seek) into a WritableStream that
//              counts the bytes: as many as it announced, at least the export's
// Every phase uses the library's defaults, as the example's Export does. Each phase runs on a fresh page (a new browser context, so a new renderer process) that opened
// the base and wrote the overlay. Sampled every 200 ms, for the page's renderer (the largest one):
// its private memory (/proc RssAnon + RssShmem: what the tab allocated, file-backed pages of
// Chromium's own code left out), all its resident memory (VmRSS), and the page's JS heap (CDP
// Performance.getMetrics JSHeapUsedSize; array buffers live outside it). Goal: the tab's private
// memory grows by at most 256 MiB. QCOW2_WASM_EXPORT_GIB sets another disk size. The downloaded
// image is checked with qemu-img (check, and compare against the same writes made in Node over
// the same base). Timings are printed for information only. Results in
// bench/results/export-memory.json. Needs Debian's chromium and qemu-img.

import { spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { chromium, type CDPSession, type Page } from 'playwright';
import { build } from 'vite';
import { createImageFile } from '../bindings/node.js';
import type * as BrowserEntry from '../bindings/browser.js';
import { fillPattern, machineLine, printResult, printTable, runProvenance } from './harness.js';
import { CHROMIUM, CHROMIUM_ARGS, packageRootWith } from './chromium.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** The disk's size: 3 GiB, or QCOW2_WASM_EXPORT_GIB GiB (to see whether memory follows the size). */
const VIRTUAL_BYTES = Number(process.env.QCOW2_WASM_EXPORT_GIB ?? 3) * GiB;
/** The base holds DATA_RUN_BYTES of data at the start of every DATA_STRIDE_BYTES. */
const DATA_STRIDE_BYTES = 48 * MiB;
const DATA_RUN_BYTES = 8 * MiB;
/** What the page writes into the overlay: 1 MiB at 20 MiB into every 48 MiB, and 4 KiB inside base data. */
const OVERLAY_WRITES = Array.from({ length: VIRTUAL_BYTES / DATA_STRIDE_BYTES }, (_, i) => [
  { offset: i * DATA_STRIDE_BYTES + 20 * MiB, length: MiB, fill: (i * 37 + 11) & 0xff | 1 },
  { offset: i * DATA_STRIDE_BYTES + 4096 * (i + 1), length: 4096, fill: (i * 53 + 7) & 0xff | 1 },
]).flat();
const GOAL_GROWTH_BYTES = 256 * MiB;
const SAMPLE_MS = 200;
const PHASE_TIMEOUT_MS = 900_000;

const CONTENT_TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css' };

/** Runs a host tool; throws with its output when it exits non-zero. */
function tool(command: string, args: readonly string[]): string {
  const result = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 * MiB });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${result.status}): ${result.stdout ?? ''}${result.stderr ?? ''}${result.error ? String(result.error) : ''}`);
  return result.stdout;
}

/** The base image (3 GiB, data runs of the benchmark pattern) and the expected view: an overlay with the page's writes. */
async function makeImages(dir: string): Promise<void> {
  const base = await createImageFile(join(dir, 'base.qcow2'), { virtualSize: VIRTUAL_BYTES });
  const chunk = new Uint8Array(DATA_RUN_BYTES);
  for (let offset = 0; offset < VIRTUAL_BYTES; offset += DATA_STRIDE_BYTES) {
    fillPattern(chunk, offset);
    await base.write(offset, chunk);
  }
  await base.close();
  const expected = await createImageFile(join(dir, 'expected.qcow2'), { virtualSize: VIRTUAL_BYTES, backingFile: 'base.qcow2', backingFormat: 'qcow2' });
  for (const write of OVERLAY_WRITES) await expected.write(write.offset, new Uint8Array(write.length).fill(write.fill));
  await expected.close();
}

/** Serves the built page from `siteDir` and /bench/base.qcow2 from `imagePath` (HEAD, single-range GET, read from disk). */
function startServer(siteDir: string, imagePath: string): Promise<Server> {
  const imageBytes = statSync(imagePath).size;
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    if (path === '/bench/base.qcow2') {
      res.setHeader('Accept-Ranges', 'bytes');
      res.setHeader('Content-Type', 'application/octet-stream');
      const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
      const first = range ? Number(range[1]) : 0;
      const last = range && range[2] !== '' ? Math.min(Number(range[2]), imageBytes - 1) : imageBytes - 1;
      if (first > last) {
        res.writeHead(416, { 'Content-Range': `bytes */${imageBytes}` }).end();
        return;
      }
      res.writeHead(range ? 206 : 200, { 'Content-Length': last - first + 1, ...(range ? { 'Content-Range': `bytes ${first}-${last}/${imageBytes}` } : {}) });
      if (req.method === 'HEAD') res.end();
      else createReadStream(imagePath, { start: first, end: last }).pipe(res);
      return;
    }
    const file = normalize(join(siteDir, path === '/' ? 'index.html' : path));
    if (!file.startsWith(siteDir) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.setHeader('Content-Type', CONTENT_TYPES[extname(file)] ?? 'application/octet-stream');
    res.end(readFileSync(file));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** What the example page offers in the console (examples/browser/main.ts). */
interface ExampleWindow {
  qcow2Example: { library: typeof BrowserEntry; session: { overlay: BrowserEntry.Qcow2Image } | undefined };
}

/** Peak memory seen during one phase. */
interface PhaseMemory {
  seconds: number;
  /** The renderer's private anonymous memory (RssAnon + RssShmem): what the tab itself allocated. */
  rendererPrivateBaselineBytes: number;
  rendererPrivatePeakBytes: number;
  /** All its resident memory (VmRSS), file-backed pages of Chromium's own code included. */
  rendererRssBaselineBytes: number;
  rendererRssPeakBytes: number;
  jsHeapBaselineBytes: number;
  jsHeapPeakBytes: number;
}

/** Resident bytes of process `pid`: all (VmRSS) and private (RssAnon + RssShmem); zeros when it is gone. */
function residentBytes(pid: number): { rss: number; private: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(status)?.[1] ?? 0) * 1024;
    return { rss: field('VmRSS'), private: field('RssAnon') + field('RssShmem') };
  } catch {
    return { rss: 0, private: 0 };
  }
}

/** Samples the renderers' RSS and the page's JS heap while `phase` runs. */
async function measure(browserSession: CDPSession, pageSession: CDPSession, phase: () => Promise<void>): Promise<PhaseMemory> {
  /** The largest renderer's memory (the page's; a spare renderer stays small). */
  const renderer = async (): Promise<{ rss: number; private: number }> => {
    const { processInfo } = await browserSession.send('SystemInfo.getProcessInfo') as { processInfo: { type: string; id: number }[] };
    const all = processInfo.filter((p) => p.type === 'renderer').map((p) => residentBytes(p.id));
    return all.reduce((a, b) => (b.rss > a.rss ? b : a), { rss: 0, private: 0 });
  };
  const jsHeap = async (): Promise<number> => {
    const { metrics } = await pageSession.send('Performance.getMetrics');
    return metrics.find((m) => m.name === 'JSHeapUsedSize')?.value ?? 0;
  };
  const [before, heapBefore] = await Promise.all([renderer(), jsHeap()]);
  const memory: PhaseMemory = {
    seconds: 0,
    rendererPrivateBaselineBytes: before.private, rendererPrivatePeakBytes: before.private,
    rendererRssBaselineBytes: before.rss, rendererRssPeakBytes: before.rss,
    jsHeapBaselineBytes: heapBefore, jsHeapPeakBytes: heapBefore,
  };
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const [now, heap] = await Promise.all([renderer(), jsHeap()]);
      memory.rendererPrivatePeakBytes = Math.max(memory.rendererPrivatePeakBytes, now.private);
      memory.rendererRssPeakBytes = Math.max(memory.rendererRssPeakBytes, now.rss);
      memory.jsHeapPeakBytes = Math.max(memory.jsHeapPeakBytes, heap);
      await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
    }
  })();
  const started = performance.now();
  try {
    await phase();
  } finally {
    memory.seconds = (performance.now() - started) / 1000;
    sampling = false;
    await sampler;
  }
  return memory;
}

/** Waits until the page's status starts with `prefix`; throws with the status when the page reports an error. */
async function statusAfter(page: Page, prefix: string): Promise<string> {
  await page.waitForFunction((wanted) => document.body.dataset.state === 'error' || (document.getElementById('status')!.textContent ?? '').startsWith(wanted),
    prefix, { timeout: PHASE_TIMEOUT_MS, polling: 500 });
  const status = (await page.textContent('#status')) ?? '';
  if (!status.startsWith(prefix)) throw new Error(`the page reported: ${status}`);
  return status;
}

async function main(): Promise<void> {
  if (!Number.isInteger(VIRTUAL_BYTES / GiB) || VIRTUAL_BYTES < GiB || VIRTUAL_BYTES > 64 * GiB) throw new Error('QCOW2_WASM_EXPORT_GIB must be a whole number of GiB from 1 to 64');
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (apt-get install chromium, or set CHROMIUM_PATH)`);
  const root = packageRootWith(join('examples', 'browser', 'index.html'));
  if (!existsSync(join(root, 'dist', 'bindings', 'browser.js'))) throw new Error('dist/bindings/browser.js is missing: run `npm run build` first');
  const scratch = mkdtempSync(join(tmpdir(), 'qcow2-wasm-export-memory-'));
  try {
    const example = join(root, 'examples', 'browser');
    const siteDir = join(scratch, 'site');
    await build({ root: example, configFile: join(example, 'vite.config.ts'), logLevel: 'warn', build: { outDir: siteDir, emptyOutDir: true } });
    await makeImages(scratch);
    const server = await startServer(siteDir, join(scratch, 'base.qcow2'));
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    try {
      const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const qemuVersion = tool('qemu-img', ['--version']).split('\n')[0];
      const dataBytes = (VIRTUAL_BYTES / DATA_STRIDE_BYTES) * DATA_RUN_BYTES;
      const overlayBytes = OVERLAY_WRITES.reduce((sum, w) => sum + w.length, 0);
      console.log(`export memory: a ${VIRTUAL_BYTES / GiB} GiB qcow2 base over HTTP (${dataBytes / MiB} MiB of data, file ${(statSync(join(scratch, 'base.qcow2')).size / MiB).toFixed(0)} MiB) under an OPFS overlay holding ${(overlayBytes / MiB).toFixed(1)} MiB; headless Chromium ${browser.version()}, ${qemuVersion}`);
      console.log(machineLine());

      const browserSession = await browser.newBrowserCDPSession();
      /**
       * Runs `phase` on a fresh example page (a new browser context: its own renderer process and
       * OPFS) that opened the base under its overlay and wrote OVERLAY_WRITES, sampling its memory.
       */
      const onFreshPage = async (phase: (page: Page) => Promise<void>): Promise<PhaseMemory> => {
        const context = await browser.newContext({ acceptDownloads: true });
        try {
          const page = await context.newPage();
          page.on('pageerror', (error) => console.error(`[page error] ${error.message}`));
          // The download path (as in Firefox and Safari): no save dialog to answer in automation.
          await page.addInitScript(() => { Object.defineProperty(window, 'showSaveFilePicker', { value: undefined }); });
          await page.goto(`${origin}/index.html?image=/bench/base.qcow2`);
          await statusAfter(page, 'Created an overlay');
          await page.evaluate(async (writes) => {
            const { session } = (window as unknown as ExampleWindow).qcow2Example;
            for (const write of writes) await session!.overlay.write(write.offset, new Uint8Array(write.length).fill(write.fill));
            await session!.overlay.flush();
          }, OVERLAY_WRITES);
          const pageSession = await context.newCDPSession(page);
          await pageSession.send('Performance.enable');
          await pageSession.send('HeapProfiler.collectGarbage');
          return await measure(browserSession, pageSession, () => phase(page));
        } finally {
          await context.close();
        }
      };

      const flattenedPath = join(scratch, 'flattened.qcow2');
      let exportStatus = '';
      const exported = await onFreshPage(async (page) => {
        const download = page.waitForEvent('download', { timeout: PHASE_TIMEOUT_MS });
        await page.click('#export-flat');
        exportStatus = await statusAfter(page, 'Exported the disk');
        await (await download).saveAs(flattenedPath);
      });
      let streamedBytes = 0;
      const streamed = await onFreshPage(async (page) => {
        streamedBytes = await page.evaluate(async () => {
          const { library, session } = (window as unknown as ExampleWindow).qcow2Example;
          let bytes = 0;
          await library.convertToRawStream(session!.overlay, new WritableStream<Uint8Array>({ write(chunk) { bytes += chunk.byteLength; } }));
          return bytes;
        });
      });
      // Where the memory goes: the same qcow2 export into a backend that drops what it is given.
      let discardedFileBytes = 0;
      const discarded = await onFreshPage(async (page) => {
        discardedFileBytes = await page.evaluate(async () => {
          const { library, session } = (window as unknown as ExampleWindow).qcow2Example;
          let sizeBytes = 0;
          const nowhere: BrowserEntry.Backend = {
            kind: 'discard',
            capabilities: { writable: true, truncate: true, discard: false, durableFlush: false },
            limits: { maxIov: 1024, maxTransfer: 64 << 20 },
            getSize: async () => sizeBytes,
            preadv: async () => { throw new Error('write-only'); },
            pwritev: async (position, buffers) => { sizeBytes = Math.max(sizeBytes, position + buffers.reduce((n, b) => n + b.byteLength, 0)); },
            flush: async () => {},
            truncate: async (size) => { sizeBytes = size; },
            close: async () => {},
          };
          const result = await library.convertToQcow2(session!.overlay, nowhere, { create: { clusterSize: session!.overlay.header.clusterSize } });
          return result.qcow2!.fileBytes;
        });
      });

      // The same disk as qcow2 into a stream that only appends (convertToQcow2Stream), counting its bytes.
      let streamedQcow2 = { bytes: 0, announced: -1 };
      const qcow2Streamed = await onFreshPage(async (page) => {
        streamedQcow2 = await page.evaluate(async () => {
          const { library, session } = (window as unknown as ExampleWindow).qcow2Example;
          let bytes = 0;
          let announced = -1;
          await library.convertToQcow2Stream(session!.overlay, new WritableStream<Uint8Array>({ write(chunk) { bytes += chunk.byteLength; } }),
            { create: { clusterSize: session!.overlay.header.clusterSize }, onFileBytes: (fileBytes) => { announced = fileBytes; } });
          return { bytes, announced };
        });
      });

      // The download must be the disk the guest sees: base plus the page's writes.
      const check = spawnSync('qemu-img', ['check', flattenedPath], { encoding: 'utf8' });
      const compare = spawnSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', flattenedPath, join(scratch, 'expected.qcow2')], { encoding: 'utf8' });
      const verified = check.status === 0 && compare.status === 0 && streamedBytes === VIRTUAL_BYTES && discardedFileBytes === statSync(flattenedPath).size &&
        streamedQcow2.bytes === streamedQcow2.announced && streamedQcow2.bytes >= discardedFileBytes;
      console.log(`\n${exportStatus}`);
      console.log(`qemu-img check: exit ${check.status}; qemu-img compare with the expected view: ${compare.stdout.trim() || compare.stderr.trim()}; raw stream: ${streamedBytes} bytes of ${VIRTUAL_BYTES}; discarded export: ${discardedFileBytes} bytes; qcow2 stream: ${streamedQcow2.bytes} bytes (announced ${streamedQcow2.announced})\n`);

      const phases = { export: exported, 'raw-stream': streamed, 'qcow2-discarded': discarded, 'qcow2-stream': qcow2Streamed };
      const mib = (bytes: number) => (bytes / MiB).toFixed(0);
      printTable(['phase', 'seconds', 'private before (MiB)', 'peak', 'growth', 'RSS before (MiB)', 'peak', 'growth', 'JS heap before (MiB)', 'peak'],
        Object.entries(phases).map(([name, m]) => [name, m.seconds.toFixed(1),
          mib(m.rendererPrivateBaselineBytes), mib(m.rendererPrivatePeakBytes), mib(m.rendererPrivatePeakBytes - m.rendererPrivateBaselineBytes),
          mib(m.rendererRssBaselineBytes), mib(m.rendererRssPeakBytes), mib(m.rendererRssPeakBytes - m.rendererRssBaselineBytes),
          mib(m.jsHeapBaselineBytes), mib(m.jsHeapPeakBytes)]));
      const worstGrowth = Math.max(...Object.values(phases).map((m) => m.rendererPrivatePeakBytes - m.rendererPrivateBaselineBytes));
      console.log(`\ngoal: the tab's private memory grows by at most ${GOAL_GROWTH_BYTES / MiB} MiB while exporting: ${worstGrowth <= GOAL_GROWTH_BYTES ? 'met' : 'NOT met'} (largest growth ${mib(worstGrowth)} MiB); export ${verified ? 'verified' : 'NOT verified'}`);
      const result = {
        bench: 'export-memory',
        ...runProvenance(),
        versions: { chromium: browser.version(), qemuImg: qemuVersion },
        virtualBytes: VIRTUAL_BYTES,
        baseDataBytes: dataBytes,
        overlayWrittenBytes: overlayBytes,
        exportedFileBytes: statSync(flattenedPath).size,
        verified,
        goalGrowthBytes: GOAL_GROWTH_BYTES,
        phases,
      };
      mkdirSync(join(root, 'bench', 'results'), { recursive: true });
      writeFileSync(join(root, 'bench', 'results', 'export-memory.json'), `${JSON.stringify(result, null, 2)}\n`);
      printResult({ bench: 'export-memory', verified, worstGrowthBytes: worstGrowth, phases });
      if (!verified) process.exitCode = 1;
    } finally {
      await browser.close();
      await new Promise((resolve) => server.close(resolve));
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
