// SPDX-License-Identifier: MIT
// The v86 boot benchmark page: boots the Linux guest (kernel and initramfs from
// scripts/v86-linux/build.sh) in v86 with its root file system disk served over HTTP in one of the
// layouts bench/v86-boot.ts compares, and measures the time to the guest's "QW READY" line. The
// bench opens it in a Chromium of its own for each boot, with the BootRequest as JSON in the URL's
// fragment, and the page POSTs its BootOutcome to /__v86boot/result: no driver or DevTools session
// watches the boot, so the browser does no work for one.

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
  | { kind: 'qcow2-parts'; url: string; virtualBytes: number }
  /**
   * The raw disk fetched whole into the page before the clock starts and given to v86 as an
   * ArrayBuffer: every guest read is answered at once, so it is the floor no disk can go below.
   */
  | { kind: 'memory'; url: string };

/** One boot. `assets` is the URL prefix of bios.bin, v86.wasm, bzImage and initramfs.cpio. */
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
  /**
   * From the V86 constructor to the guest's DISK line: its kernel booted from the initramfs and its
   * disk driver found the disk. Up to here the guest has read only the partition table, so the
   * time after it is the part of the boot that its disk reads can shorten.
   */
  diskFoundMs: number;
  /** The guest's disk reads as v86's IDE controller saw them (every layout). */
  diskReads: DiskReadStats;
}

/** What the guest's disk reads cost: how many, their bytes, and how long the guest waited. */
export interface DiskReadStats {
  count: number;
  bytes: number;
  /** Sum over reads of the time from the IDE command's start to its data (zero when answered at once). */
  waitMs: number;
  /** The slowest read. */
  maxWaitMs: number;
  /** Reads answered in the same turn of the event loop as they started (from a cache, no wait). */
  answeredAtOnce: number;
}

/**
 * Counts every disk read of `emulator` into `stats`, from v86's IDE events: a read starts when
 * the controller asks the disk for data and ends when the data is there, so the time between is
 * what the guest waited, whichever disk object answered.
 */
function countReads(emulator: V86, stats: DiskReadStats): void {
  let started: number | undefined;
  let sameTurn = false; // true from a read's start until the microtasks after it run
  emulator.add_listener('ide-read-start', () => {
    started = performance.now();
    sameTurn = true;
    queueMicrotask(() => { sameTurn = false; });
  });
  emulator.add_listener('ide-read-end', (args: [channel: number, bytes: number, sectors: number]) => {
    if (started === undefined) return;
    const waited = performance.now() - started;
    started = undefined;
    stats.count++;
    stats.bytes += args[1];
    stats.waitMs += waited;
    stats.maxWaitMs = Math.max(stats.maxWaitMs, waited);
    if (sameTurn) stats.answeredAtOnce++;
  });
}

/** The hda option for `layout`, and the adapter to close afterwards (none for v86's own disks). */
async function diskFor(layout: Exclude<BootLayout, { kind: 'memory' }>): Promise<{ hda: unknown; disk?: V86Disk }> {
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

/** The whole of `url`'s body. */
async function fetchWhole(url: string): Promise<ArrayBuffer> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.arrayBuffer();
}

async function run(request: BootRequest): Promise<BootResult> {
  const { layout } = request;
  // The memory layout's bytes arrive before the clock starts. For the others the clock includes
  // opening the image (the qcow2 layouts fetch its header and tables first; v86's own loader has
  // nothing to open).
  const memoryBytes = layout.kind === 'memory' ? await fetchWhole(layout.url) : undefined;
  const started = performance.now();
  const { hda, disk } = layout.kind === 'memory' ? { hda: { buffer: memoryBytes }, disk: undefined } : await diskFor(layout);
  const diskReads: DiskReadStats = { count: 0, bytes: 0, waitMs: 0, maxWaitMs: 0, answeredAtOnce: 0 };
  const emulator = new V86(guestOptions(guestFilesAt(request.assets), request.cmdline, hda));
  countReads(emulator, diskReads);
  try {
    const { matched, lines, linesAtMs } = await waitForGuestLine(emulator, /^READY/, request.timeoutMs);
    const readyMs = performance.now() - started;
    const diskLine = lines.findIndex((line) => line.startsWith('DISK'));
    if (diskLine < 0) throw new Error(`the guest reported READY without a DISK line first: ${lines.join(' | ')}`);
    return { readyMs, ready: matched, diskFoundMs: linesAtMs[diskLine] - started, diskReads };
  } finally {
    await emulator.destroy();
    await disk?.close();
  }
}

/** What the page POSTs to /__v86boot/result: the boot's result, or why it failed. */
export type BootOutcome = { result: BootResult } | { error: string };

async function report(outcome: BootOutcome): Promise<void> {
  await fetch('/__v86boot/result', { method: 'POST', body: JSON.stringify(outcome) });
}

const fragment = decodeURIComponent(location.hash.slice(1));
if (fragment === '') throw new Error('this page boots what its URL fragment asks for (JSON): npm run bench:v86-boot opens it so');
const request = JSON.parse(fragment) as BootRequest;
run(request).then((result) => report({ result }), (error: unknown) => report({ error: error instanceof Error ? error.stack ?? error.message : String(error) }));
