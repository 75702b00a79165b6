// SPDX-License-Identifier: MIT
// The v86 boot benchmark page: `window.v86Boot.run(request)` boots the Linux guest (kernel and
// initramfs from scripts/v86-linux/build.sh) in v86 with its root file system disk served over
// HTTP in one of the layouts bench/v86-boot.ts compares, and resolves with the time from the
// V86 constructor to the guest's "QW READY" line. bench/v86-boot.ts calls it through Playwright,
// one boot per page load.

import { V86 } from 'v86';
import { createMemoryBackend, openHttpBackend, openSplitBackend, Qcow2Image, type Backend } from '../../bindings/browser.js';
import { toV86Disk, type V86Disk } from '../../bindings/v86.js';
import { guestFilesAt, guestOptions, waitForGuestLine } from '../../scripts/v86-linux/guest-serial.js';

/** Where the disk comes from. */
export type BootLayout =
  /** v86's own loader: the raw disk as fixed-size parts `disk-START-END.img`. */
  | { kind: 'v86-parts'; url: string; sizeBytes: number; chunkBytes: number }
  /** One qcow2 file read with Range requests (read ahead), under a qcow2 overlay in memory. */
  | { kind: 'qcow2-range'; url: string; virtualBytes: number }
  /** The same qcow2 file as split parts (openSplitBackend; `url` is the manifest), under a qcow2 overlay in memory. */
  | { kind: 'qcow2-parts'; url: string; virtualBytes: number };

/** One boot. `assets` is the URL prefix of bios.bin, v86.wasm, bzImage and initramfs.cpio.gz. */
export interface BootRequest {
  assets: string;
  cmdline: string;
  layout: BootLayout;
  timeoutMs: number;
}

/** What one boot measured. */
export interface BootResult {
  /** From the V86 constructor to the guest's READY line. */
  readyMs: number;
  /** The READY line as the guest printed it ("READY <files> <KiB read>"). */
  ready: string;
  /** The guest's disk reads through the qcow2 adapter (none for v86's own loader). */
  diskReads?: DiskReadStats;
}

/** What the guest's disk reads cost: how many, their bytes, and the time from request to answer. */
export interface DiskReadStats {
  count: number;
  bytes: number;
  /** Sum over reads of the time from v86's get() to its callback. */
  waitMs: number;
  /** The slowest read. */
  maxWaitMs: number;
}

/** Wraps `disk.get` to add every read's size and latency to `stats`. */
function countReads(disk: V86Disk, stats: DiskReadStats): void {
  const get = disk.get.bind(disk);
  disk.get = (start, len, fn, options) => {
    const issued = performance.now();
    get(start, len, (data) => {
      const waited = performance.now() - issued;
      stats.count++;
      stats.bytes += len;
      stats.waitMs += waited;
      stats.maxWaitMs = Math.max(stats.maxWaitMs, waited);
      fn(data);
    }, options);
  };
}

/** The hda option for `layout`, and the adapter to close afterwards (none for v86's own loader). */
async function diskFor(layout: BootLayout): Promise<{ hda: unknown; disk?: V86Disk }> {
  if (layout.kind === 'v86-parts') {
    return { hda: { url: layout.url, size: layout.sizeBytes, async: true, fixed_chunk_size: layout.chunkBytes, use_parts: true } };
  }
  // Range requests through the read-ahead block cache (as a page cache would), so a guest's
  // sequential reads cost a few large requests instead of one per read.
  const openBase = (name: string): Promise<Backend> => (layout.kind === 'qcow2-range' ? openHttpBackend(name) : openSplitBackend(name));
  const overlay = await Qcow2Image.create(createMemoryBackend(0), {
    virtualSize: layout.virtualBytes,
    backingFile: layout.url,
    backingFormat: 'qcow2',
    openBacking: openBase,
  });
  const disk = toV86Disk(overlay);
  return { hda: disk, disk };
}

async function run(request: BootRequest): Promise<BootResult> {
  const { hda, disk } = await diskFor(request.layout);
  const diskReads: DiskReadStats = { count: 0, bytes: 0, waitMs: 0, maxWaitMs: 0 };
  if (disk !== undefined) countReads(disk, diskReads);
  const started = performance.now();
  const emulator = new V86(guestOptions(guestFilesAt(request.assets), request.cmdline, hda));
  try {
    const { matched } = await waitForGuestLine(emulator, /^READY/, request.timeoutMs);
    return { readyMs: performance.now() - started, ready: matched, ...(disk === undefined ? {} : { diskReads }) };
  } finally {
    await emulator.destroy();
    await disk?.close();
  }
}

(window as unknown as { v86Boot: unknown }).v86Boot = { run };
