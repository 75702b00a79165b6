// SPDX-License-Identifier: MIT
// The Linux guest of scripts/v86-linux booted by v86 in the page, its disk a qcow2 overlay in OPFS
// (through the library's OPFS worker) over a qcow2 base read with HTTP Range requests.
// `window.v86Linux.run(request)` boots until the guest reports DONE, closes the disk, uploads the
// overlay file with a PUT and resolves with the guest's report. test/v86-linux-chromium.test.ts
// drives it and checks the files on the host.

import { V86 } from 'v86';
import { openHttpBackend, openOpfsBackend, Qcow2Image } from '../../../bindings/browser.js';
import type { ImageStats } from '../../../bindings/dispatch/image.js';
import { toV86Disk } from '../../../bindings/v86.js';
import { guestFilesAt, guestOptions, waitForGuestLine } from '../../../scripts/v86-linux/guest-serial.js';

/** One boot. */
export interface LinuxBootRequest {
  /** URL prefix of v86.wasm, bios.bin, bzImage and initramfs.cpio. */
  assets: string;
  /** The kernel command line, qw.mode= included. */
  cmdline: string;
  /** The base image's URL; the overlay records its last path segment as its backing file name. */
  baseUrl: string;
  /** OPFS path of the overlay (created afresh). */
  overlayPath: string;
  /** Where to PUT the overlay file once the disk is closed. */
  uploadUrl: string;
  timeoutMs: number;
}

/** What one boot reported. */
export interface LinuxBootResult {
  /** The guest's report lines (without "QW " and the times). */
  lines: string[];
  /** From the V86 constructor to "QW DONE". */
  elapsedMs: number;
  /** The overlay's bytes as uploaded. */
  overlayFileBytes: number;
  stats: ImageStats;
}

/** The folder of `path` below the OPFS root (created where missing) and the file's name in it. */
async function opfsFolderOf(path: string): Promise<{ directory: FileSystemDirectoryHandle; name: string }> {
  const parts = path.split('/');
  let directory = await navigator.storage.getDirectory();
  for (const name of parts.slice(0, -1)) directory = await directory.getDirectoryHandle(name, { create: true });
  return { directory, name: parts[parts.length - 1]! };
}

async function run(request: LinuxBootRequest): Promise<LinuxBootResult> {
  const { directory, name } = await opfsFolderOf(request.overlayPath);
  await directory.removeEntry(name).catch((error: unknown) => {
    if ((error as Error).name !== 'NotFoundError') throw error;
  });
  const base = await Qcow2Image.open(await openHttpBackend(request.baseUrl), { readOnly: true });
  const virtualSize = base.virtualSize;
  await base.close();
  const backend = await openOpfsBackend(request.overlayPath, { writable: true, create: true, mode: 'worker' });
  const overlay = await Qcow2Image.create(backend, {
    virtualSize,
    backingFile: new URL(request.baseUrl).pathname.split('/').pop()!,
    backingFormat: 'qcow2',
    openBacking: (backingName) => openHttpBackend(new URL(backingName, request.baseUrl)),
  });
  const disk = toV86Disk(overlay);

  const started = performance.now();
  const emulator = new V86(guestOptions(guestFilesAt(request.assets), request.cmdline, disk));
  let lines: string[];
  try {
    ({ lines } = await waitForGuestLine(emulator, /^DONE$/, request.timeoutMs));
  } finally {
    await emulator.destroy();
    await disk.close();
  }
  const elapsedMs = performance.now() - started;
  const file = await (await directory.getFileHandle(name)).getFile();
  const upload = await fetch(request.uploadUrl, { method: 'PUT', body: file });
  if (!upload.ok) throw new Error(`PUT ${request.uploadUrl}: HTTP ${upload.status}`);
  return { lines, elapsedMs, overlayFileBytes: file.size, stats: overlay.stats() };
}

(window as unknown as { v86Linux: unknown }).v86Linux = { run };
