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

import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createImageFile } from '../bindings/node.js';
import { toV86Disk } from '../bindings/v86.js';
import type { BlockImage } from '../bindings/image.js';
import { convertToRaw, hasQemuImg, qemuCheck } from './helpers/qemu.js';

const MiB = 1024 * 1024;
const DISK_BYTES = 64 * MiB;
const BIOS_PATH = process.env.SEABIOS_PATH ?? '/usr/share/seabios/bios.bin';
const GUEST_DIR = fileURLToPath(new URL('../build/v86-linux/', import.meta.url));
/** A boot takes tens of seconds on an idle 2-core machine; a loaded one is several times slower. */
const BOOT_TIMEOUT_MS = 480_000;
const TEST_TIMEOUT_MS = BOOT_TIMEOUT_MS + 60_000;

function isCi(): boolean {
  const ci = process.env.CI;
  return ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false';
}

function hasTool(tool: string, args: string[]): boolean {
  const result = spawnSync(tool, args, { encoding: 'utf8' });
  return result.error === undefined;
}

/** What the guest boots need and is missing on this machine, if anything. */
function missingForLinuxGuest(): string | undefined {
  for (const file of ['bzImage', 'initramfs.cpio.gz', 'guest.json']) {
    if (!existsSync(join(GUEST_DIR, file))) {
      return `${join(GUEST_DIR, file)} not found (run scripts/v86-linux/download.sh and scripts/v86-linux/build.sh, as .ci/run does)`;
    }
  }
  if (!existsSync(BIOS_PATH)) return `${BIOS_PATH} not found (install Debian's seabios package)`;
  if (!hasQemuImg()) return 'qemu-img not found on PATH (install qemu-utils)';
  if (!hasTool('e2fsck', ['-V']) || !hasTool('debugfs', ['-V'])) return 'e2fsck/debugfs not found on PATH (install e2fsprogs)';
  return undefined;
}

/** `describe` for the guest boots: skips loudly when something is missing, fails instead where CI is set. */
function describeWithLinuxGuest(name: string, body: () => void): void {
  const missing = missingForLinuxGuest();
  if (missing === undefined) {
    describe(name, body);
  } else if (isCi()) {
    describe(name, () => {
      it('has the guest, SeaBIOS, qemu-img and e2fsprogs (required where CI is set)', () => { throw new Error(`${name}: ${missing}`); });
    });
  } else {
    console.warn(`\n*** SKIPPING ${name}: ${missing}. These boot a Linux guest in the real v86 emulator. ***\n`);
    describe.skip(name, body);
  }
}

// ---------------------------------------------------------------------------------------------
// The files the guest writes, computed from the rules in scripts/v86-linux/init.
// ---------------------------------------------------------------------------------------------

/** The numbers 1 to 10000, one per line (busybox `seq 1 10000`). */
const PATTERN = Array.from({ length: 10_000 }, (_, i) => `${i + 1}\n`).join('');

/** Chunks first..end-1: each the line "chunk N" and then the pattern. */
const chunks = (first: number, end: number): string =>
  Array.from({ length: end - first }, (_, i) => `chunk ${first + i}\n${PATTERN}`).join('');

/** The file tree after a fresh boot: path relative to the file system's root, and content. */
function freshFiles(): Map<string, string> {
  const files = new Map<string, string>([
    ['small.txt', 'qcow2-wasm v86 guest\n'],
    ['seq.txt', PATTERN],
    ['big.txt', chunks(0, 60)],
  ]);
  for (let i = 1; i <= 24; i++) files.set(`dir/f${i}`, `file ${i}\n${PATTERN.slice(0, i * 300)}`);
  return files;
}

/** The file tree after the overlay boot changed the fresh one. */
function extendedFiles(): Map<string, string> {
  const files = freshFiles();
  files.set('seq.txt', PATTERN + PATTERN);
  files.delete('dir/f7');
  files.set('added.txt', chunks(60, 80));
  return files;
}

const sha256 = (data: string | Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** SHA256SUMS as the guest writes it: `sha256sum` lines for ./PATH, sorted bytewise. */
function sumsFile(files: Map<string, string>): string {
  return [...files.keys()].map((path) => `./${path}`).sort()
    .map((path) => `${sha256(files.get(path.slice(2))!)}  ${path}\n`).join('');
}

/** Every file the host expects on the guest's file system, SHA256SUMS included. */
function withSums(files: Map<string, string>): Map<string, string> {
  return new Map([...files, ['SHA256SUMS', sumsFile(files)]]);
}

// ---------------------------------------------------------------------------------------------
// Booting, and reading the file system back on the host.
// ---------------------------------------------------------------------------------------------

interface GuestRun {
  /** The guest's report lines, without the "QW " prefix and the "(at N s)" time. */
  report: string[];
  /** From the V86 constructor to "QW DONE". */
  elapsedMs: number;
}

/** Boots the guest with `image` as hda in qw.mode=`mode` until it reports DONE or FAIL. */
async function bootGuest(image: BlockImage, mode: 'fresh' | 'extend'): Promise<GuestRun> {
  const { V86 } = await import('v86');
  const guest = JSON.parse(readFileSync(join(GUEST_DIR, 'guest.json'), 'utf8')) as { kernelArgs: string };
  const v86Build = dirname(createRequire(import.meta.url).resolve('v86'));
  const disk = toV86Disk(image);
  const bytesOf = (path: string) => ({ buffer: new Uint8Array(readFileSync(path)).buffer });
  const started = performance.now();
  const emulator = new V86({
    wasm_path: join(v86Build, 'v86.wasm'),
    bios: bytesOf(BIOS_PATH),
    bzimage: bytesOf(join(GUEST_DIR, 'bzImage')),
    initrd: bytesOf(join(GUEST_DIR, 'initramfs.cpio.gz')),
    cmdline: `${guest.kernelArgs} qw.mode=${mode}`,
    hda: disk,
    memory_size: 128 * MiB,
    vga_memory_size: 2 * MiB,
    autostart: true,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
  } as ConstructorParameters<typeof V86>[0]);
  let serial = '';
  try {
    const finished = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), BOOT_TIMEOUT_MS);
      emulator.add_listener('serial0-output-byte', (byte: number) => {
        serial += String.fromCharCode(byte);
        if (byte === 10 && /^QW (DONE|FAIL)|Kernel panic/m.test(serial)) {
          clearTimeout(timer);
          resolve(true);
        }
      });
    });
    const elapsedMs = performance.now() - started;
    if (!finished) throw new Error(`the guest did not finish within ${BOOT_TIMEOUT_MS} ms; serial so far:\n${serial}`);
    const report = serial.split(/\r?\n/).filter((line) => line.startsWith('QW '))
      .map((line) => line.slice(3).replace(/ \(at [\d.]+ s\)$/, ''));
    if (!report.includes('DONE')) throw new Error(`the guest failed; serial:\n${serial}`);
    return { report, elapsedMs };
  } finally {
    await emulator.destroy();
    await disk.close();
  }
}

/** Runs a host tool; returns its exit code and output. */
function run(tool: string, args: string[]): { code: number; output: string } {
  const result = spawnSync(tool, args, { encoding: 'utf8', timeout: 120_000, maxBuffer: 64 * MiB });
  return { code: result.status ?? -1, output: `${result.stdout ?? ''}${result.stderr ?? ''}${result.error ? String(result.error) : ''}` };
}

/** Every regular file below `dir`, as path relative to it mapped to its bytes. */
function readTree(dir: string): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const walk = (current: string) => {
    for (const name of readdirSync(current)) {
      const full = join(current, name);
      if (statSync(full).isDirectory()) walk(full);
      else files.set(relative(dir, full), readFileSync(full));
    }
  };
  walk(dir);
  return files;
}

describeWithLinuxGuest('a Linux guest on v86 formats, fills and changes a qcow2 disk through toV86Disk', () => {
  let dir = '';
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-v86-linux-')); });
  afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

  /**
   * qemu-img check of `path` must be clean; its content, converted to raw, must pass e2fsck -fn
   * and hold exactly `expected` (debugfs rdump of the whole tree, lost+found aside).
   */
  function checkOnHost(path: string, expected: Map<string, string>, name: string): void {
    const check = qemuCheck(path);
    expect(check.exitCode).toBe(0);
    expect(check['check-errors']).toBe(0);
    expect(check.corruptions ?? 0).toBe(0);
    expect(check.leaks ?? 0).toBe(0);

    const rawPath = join(dir, `${name}.raw`);
    writeFileSync(rawPath, convertToRaw(path));
    const fsck = run('e2fsck', ['-fn', rawPath]);
    expect(fsck.code, fsck.output).toBe(0);

    const dumpDir = join(dir, `${name}-files`);
    rmSync(dumpDir, { recursive: true, force: true });
    mkdirSync(dumpDir);
    const dump = run('debugfs', ['-R', `rdump / ${dumpDir}`, rawPath]);
    expect(dump.code, dump.output).toBe(0);
    const actual = readTree(dumpDir);
    const listed = [...actual.keys()].filter((path) => !path.startsWith('lost+found')).sort();
    expect(listed).toEqual([...expected.keys()].sort());
    for (const [path, content] of expected) {
      expect(sha256(actual.get(path)!), `${name}: ${path}`).toBe(sha256(content));
    }
    rmSync(rawPath);
  }

  it('fresh image: the guest makes ext4, writes, remounts and verifies; the host reads the same files back', async () => {
    const path = join(dir, 'fresh.qcow2');
    const image = await createImageFile(path, { virtualSize: DISK_BYTES });
    const outcome = await bootGuest(image, 'fresh');
    console.log(`v86 Linux guest, fresh: done in ${(outcome.elapsedMs / 1000).toFixed(1)} s; ${image.stats().guestWriteRequests} writes, ${image.stats().guestReadRequests} reads`);
    expect(outcome.report).toContain('VERIFIED fresh 27 files');
    expect(image.stats().guestWriteRequests).toBeGreaterThan(0);
    checkOnHost(path, withSums(freshFiles()), 'fresh');
  }, TEST_TIMEOUT_MS);

  it('overlay over the filled image: the guest verifies, changes and re-verifies; the base is untouched', async () => {
    const basePath = join(dir, 'fresh.qcow2');
    expect(existsSync(basePath), 'the fresh test must run first').toBe(true);
    const baseBefore = sha256(readFileSync(basePath));
    const path = join(dir, 'overlay.qcow2');
    const image = await createImageFile(path, { virtualSize: DISK_BYTES, backingFile: 'fresh.qcow2', backingFormat: 'qcow2' });
    const outcome = await bootGuest(image, 'extend');
    console.log(`v86 Linux guest, overlay: done in ${(outcome.elapsedMs / 1000).toFixed(1)} s; ${image.stats().guestWriteRequests} writes, ${image.stats().guestReadRequests} reads`);
    expect(outcome.report).toContain('VERIFIED previous 27 files');
    expect(outcome.report).toContain('VERIFIED extend 27 files');
    checkOnHost(path, withSums(extendedFiles()), 'overlay');
    expect(sha256(readFileSync(basePath))).toBe(baseBefore);
    checkOnHost(basePath, withSums(freshFiles()), 'base');
  }, TEST_TIMEOUT_MS);
});
