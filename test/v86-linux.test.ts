// SPDX-License-Identifier: MIT
// A real Linux guest on v86 with a qcow2 image as its hard disk, through toV86Disk: Debian's 686
// kernel, busybox and mke2fs in an initramfs that scripts/v86-linux/build.sh makes from Debian's
// i386 packages (downloaded by scripts/v86-linux/download.sh; .ci/run does both). The guest's
// /init (scripts/v86-linux/init) drives the disk through the kernel's ata_piix driver (DMA) and
// ext4, and reports through the serial port. Two boots: a fresh image the guest formats and
// fills, then an overlay over it that the guest changes. After each, qemu-img check must be
// clean, e2fsck -fn must find nothing, and debugfs must read back exactly the files the host
// expects (computed here from the same rules the guest uses), including the guest's own list of
// SHA-256 sums.

import { it, expect, beforeAll, afterAll } from 'vitest';
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createImageFile } from '../bindings/node.js';
import { toV86Disk } from '../bindings/v86.js';
import type { BlockImage } from '../bindings/dispatch/image.js';
import { guestOptions, waitForGuestLine, type GuestReport } from '../scripts/v86-linux/guest-serial.js';
import { describeRequiring } from './helpers/describe-requiring.js';
import {
  BIOS_PATH, GUEST_DIR, expectGuestFiles, extendedFiles, freshFiles, missingForLinuxGuest, readGuestBuild, sha256, withSums,
} from './helpers/v86-linux-guest.js';

const MiB = 1024 * 1024;
const DISK_BYTES = 64 * MiB;
/** A boot takes tens of seconds on an idle 2-core machine; a loaded one is several times slower. */
const BOOT_TIMEOUT_MS = 480_000;
const TEST_TIMEOUT_MS = BOOT_TIMEOUT_MS + 60_000;

/** What one boot reported, how long it took from the V86 constructor to "QW DONE", and v86's reads. */
interface GuestRun extends GuestReport {
  elapsedMs: number;
  /** v86's get calls, and those the adapter answered before get returned (from its read cache). */
  reads: { count: number; answeredAtOnce: number };
}

/** Boots the guest with `image` as hda in qw.mode=`mode` until it reports DONE (FAIL, a panic or the timeout reject). */
async function bootGuest(image: BlockImage, mode: 'fresh' | 'extend'): Promise<GuestRun> {
  const { V86 } = await import('v86');
  const bytesOf = (path: string) => ({ buffer: new Uint8Array(readFileSync(path)).buffer });
  const files = {
    wasmPath: join(dirname(createRequire(import.meta.url).resolve('v86')), 'v86.wasm'),
    bios: bytesOf(BIOS_PATH),
    bzimage: bytesOf(join(GUEST_DIR, 'bzImage')),
    initrd: bytesOf(join(GUEST_DIR, 'initramfs.cpio')),
  };
  const disk = toV86Disk(image);
  const reads = { count: 0, answeredAtOnce: 0 };
  const get = disk.get.bind(disk);
  disk.get = (start, len, fn, options) => {
    let returned = false;
    reads.count++;
    get(start, len, (data) => {
      if (!returned) reads.answeredAtOnce++;
      fn(data);
    }, options);
    returned = true;
  };
  const started = performance.now();
  const emulator = new V86(guestOptions(files, `${readGuestBuild().kernelArgs} qw.mode=${mode}`, disk));
  try {
    const report = await waitForGuestLine(emulator, /^DONE$/, BOOT_TIMEOUT_MS);
    return { ...report, elapsedMs: performance.now() - started, reads };
  } finally {
    await emulator.destroy();
    await disk.close();
  }
}

describeRequiring('a Linux guest on v86 formats, fills and changes a qcow2 disk through toV86Disk', missingForLinuxGuest(), () => {
  let dir = '';
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-v86-linux-')); });
  afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

  it('fresh image: the guest makes ext4, writes, remounts and verifies; the host reads the same files back', async () => {
    const path = join(dir, 'fresh.qcow2');
    const image = await createImageFile(path, { virtualSize: DISK_BYTES });
    const outcome = await bootGuest(image, 'fresh');
    console.log(`v86 Linux guest, fresh: done in ${(outcome.elapsedMs / 1000).toFixed(1)} s; ${image.stats().guestWriteRequests} writes, ${image.stats().guestReadRequests} image reads; v86 asked ${outcome.reads.count} reads, ${outcome.reads.answeredAtOnce} answered at once`);
    expect(outcome.lines).toContain('VERIFIED fresh 27 files');
    expect(outcome.reads.answeredAtOnce).toBeGreaterThan(0); // the verification read through the synchronous answers
    expect(image.stats().guestWriteRequests).toBeGreaterThan(0);
    expectGuestFiles(path, withSums(freshFiles()), dir, 'fresh');
  }, TEST_TIMEOUT_MS);

  it('overlay over the filled image: the guest verifies, changes and re-verifies; the base is untouched', async () => {
    const basePath = join(dir, 'fresh.qcow2');
    expect(existsSync(basePath), 'the fresh test must run first').toBe(true);
    const baseBefore = sha256(readFileSync(basePath));
    const path = join(dir, 'overlay.qcow2');
    const image = await createImageFile(path, { virtualSize: DISK_BYTES, backingFile: 'fresh.qcow2', backingFormat: 'qcow2' });
    const outcome = await bootGuest(image, 'extend');
    console.log(`v86 Linux guest, overlay: done in ${(outcome.elapsedMs / 1000).toFixed(1)} s; ${image.stats().guestWriteRequests} writes, ${image.stats().guestReadRequests} image reads; v86 asked ${outcome.reads.count} reads, ${outcome.reads.answeredAtOnce} answered at once`);
    expect(outcome.lines).toContain('VERIFIED previous 27 files');
    expect(outcome.lines).toContain('VERIFIED extend 27 files');
    expectGuestFiles(path, withSums(extendedFiles()), dir, 'overlay');
    expect(sha256(readFileSync(basePath))).toBe(baseBefore);
    expectGuestFiles(basePath, withSums(freshFiles()), dir, 'base');
  }, TEST_TIMEOUT_MS);
});
