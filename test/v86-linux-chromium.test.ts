// SPDX-License-Identifier: MIT
// The Linux guest of scripts/v86-linux in headless Chromium (Playwright), v86 running in the page:
// its disk is a qcow2 overlay in OPFS (through the library's OPFS worker) over a qcow2 base served
// with HTTP Range requests, whose data clusters hold a filler the guest's file system must not
// show. The guest makes ext4, writes its test files, syncs, remounts and verifies (qw.mode=fresh,
// test/browser/pages/v86-linux-page.ts). The page then closes the disk and uploads the overlay
// file; beside the base, qemu-img check must find it clean, and the guest view, converted to raw,
// must pass e2fsck -fn and hold exactly the expected files (the same checks as the Node boots in
// test/v86-linux.test.ts).

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { chromium, type Browser } from 'playwright';
import type { ViteDevServer } from 'vite';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createMemoryBackend, Qcow2Image } from '../bindings/index.js';
import { rangeServer } from './browser/range-server.js';
import type { LinuxBootRequest, LinuxBootResult } from './browser/pages/v86-linux-page.js';
import { CHROMIUM, CHROMIUM_ARGS, missingChromium, startPageServer } from './helpers/chromium-pages.js';
import { describeRequiring } from './helpers/describe-requiring.js';
import { backendBytes } from './helpers/backend-contents.js';
import { BIOS_PATH, GUEST_DIR, expectGuestFiles, freshFiles, missingForLinuxGuest, readGuestBuild, withSums } from './helpers/v86-linux-guest.js';

const MiB = 1024 * 1024;
const CLUSTER = 64 * 1024;
const DISK_BYTES = 64 * MiB;
/** Every this many clusters of the base holds the filler. */
const FILLED_EVERY = 5;
/** v86 in a page is slower than in Node, and the machine may be loaded. */
const BOOT_TIMEOUT_MS = 480_000;

/** The base: a 64 MiB qcow2 whose every FILLED_EVERY-th cluster is filled with 0xa5. */
async function makeBase(): Promise<Uint8Array> {
  const backend = createMemoryBackend();
  const image = await Qcow2Image.create(backend, { virtualSize: DISK_BYTES, clusterSize: CLUSTER });
  const filler = new Uint8Array(CLUSTER).fill(0xa5);
  for (let cluster = 0; cluster < DISK_BYTES / CLUSTER; cluster += FILLED_EVERY) await image.write(cluster * CLUSTER, filler);
  await image.flush();
  const bytes = await backendBytes(backend);
  await image.close();
  return bytes;
}

describeRequiring('a Linux guest on v86 in Chromium makes ext4 on an OPFS overlay over an HTTP base', missingChromium() ?? missingForLinuxGuest(), () => {
  let scratch: string;
  let server: ViteDevServer;
  let pageUrl: string;
  let origin: string;
  let browser: Browser;
  let base: Uint8Array;

  /** Stores `bytes` on the test server's range store as /__range/`name`. */
  const put = async (name: string, bytes: Uint8Array): Promise<void> => {
    const response = await fetch(`${origin}/__range/${name}`, { method: 'PUT', body: bytes });
    expect(response.status).toBe(204);
  };

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'qcow2-v86-linux-chromium-'));
    ({ server, pageUrl } = await startPageServer(scratch, 'v86-linux.html', { plugins: [rangeServer()], dependencies: ['v86'] }));
    origin = new URL(pageUrl).origin;
    const v86Build = dirname(createRequire(import.meta.url).resolve('v86'));
    await put('v86.wasm', readFileSync(join(v86Build, 'v86.wasm')));
    await put('bios.bin', readFileSync(BIOS_PATH));
    await put('bzImage', readFileSync(join(GUEST_DIR, 'bzImage')));
    await put('initramfs.cpio', readFileSync(join(GUEST_DIR, 'initramfs.cpio')));
    base = await makeBase();
    await put('base.qcow2', base);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
  });

  it('fresh: the guest formats, writes, syncs and verifies; the host finds qemu-img check clean and the same files', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      page.on('pageerror', (error) => console.error(`[page error] ${error.message}`));
      await page.goto(pageUrl);
      await page.waitForFunction(() => 'v86Linux' in window, undefined, { timeout: 120_000 });
      const request: LinuxBootRequest = {
        assets: `${origin}/__range/`,
        cmdline: `${readGuestBuild().kernelArgs} qw.mode=fresh`,
        baseUrl: `${origin}/__range/base.qcow2`,
        overlayPath: 'v86-linux/overlay.qcow2',
        uploadUrl: `${origin}/__range/overlay.qcow2`,
        timeoutMs: BOOT_TIMEOUT_MS,
      };
      const result = await page.evaluate((r) => (window as unknown as { v86Linux: { run(r: LinuxBootRequest): Promise<LinuxBootResult> } }).v86Linux.run(r), request);
      console.log(`v86 Linux guest in Chromium, fresh: done in ${(result.elapsedMs / 1000).toFixed(1)} s; ${result.stats.guestWriteRequests} writes, ${result.stats.guestReadRequests} reads; overlay ${(result.overlayFileBytes / MiB).toFixed(1)} MiB`);
      expect(result.lines).toContain('VERIFIED fresh 27 files');
      expect(result.stats.guestWriteRequests).toBeGreaterThan(0);
      expect(result.stats.cowBytes).toBeGreaterThan(0); // partial clusters were completed from the base over HTTP

      const overlay = new Uint8Array(await (await fetch(`${origin}/__range/overlay.qcow2`)).arrayBuffer());
      expect(overlay.byteLength).toBe(result.overlayFileBytes);
      writeFileSync(join(scratch, 'base.qcow2'), base);
      writeFileSync(join(scratch, 'overlay.qcow2'), overlay);
      expectGuestFiles(join(scratch, 'overlay.qcow2'), withSums(freshFiles()), scratch, 'chromium-overlay');
    } finally {
      await context.close();
    }
  }, BOOT_TIMEOUT_MS + 120_000);
});
