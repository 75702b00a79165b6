// SPDX-License-Identifier: MIT
// The browser example (examples/browser) and the library pieces it shows: allocationMap against
// known layouts; then the example page built with Vite's JS API (no configuration for the wasm),
// served by a local HTTP server and driven in headless Chromium: info, the drawn map read back
// pixel by pixel, writes landing in an OPFS overlay that survives a reload, the Export buttons
// (downloads, and a picked file; qemu-img checks and compares what they wrote), a picked file,
// Content-Security-Policy with and without 'wasm-unsafe-eval', init({ url | bytes | module }),
// the page built and served by Vite's dev server from an installed copy of the package with no
// config at all, and a boot in v86 with SeaBIOS whose writes show up in the overlay's map. In
// Firefox (over WebDriver BiDi) and WebKitGTK (MiniBrowser over its remote inspector): the image
// over HTTP under its overlay, its map, and both Export buttons.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, createServer as createViteServer } from 'vite';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright';
import { allocationMap } from '../bindings/tools/allocation-map.js';
import { Qcow2Image, RawImage, createMemoryBackend, ImageError, type BlockImage } from '../bindings/index.js';
import { CELL_PIXELS, MAP_COLOURS, MAP_COLUMNS } from '../examples/browser/draw-map.js';
import { qemuCheck, qemuImg, qemuInfo, qemuMap, requireQemu } from './helpers/qemu.js';
import { describeRequiring } from './helpers/describe-requiring.js';
import { backendBytes } from './helpers/backend-contents.js';
import { CHROMIUM, CHROMIUM_ARGS, missingChromium } from './helpers/chromium-pages.js';
import { step, within, withBrowser, CALL_LIMITS_MS } from './runners/bounded.js';
import { waitUntil } from './runners/driven-browser.js';
import { FIREFOX_PATH, launchFirefox } from './runners/firefox-bidi.js';
import { launchWebKit } from './runners/webkit-inspector.js';
import { WEBKIT_BROWSER_PATH } from './runners/xvfb.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const CLUSTER = 64 * KiB;


/** Fractions rounded for comparison (sums of shares pick up float noise). */
const rounded = (values: Float64Array) => Array.from(values, (v) => Math.round(v * 1e9) / 1e9);

describe('allocationMap', () => {
  it('gives one bucket per cluster the fractions of overlay data, backing data and unallocated space', async () => {
    const base = createMemoryBackend(8 * CLUSTER);
    const overlay = await Qcow2Image.create(createMemoryBackend(), {
      virtualSize: 8 * CLUSTER, backingFile: 'base.raw', backingFormat: 'raw', openBacking: async () => base,
    });
    await overlay.write(3 * CLUSTER + 100, new Uint8Array(10).fill(1));
    await overlay.write(6 * CLUSTER, new Uint8Array(2 * CLUSTER).fill(2));
    const map = await allocationMap(overlay, 8);
    expect([map.bucketBytes, map.bucketCount]).toEqual([CLUSTER, 8]);
    expect(rounded(map.topData)).toEqual([0, 0, 0, 1, 0, 0, 1, 1]);
    expect(rounded(map.backingData)).toEqual([1, 1, 1, 0, 1, 1, 0, 0]);
    expect(rounded(map.zero)).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    await overlay.close();
  });

  it('splits clusters across buckets of 2.5 clusters, with zero clusters and a shorter last bucket', async () => {
    const image = await Qcow2Image.create(createMemoryBackend(), { virtualSize: 10 * CLUSTER });
    await image.write(0, new Uint8Array(CLUSTER).fill(1));
    await image.write(2 * CLUSTER, new Uint8Array(CLUSTER).fill(2));
    await image.writeZeroes(2 * CLUSTER, CLUSTER); // a data cluster becomes a zero cluster
    await image.write(5 * CLUSTER, new Uint8Array(CLUSTER).fill(3));
    await image.write(9 * CLUSTER, new Uint8Array(CLUSTER).fill(4));

    const quarters = await allocationMap(image, 4);
    expect([quarters.bucketBytes, quarters.bucketCount]).toEqual([2.5 * CLUSTER, 4]);
    expect(rounded(quarters.topData)).toEqual([0.4, 0, 0.4, 0.4]);
    expect(rounded(quarters.zero)).toEqual([0.2, 0.2, 0, 0]);
    expect(rounded(quarters.backingData)).toEqual([0, 0, 0, 0]);

    // 10 clusters in 3 buckets: 427 sectors each, the last one 426 sectors long.
    const thirds = await allocationMap(image, 3);
    expect([thirds.bucketBytes, thirds.bucketCount]).toEqual([427 * 512, 3]);
    expect(thirds.topData[2]).toBeCloseTo(CLUSTER / (10 * CLUSTER - 2 * 427 * 512), 12);
    await image.close();
  });

  it('counts zero clusters of a backing layer as zero and a raw image as its own data', async () => {
    const baseBackend = createMemoryBackend();
    const base = await Qcow2Image.create(baseBackend, { virtualSize: 4 * CLUSTER });
    await base.write(0, new Uint8Array(2 * CLUSTER).fill(9));
    await base.writeZeroes(CLUSTER, CLUSTER);
    await base.flush();
    const overlay = await Qcow2Image.create(createMemoryBackend(), {
      virtualSize: 4 * CLUSTER, backingFile: 'base.qcow2', backingFormat: 'qcow2', openBacking: async () => createMemoryBackend(await backendBytes(baseBackend)),
    });
    const map = await allocationMap(overlay, 4);
    expect(rounded(map.backingData)).toEqual([1, 0, 0, 0]);
    expect(rounded(map.zero)).toEqual([0, 1, 0, 0]);
    expect(rounded(map.topData)).toEqual([0, 0, 0, 0]);
    await Promise.all([overlay.close(), base.close()]);

    const raw = await RawImage.open(createMemoryBackend(4096));
    const rawMap = await allocationMap(raw, 100); // more buckets than sectors: one per sector
    expect([rawMap.bucketBytes, rawMap.bucketCount]).toEqual([512, 8]);
    expect(rounded(rawMap.topData)).toEqual([1, 1, 1, 1, 1, 1, 1, 1]);
    await raw.close();
  });

  it('rejects a bucket count that is not a positive integer', async () => {
    const raw = await RawImage.open(createMemoryBackend(4096));
    for (const bad of [0, -1, 1.5, Number.NaN]) {
      const error = await allocationMap(raw, bad).then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(ImageError);
      expect((error as ImageError).code).toBe('INVALID_ARGUMENT');
    }
    await raw.close();
  });
});

// ---------------------------------------------------------------------------------------------
// The example page in Chromium.
// ---------------------------------------------------------------------------------------------

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const EXAMPLE = join(ROOT, 'examples', 'browser');
const BIOS = '/usr/share/seabios/bios.bin';
/** Per browser test: page loads, OPFS writes (each copies the overlay file) and a boot, on a shared machine. */
const BROWSER_TEST_MS = 180_000;
const GUEST = join(ROOT, 'test', 'fixtures', 'v86-guest', 'guest-hda.bin');

/** The test image's layout, in 64 KiB clusters of a 64 MiB qcow2 (1024 clusters = 1024 map cells). */
const VIRTUAL_SIZE = 64 * MiB;
const CLUSTERS = VIRTUAL_SIZE / CLUSTER;
const DATA_CLUSTERS = new Set([...Array.from({ length: CLUSTERS }, (_, i) => i).filter((i) => i % 7 === 3), ...range(100, 140), 1023]);
const ZERO_CLUSTERS = new Set(range(200, 210));
/** Clusters the tests write through the page (into the overlay). */
const WRITTEN_CLUSTERS = [5, 6, 500, 501, 502, 1022];

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

/** The 16 bytes the page writes at the start of each written cluster. */
const marker = (cluster: number) => `qcow2-wasm ${String(cluster).padStart(5, '0')}`;

type Kind = keyof typeof MAP_COLOURS;

/** What each map cell must show: through the overlay, base data is "backingData". */
function expectedKinds(written: readonly number[]): Kind[] {
  return Array.from({ length: CLUSTERS }, (_, i): Kind => {
    if (written.includes(i)) return 'topData';
    if (ZERO_CLUSTERS.has(i)) return 'zero';
    return DATA_CLUSTERS.has(i) ? 'backingData' : 'unallocated';
  });
}

/** Builds the base image with the library: data clusters, zero clusters, the rest unallocated. */
async function makeBaseImage(): Promise<Uint8Array> {
  const backend = createMemoryBackend();
  const image = await Qcow2Image.create(backend, { virtualSize: VIRTUAL_SIZE, clusterSize: CLUSTER });
  for (const cluster of DATA_CLUSTERS) await image.write(cluster * CLUSTER, new Uint8Array(CLUSTER).fill(cluster & 0xff | 1));
  for (const cluster of ZERO_CLUSTERS) {
    await image.write(cluster * CLUSTER, new Uint8Array(CLUSTER).fill(0xee));
    await image.writeZeroes(cluster * CLUSTER, CLUSTER);
  }
  await image.flush();
  const bytes = await backendBytes(backend);
  await image.close();
  return bytes;
}

/** A raw disk for the v86 boot: the guest program in sector 0-3, the seed sector at LBA 4. */
function makeGuestDisk(): Uint8Array {
  const disk = new Uint8Array(8 * MiB);
  disk.set(readFileSync(GUEST), 0);
  const seed = disk.subarray(4 * 512, 5 * 512);
  const view = new DataView(seed.buffer, seed.byteOffset, seed.byteLength);
  for (let record = 0; record < 32; record++) {
    seed.set(new TextEncoder().encode('QW-SEED-'), record * 16);
    view.setUint32(record * 16 + 8, 4, true);
    view.setUint32(record * 16 + 12, record, true);
  }
  return disk;
}

const CSP_STRICT = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'";
const CSP_NO_WASM = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'";
/** Path prefixes under which the server serves the built page, and the CSP each one sends. */
const PAGE_PREFIXES: Record<string, string | undefined> = { plain: undefined, strict: CSP_STRICT, nowasm: CSP_NO_WASM };

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css',
};

/**
 * The test server: /PREFIX/... the built page (with that prefix's CSP), /core.wasm the library's
 * wasm core, and byte resources (images) with HEAD and single-range GET support.
 */
function startServer(siteDir: string, resources: Map<string, Uint8Array>): Promise<Server> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const resource = resources.get(url.pathname);
    if (resource) {
      res.setHeader('Accept-Ranges', 'bytes');
      res.setHeader('Content-Type', url.pathname.endsWith('.wasm') ? 'application/wasm' : 'application/octet-stream');
      const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
      if (!range) {
        res.setHeader('Content-Length', resource.byteLength);
        res.end(req.method === 'HEAD' ? undefined : resource);
        return;
      }
      const first = Number(range[1]);
      const last = Math.min(range[2] === '' ? resource.byteLength - 1 : Number(range[2]), resource.byteLength - 1);
      if (first > last) {
        res.writeHead(416, { 'Content-Range': `bytes */${resource.byteLength}` }).end();
        return;
      }
      res.writeHead(206, { 'Content-Range': `bytes ${first}-${last}/${resource.byteLength}`, 'Content-Length': last - first + 1 });
      res.end(resource.subarray(first, last + 1));
      return;
    }
    const [, prefix, ...rest] = url.pathname.split('/');
    if (!(prefix in PAGE_PREFIXES)) {
      res.writeHead(404).end();
      return;
    }
    const file = normalize(join(siteDir, rest.join('/') || 'index.html'));
    if (!file.startsWith(siteDir) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    const csp = PAGE_PREFIXES[prefix];
    if (csp) res.setHeader('Content-Security-Policy', csp);
    res.setHeader('Content-Type', CONTENT_TYPES[extname(file)] ?? 'application/octet-stream');
    res.end(readFileSync(file));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Waits until the page has settled on `open` (or failed); returns the status text. */
async function settled(page: Page, states: readonly string[] = ['open', 'error']): Promise<string> {
  await page.waitForFunction((wanted) => wanted.includes(document.body.dataset.state ?? ''), states, { timeout: 30_000 });
  return (await page.textContent('#status')) ?? '';
}

/** Waits until the status starts with `prefix` (or the page failed); returns the status text. */
async function statusAfter(page: Page, prefix: string): Promise<string> {
  await page.waitForFunction((wanted) => document.body.dataset.state === 'error' || (document.getElementById('status')!.textContent ?? '').startsWith(wanted),
    prefix, { timeout: 60_000 });
  return (await page.textContent('#status')) ?? '';
}

/** The info list `list` as { field: text }. */
async function info(page: Page, list: 'image-info' | 'overlay-info'): Promise<Record<string, string>> {
  return page.$$eval(`#${list} dd`, (items) => Object.fromEntries(items.map((dd) => [(dd as HTMLElement).dataset.field, dd.textContent])));
}

/** In the page: the RGBA colour at the centre of each map cell. */
function readMapPixels(columns: number, cellPixels: number): number[][] {
  const canvas = document.getElementById('map') as HTMLCanvasElement;
  const count = Number(canvas.dataset.bucketCount);
  const data = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
  const centre = Math.floor(cellPixels / 2) - 1;
  return Array.from({ length: count }, (_, bucket) => {
    const x = (bucket % columns) * cellPixels + centre;
    const y = Math.floor(bucket / columns) * cellPixels + centre;
    const at = (y * canvas.width + x) * 4;
    return [data[at], data[at + 1], data[at + 2], data[at + 3]];
  });
}

/** Map cell colours as the kind whose colour each is ('?' for none). */
function cellKinds(pixels: number[][]): string[] {
  return pixels.map(([r, g, b, a]) => {
    const kind = (Object.keys(MAP_COLOURS) as Kind[]).find((k) => MAP_COLOURS[k][0] === r && MAP_COLOURS[k][1] === g && MAP_COLOURS[k][2] === b);
    return a === 255 && kind ? kind : `?${r},${g},${b},${a}`;
  });
}

/** The kind each map cell of `page` shows. */
async function mapCells(page: Page): Promise<string[]> {
  return cellKinds(await inChromium('page.evaluate(readMapPixels)', page.evaluate<number[][]>(callExpression(readMapPixels, MAP_COLUMNS, CELL_PIXELS))));
}

/** Cells whose kind differs from what is expected, as "cell: got != expected" lines. */
function mismatches(got: readonly string[], expected: readonly string[]): string[] {
  return expected.flatMap((kind, i) => (got[i] === kind ? [] : [`${i}: ${got[i]} != ${kind}`]));
}

/** In the page: the OPFS file at `path` ('/'-separated), base64-encoded. */
async function readOpfsBase64(path: string): Promise<string> {
  let directory = await navigator.storage.getDirectory();
  const parts = path.split('/');
  for (const part of parts.slice(0, -1)) directory = await directory.getDirectoryHandle(part);
  const file = await (await directory.getFileHandle(parts[parts.length - 1]!)).getFile();
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** The bytes of the OPFS file at `path`, read in the page. */
async function opfsFile(page: Page, path: string): Promise<Uint8Array> {
  return new Uint8Array(Buffer.from(await inChromium(`page.evaluate(readOpfsBase64(${path}))`, page.evaluate<string>(callExpression(readOpfsBase64, path))), 'base64'));
}

/**
 * A Playwright call that has no time limit of its own (evaluate, a download's saveAs), bounded
 * like the calls of the driven engines: `what` names it when the limit fires.
 */
const inChromium = <T>(what: string, call: Promise<T>): Promise<T> => within(`Chromium: ${what}`, CALL_LIMITS_MS.evaluate, call);

/** A call of the page-side function `fn` with JSON arguments, as an expression for DrivenPage.evaluate. */
const callExpression = (fn: (...args: never[]) => unknown, ...args: unknown[]): string =>
  `(${fn.toString()})(${args.map((arg) => JSON.stringify(arg)).join(', ')})`;

/** In the page: writes the test's marker at the start of each cluster of `clusters`. */
async function writeMarkers(clusters: readonly number[], clusterBytes: number): Promise<void> {
  const { session } = window.qcow2Example;
  await Promise.all(clusters.map((cluster) =>
    session!.overlay.write(cluster * clusterBytes, new TextEncoder().encode(`qcow2-wasm ${String(cluster).padStart(5, '0')}`))));
}

/**
 * Expects the exported images in `files` (kind: path; 'overlay' is the overlay alone, backed by
 * `baseUrl`, the others flattened) to pass qemu-img check and to compare equal to the guest view:
 * the base with the markers of WRITTEN_CLUSTERS. The overlay must hold exactly those clusters.
 */
async function expectExports(files: Record<string, string>, baseImage: Uint8Array, baseUrl: string, scratchDir: string): Promise<void> {
  if (!requireQemu('the example\'s exports')) return;
  const base = await Qcow2Image.open(createMemoryBackend(baseImage), { readOnly: true });
  const expected = await base.read(0, VIRTUAL_SIZE);
  await base.close();
  for (const cluster of WRITTEN_CLUSTERS) expected.set(new TextEncoder().encode(marker(cluster)), cluster * CLUSTER);
  writeFileSync(join(scratchDir, 'expected.raw'), expected);
  writeFileSync(join(scratchDir, 'base.qcow2'), baseImage);

  // The overlay names the base by its URL: pointed at a local copy (rebase -u changes only that name).
  expect(qemuInfo(files.overlay)['backing-filename']).toBe(baseUrl);
  expect(qemuImg(['rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', 'base.qcow2', files.overlay], scratchDir).code).toBe(0);
  for (const [kind, path] of Object.entries(files)) {
    const check = qemuCheck(path);
    expect([check.exitCode, check['check-errors'], check.leaks ?? 0, check.corruptions ?? 0], kind).toEqual([0, 0, 0, 0]);
    const compare = qemuImg(['compare', '-f', 'qcow2', '-F', 'raw', path, join(scratchDir, 'expected.raw')]);
    expect(compare.code, `${kind}: ${compare.stdout}${compare.stderr}`).toBe(0);
    if (kind !== 'overlay') expect(qemuInfo(path)['backing-filename'], kind).toBeUndefined();
  }
  // The overlay export holds exactly the written clusters; everything else comes from the base.
  const topClusters = qemuMap(files.overlay).filter((entry) => entry.depth === 0 && entry.data)
    .flatMap((entry) => range(entry.start / CLUSTER, (entry.start + entry.length) / CLUSTER));
  expect(topClusters).toEqual([...WRITTEN_CLUSTERS].sort((a, b) => a - b));
}

describe('the example page, built with Vite and served over HTTP', () => {
  let siteDir: string;
  let scratch: string;
  let server: Server;
  let origin: string;
  let baseImage: Uint8Array;
  const resources = new Map<string, Uint8Array>();

  beforeAll(async () => {
    for (const entry of ['browser', 'v86']) {
      const built = join(ROOT, 'dist', 'bindings', `${entry}.js`);
      if (!existsSync(built)) throw new Error(`${built} is missing: run \`npm run build\` first`);
    }
    scratch = mkdtempSync(join(tmpdir(), 'qcow2-wasm-example-'));
    siteDir = join(scratch, 'site');
    // The example's own config; nothing added here (no optimizeDeps, no wasm plugin).
    await build({ root: EXAMPLE, configFile: join(EXAMPLE, 'vite.config.ts'), logLevel: 'warn', build: { outDir: siteDir, emptyOutDir: true } });
    baseImage = await makeBaseImage();
    resources.set('/images/base.qcow2', baseImage);
    resources.set('/core.wasm', new Uint8Array(readFileSync(join(ROOT, 'build', 'core.wasm'))));
    if (existsSync(GUEST)) resources.set('/images/guest.raw', makeGuestDisk());
    server = await startServer(siteDir, resources);
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }, 120_000);

  afterAll(async () => {
    await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  describeRequiring('in headless Chromium', missingChromium(), () => {
    let browser: Browser;
    const contexts: BrowserContext[] = [];

    /** A page in a fresh browser context (its own OPFS) that reports uncaught page errors. */
    async function newPage(): Promise<Page> {
      const context = await browser.newContext();
      contexts.push(context);
      const page = await context.newPage();
      page.on('pageerror', (error) => console.error('[page error]', error));
      return page;
    }

    beforeAll(async () => {
      browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    }, 120_000);

    afterAll(async () => {
      await Promise.allSettled(contexts.map((c) => c.close()));
      await browser?.close();
    });

    it('builds to plain files: one entry script, the library with its wasm embedded in it', () => {
      const html = readFileSync(join(siteDir, 'index.html'), 'utf8');
      expect(html).toMatch(/<script type="module" crossorigin src="\.\/assets\/index-[\w-]+\.js"><\/script>/);
      expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/); // no inline script: strict CSPs need none
      // The only .wasm file is v86's: the library's core travels inside the JavaScript.
      expect(readdirSync(join(siteDir, 'assets')).filter((name) => name.endsWith('.wasm'))).toEqual([expect.stringMatching(/^v86-[\w-]+\.wasm$/)]);
    });

    it('opens a qcow2 served over HTTP under an OPFS overlay: info, drawn map, writes into the overlay that survive a reload', async () => {
      const page = await newPage();
      await page.goto(`${origin}/plain/index.html?image=/images/base.qcow2`);
      expect(await settled(page)).toMatch(/^Created an overlay for http:\/\/127\.0\.0\.1:\d+\/images\/base\.qcow2/);

      const base = await info(page, 'image-info');
      expect(base).toMatchObject({ format: 'qcow2', 'virtual-size': '64 MiB (67108864 bytes)', 'cluster-size': '65536', compat: '1.1' });
      expect(base['file-size']).toContain(`(${baseImage.byteLength} bytes)`);
      const overlayInfo = await info(page, 'overlay-info');
      expect(overlayInfo).toMatchObject({ format: 'qcow2', 'virtual-size': '64 MiB (67108864 bytes)', 'cluster-size': '65536', 'backing-format': 'qcow2' });
      expect(overlayInfo['backing-file']).toBe(`${origin}/images/base.qcow2`);

      expect(mismatches(await mapCells(page), expectedKinds([]))).toEqual([]);

      // Writes through the page's image land in the overlay; the map shows them after a refresh.
      await inChromium('page.evaluate(writeMarkers)', page.evaluate(callExpression(writeMarkers, WRITTEN_CLUSTERS, CLUSTER)));
      await inChromium('page.evaluate(refresh)', page.evaluate(() => window.qcow2Example.refresh()));
      expect(mismatches(await mapCells(page), expectedKinds(WRITTEN_CLUSTERS))).toEqual([]);
      const overlayPath = (await info(page, 'overlay-info')).path;

      // The OPFS file is a standard qcow2 overlay: open it here with the base and read the writes.
      const overlayBytes = await opfsFile(page, overlayPath);
      expect(Array.from(overlayBytes.subarray(0, 4))).toEqual([0x51, 0x46, 0x49, 0xfb]);
      expect(overlayBytes.byteLength).toBeLessThan(2 * MiB); // the overlay holds only what was written
      const reopened = await Qcow2Image.open(createMemoryBackend(overlayBytes), { readOnly: true, openBacking: async () => createMemoryBackend(baseImage) });
      for (const cluster of WRITTEN_CLUSTERS) {
        const head = await reopened.read(cluster * CLUSTER, CLUSTER);
        expect(new TextDecoder().decode(head.subarray(0, 16))).toBe(marker(cluster));
        const fill = DATA_CLUSTERS.has(cluster) ? (cluster & 0xff | 1) : 0;
        expect(head.subarray(16).every((byte) => byte === fill)).toBe(true); // the rest copied from the base
      }
      expect((await reopened.read(3 * CLUSTER, 4)).every((byte) => byte === 3)).toBe(true); // base data shows through
      await reopened.close();

      // A reload reopens the same overlay: the writes are still there.
      await page.reload();
      expect(await settled(page)).toMatch(/^Reopened the overlay of /);
      expect(mismatches(await mapCells(page), expectedKinds(WRITTEN_CLUSTERS))).toEqual([]);
      const text = await inChromium('page.evaluate(overlay.read)', page.evaluate(async (offset) =>
        new TextDecoder().decode(await window.qcow2Example.session!.overlay.read(offset, 16)), 500 * CLUSTER));
      expect(text).toBe(marker(500));

      // Discarding the overlay starts afresh from the base.
      await page.click('#discard');
      expect(await settled(page)).toMatch(/^Created an overlay for /);
      expect(mismatches(await mapCells(page), expectedKinds([]))).toEqual([]);
    }, BROWSER_TEST_MS);

    it('exports the flattened disk and the overlay alone as qcow2 files: downloads, and a picked file; qemu-img checks and compares them', async () => {
      /** A page on the base image with the test's writes in its overlay; `init` runs before the page's scripts. */
      const writtenPage = async (init: () => void): Promise<Page> => {
        const page = await newPage();
        await page.addInitScript(init);
        await page.goto(`${origin}/plain/index.html?image=/images/base.qcow2`);
        expect(await settled(page)).toMatch(/^Created an overlay for /);
        await inChromium('page.evaluate(writeMarkers)', page.evaluate(callExpression(writeMarkers, WRITTEN_CLUSTERS, CLUSTER)));
        return page;
      };

      // Where the page cannot ask where to save (as in Firefox and Safari): downloads.
      const downloading = await writtenPage(() => { Object.defineProperty(window, 'showSaveFilePicker', { value: undefined }); });
      const files: Record<string, string> = {};
      for (const [button, kind, what] of [['#export-flat', 'flattened', 'the disk'], ['#export-overlay', 'overlay', 'the overlay']] as const) {
        const download = downloading.waitForEvent('download', { timeout: 60_000 });
        await downloading.click(button);
        expect(await statusAfter(downloading, `Exported ${what}`)).toMatch(new RegExp(`^Exported ${what} as base\\.${kind}\\.qcow2, a .* qcow2 image \\(download started\\)\\.$`));
        const saved = await download;
        expect(saved.suggestedFilename()).toBe(`base.${kind}.qcow2`);
        files[kind] = join(scratch, `download-${kind}.qcow2`);
        await inChromium(`download.saveAs(${files[kind]})`, saved.saveAs(files[kind]));
      }

      // Where it can (Chromium): the file the user picks. The save dialog is the browser's own, which
      // automation cannot answer; a stand-in picker hands the page an OPFS file handle instead, so
      // the page writes through the same FileSystemFileHandle and writable stream a picked file has.
      const picking = await writtenPage(() => {
        (window as unknown as { showSaveFilePicker: unknown }).showSaveFilePicker = async ({ suggestedName }: { suggestedName: string }) =>
          (await navigator.storage.getDirectory()).getFileHandle(`picked-${suggestedName}`, { create: true });
      });
      await picking.click('#export-flat');
      expect(await statusAfter(picking, 'Exported the disk')).toMatch(/^Exported the disk as picked-base\.flattened\.qcow2, a .* qcow2 image \(saved to the file you picked\)\.$/);
      files.picked = join(scratch, 'picked-flattened.qcow2');
      writeFileSync(files.picked, await opfsFile(picking, 'picked-base.flattened.qcow2'));

      await expectExports(files, baseImage, `${origin}/images/base.qcow2`, scratch);
    }, BROWSER_TEST_MS);

    it('opens a file the user picks (a Blob) the same way', async () => {
      const path = join(scratch, 'picked.qcow2');
      writeFileSync(path, baseImage);
      const page = await newPage();
      await page.goto(`${origin}/plain/index.html`);
      expect(await settled(page, ['ready', 'error'])).toBe('Ready: pick an image file or open a URL.');
      await page.setInputFiles('#image-file', path);
      expect(await settled(page)).toMatch(/^Created an overlay for picked\.qcow2: writes go to OPFS qcow2-wasm-example\/picked\.qcow2\.overlay\.qcow2/);
      expect(await info(page, 'image-info')).toMatchObject({ source: 'picked.qcow2', format: 'qcow2', 'virtual-size': '64 MiB (67108864 bytes)' });
      expect(mismatches(await mapCells(page), expectedKinds([]))).toEqual([]);
    }, BROWSER_TEST_MS);

    it(`works under a strict Content-Security-Policy that allows 'wasm-unsafe-eval'`, async () => {
      const page = await newPage();
      const violations: string[] = [];
      page.on('console', (message) => { if (/Content Security Policy/i.test(message.text())) violations.push(message.text()); });
      const response = await page.goto(`${origin}/strict/index.html?image=/images/base.qcow2`);
      expect(response?.headers()['content-security-policy']).toBe(CSP_STRICT);
      expect(await settled(page)).toMatch(/^Created an overlay for /);
      expect((await info(page, 'image-info'))['virtual-size']).toBe('64 MiB (67108864 bytes)');
      expect(mismatches(await mapCells(page), expectedKinds([]))).toEqual([]);
      // All this policy refuses is a worker from a blob: URL (the one that fetches the image): the
      // library then fetches on the page, as docs/browser.md says.
      expect(violations.filter((text) => !/^Creating a worker from 'blob:/.test(text))).toEqual([]);
    }, BROWSER_TEST_MS);

    it(`fails with a clear message when the CSP lacks 'wasm-unsafe-eval' (for every init source)`, async () => {
      const page = await newPage();
      await page.goto(`${origin}/nowasm/index.html?image=/images/base.qcow2`);
      const status = await settled(page, ['error']);
      // Chromium refuses the compile itself (a CompileError naming the CSP); the page adds the fix.
      expect(status).toMatch(/^CompileError: WebAssembly\.compile\(\): .*'unsafe-eval' is not an allowed source of script/);
      expect(status).toContain(`add 'wasm-unsafe-eval' to script-src`);
      const failures = await inChromium('page.evaluate(library.init)', page.evaluate(async () => {
        const { library } = window.qcow2Example;
        const bytes = new Uint8Array(await (await fetch('/core.wasm')).arrayBuffer());
        const attempt = (options: Parameters<typeof library.init>[0]) => library.init(options).then(() => 'compiled', (e: Error) => `${e.name}: ${e.message}`);
        return { url: await attempt({ url: '/core.wasm' }), bytes: await attempt({ bytes }) };
      }));
      expect(failures.url).toMatch(/^CompileError: .*Content Security Policy/);
      expect(failures.bytes).toMatch(/^CompileError: .*Content Security Policy/);
    }, BROWSER_TEST_MS);

    it('init() takes the core from a URL, bytes or a compiled module, and uses what it is given', async () => {
      const page = await newPage();
      await page.goto(`${origin}/plain/index.html?core=/core.wasm`);
      expect(await settled(page, ['ready', 'error'])).toBe('Ready: pick an image file or open a URL.');
      const results = await inChromium('page.evaluate(library.init)', page.evaluate(async () => {
        const { library } = window.qcow2Example;
        const roundTrip = async () => {
          const image = await library.Qcow2Image.create(library.createMemoryBackend(), { virtualSize: 1 << 20 });
          await image.write(1000, new Uint8Array([1, 2, 3]));
          const bytes = Array.from(await image.read(999, 5));
          await image.close();
          return bytes.join(',');
        };
        // The library's errors by their code (class names do not survive minification).
        const outcome = (promise: Promise<unknown>) => promise.then((value) => String(value),
          (e: Error) => (e instanceof library.Qcow2WasmError ? `Qcow2WasmError ${e.code}` : e.name));
        const bytes = new Uint8Array(await (await fetch('/core.wasm')).arrayBuffer());
        const emptyModule = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
        const run = async (options: Parameters<typeof library.init>[0]) => {
          const init = await outcome(library.init(options));
          return `${init} / ${await outcome(roundTrip())}`;
        };
        return {
          url: await run({ url: '/core.wasm' }),
          missingUrl: await run({ url: '/missing.wasm' }),
          bytes: await run({ bytes }),
          badBytes: await run({ bytes: bytes.subarray(0, 100) }),
          module: await run({ module: await WebAssembly.compile(bytes) }),
          otherModule: await run({ module: await WebAssembly.compile(emptyModule) }),
          embedded: await run({}),
        };
      }));
      expect(results).toEqual({
        url: 'undefined / 0,1,2,3,0',
        missingUrl: 'Qcow2WasmError INVALID_ARGUMENT / Qcow2WasmError INVALID_ARGUMENT',
        bytes: 'undefined / 0,1,2,3,0',
        badBytes: 'CompileError / CompileError',
        module: 'undefined / 0,1,2,3,0',
        // A module that is not this package's core is refused when a core is made from it.
        otherModule: 'undefined / Qcow2WasmError INVALID_ARGUMENT',
        embedded: 'undefined / 0,1,2,3,0',
      });
    }, BROWSER_TEST_MS);

    it('works installed as a package (npm\'s file list) with no Vite config at all: dev server and build', async () => {
      // A project with qcow2-wasm in node_modules as npm would unpack it (package.json `files`),
      // its dependencies beside it, and the example's sources: no vite.config, no alias.
      const project = join(scratch, 'installed');
      const modules = join(project, 'node_modules');
      const pkg = join(modules, 'qcow2-wasm');
      const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { files: string[]; dependencies: Record<string, string> };
      // npm's own list of the files it would pack (`files`, negations and all), copied one by one.
      const packed = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
      const [{ files }] = JSON.parse(packed.slice(packed.indexOf('['))) as [{ files: { path: string }[] }];
      for (const { path } of files) {
        mkdirSync(dirname(join(pkg, path)), { recursive: true });
        cpSync(join(ROOT, path), join(pkg, path));
      }
      for (const dependency of [...Object.keys(manifest.dependencies), 'v86']) {
        mkdirSync(join(modules, dependency, '..'), { recursive: true });
        symlinkSync(join(ROOT, 'node_modules', dependency), join(modules, dependency), 'dir');
      }
      for (const file of ['index.html', 'main.ts', 'session.ts', 'info.ts', 'draw-map.ts', 'boot.ts', 'export.ts']) cpSync(join(EXAMPLE, file), join(project, file));
      const picked = join(scratch, 'installed.qcow2');
      writeFileSync(picked, baseImage);

      const openPicked = async (url: string) => {
        const page = await newPage();
        await page.goto(url);
        expect(await settled(page, ['ready', 'error'])).toBe('Ready: pick an image file or open a URL.');
        await page.setInputFiles('#image-file', picked);
        expect(await settled(page)).toMatch(/^Created an overlay for installed\.qcow2/);
        expect(mismatches(await mapCells(page), expectedKinds([]))).toEqual([]);
      };

      // Dev server: Vite pre-bundles the dependency; embedded wasm bytes need no asset handling.
      const dev = await createViteServer({ root: project, configFile: false, logLevel: 'warn', server: { host: '127.0.0.1', port: 0 } });
      try {
        await dev.listen();
        await openPicked(dev.resolvedUrls!.local[0]!);
        // It did pre-bundle the library (the step that breaks `new URL('x.wasm', import.meta.url)`).
        expect(readdirSync(join(modules, '.vite', 'deps'))).toContain('qcow2-wasm_browser.js');
      } finally {
        await dev.close();
      }

      // Production build, served as plain files.
      const out = join(scratch, 'installed-site');
      await build({ root: project, configFile: false, base: './', logLevel: 'warn', build: { outDir: out, emptyOutDir: true } });
      const site = await startServer(out, new Map());
      try {
        await openPicked(`http://127.0.0.1:${(site.address() as AddressInfo).port}/plain/index.html`);
      } finally {
        await new Promise((resolve) => site.close(resolve));
      }
    }, BROWSER_TEST_MS);

    describeRequiring('boot in v86', existsSync(BIOS) ? undefined : `${BIOS} not found (apt-get install seabios)`, () => {
      it('boots a disk under its overlay with the BIOS the user picks; the guest\'s writes land in the overlay', async () => {
        expect(existsSync(GUEST), `${GUEST} (the v86 test guest) is missing`).toBe(true);
        const page = await newPage();
        await page.goto(`${origin}/plain/index.html?image=/images/guest.raw`);
        expect(await settled(page)).toMatch(/^Created an overlay for /);
        expect(await info(page, 'image-info')).toMatchObject({ format: 'raw', 'virtual-size': '8 MiB (8388608 bytes)' });
        expect(await page.isDisabled('#boot')).toBe(true); // no BIOS yet
        await page.setInputFiles('#bios-file', BIOS);
        await page.click('#boot');
        await page.waitForFunction(() => document.getElementById('serial')!.textContent!.includes('DONE'), undefined, { timeout: 60_000 });
        const serial = (await page.textContent('#serial')) ?? '';
        expect(serial).not.toContain('FAIL');
        await page.click('#stop');
        expect(await settled(page)).toMatch(/^Reopened the overlay of /);
        // 8 MiB in 1024 cells of 8 KiB; the overlay's clusters are 64 KiB (8 cells). Cells of the
        // clusters the guest changed show the overlay, all others the raw image. Among them: LBA
        // 5-6 and 120-135 (clusters 0 and 1) and 12288-12291 (cluster 96).
        const changed = await inChromium('page.evaluate(overlay and base read)', page.evaluate(async (clusterBytes) => {
          const { overlay, base } = window.qcow2Example.session!;
          const [mine, theirs] = await Promise.all([overlay.read(0, overlay.virtualSize), base.read(0, base.virtualSize)]);
          const clusters = new Set<number>();
          mine.forEach((byte, i) => { if (byte !== theirs[i]) clusters.add(Math.floor(i / clusterBytes)); });
          return [...clusters];
        }, CLUSTER));
        expect(changed).toEqual(expect.arrayContaining([0, 1, 96]));
        const cells = await mapCells(page);
        const cellsPerCluster = CLUSTER / (8 * KiB);
        expect(mismatches(cells, cells.map((_, i) => (changed.includes(Math.floor(i / cellsPerCluster)) ? 'topData' : 'backingData')))).toEqual([]);
        const lba = await inChromium('page.evaluate(overlay.read)', page.evaluate(async () => {
          const read = (sector: number) => window.qcow2Example.session!.overlay.read(sector * 512, 8).then((b) => new TextDecoder().decode(b));
          return [await read(5), await read(120), await read(127), await read(12288)];
        }));
        expect(lba).toEqual(['QW-CHS-W', 'QW-LBA-W', 'QW-OVER-', 'QW-HIGH-']);
      }, BROWSER_TEST_MS);
    });
  });

  const engines = [
    { name: 'Firefox (WebDriver BiDi)', file: 'firefox', binary: FIREFOX_PATH, install: 'apt-get install firefox-esr', launch: launchFirefox },
    { name: 'WebKit (MiniBrowser over its inspector)', file: 'webkit', binary: WEBKIT_BROWSER_PATH, install: 'apt-get install libwebkit2gtk-4.1-0 xvfb', launch: launchWebKit },
  ];
  for (const engine of engines) describeRequiring(`in ${engine.name}`, existsSync(engine.binary) ? undefined : `${engine.binary} not found (${engine.install})`, () => {
    it('opens a qcow2 over HTTP under an OPFS overlay, draws its map, and exports the disk and the overlay (into OPFS, for download)', async () => {
      await withBrowser('example page', () => engine.launch(), async (browser) => {
        const page = await step('open the page', () => browser.openPage(`${origin}/plain/index.html?image=/images/base.qcow2`));
        const status = async (): Promise<string> => page.evaluate<string>(`document.getElementById('status').textContent`);
        const waitForStatus = async (prefix: string): Promise<string> => {
          await waitUntil(`a status starting with ${prefix}`, async () => (await status()).startsWith(prefix) || (await page.evaluate<string>('document.body.dataset.state')) === 'error');
          return status();
        };
        await step('open the image', async () => {
          expect(await waitForStatus('Created an overlay for ')).toMatch(/^Created an overlay for http:\/\/127\.0\.0\.1:\d+\/images\/base\.qcow2/);
          expect(mismatches(cellKinds(await page.evaluate<number[][]>(callExpression(readMapPixels, MAP_COLUMNS, CELL_PIXELS))), expectedKinds([]))).toEqual([]);
        });

        await step('write', () => page.evaluate(callExpression(writeMarkers, WRITTEN_CLUSTERS, CLUSTER)));
        const files: Record<string, string> = {};
        for (const [button, kind, what] of [['export-flat', 'flattened', 'the disk'], ['export-overlay', 'overlay', 'the overlay']] as const) {
          await step(`export ${what}`, async () => {
            await page.evaluate(`document.getElementById(${JSON.stringify(button)}).click()`);
            // Firefox and Safari have no showSaveFilePicker: the export goes into OPFS and is offered as a download.
            expect(await waitForStatus(`Exported ${what}`)).toMatch(new RegExp(`^Exported ${what} as base\\.${kind}\\.qcow2, a .* qcow2 image \\(download started\\)\\.$`));
            files[kind] = join(scratch, `${engine.file}-${kind}.qcow2`);
            const base64 = await page.evaluate<string>(callExpression(readOpfsBase64, `qcow2-wasm-example-exports/base.${kind}.qcow2`));
            writeFileSync(files[kind], Buffer.from(base64, 'base64'));
          });
        }
        await expectExports(files, baseImage, `${origin}/images/base.qcow2`, scratch);
      });
    }, BROWSER_TEST_MS);
  });
});
