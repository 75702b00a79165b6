// SPDX-License-Identifier: MIT
// The Linux guest of scripts/v86-linux on the host side of the tests: where its build is, what a
// boot needs, the files the guest writes (computed from the same rules as scripts/v86-linux/init),
// and the check of an image the guest wrote: qemu-img check clean, e2fsck -fn clean, and debugfs
// reading back exactly the expected files.

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { convertToRaw, hasQemuImg, qemuCheck } from './qemu.js';

const MiB = 1024 * 1024;

/** Debian's SeaBIOS; SEABIOS_PATH overrides. */
export const BIOS_PATH = process.env.SEABIOS_PATH ?? '/usr/share/seabios/bios.bin';
/** What scripts/v86-linux/build.sh makes (bzImage, initramfs.cpio, guest.json). */
export const GUEST_DIR = fileURLToPath(new URL('../../build/v86-linux/', import.meta.url));

/** guest.json: the kernel release, its command line and the Debian packages the guest was built from. */
export interface GuestBuild {
  kernelRelease: string;
  kernelArgs: string;
  packages: string[];
}

export function readGuestBuild(): GuestBuild {
  return JSON.parse(readFileSync(join(GUEST_DIR, 'guest.json'), 'utf8')) as GuestBuild;
}

function hasTool(tool: string, args: string[]): boolean {
  return spawnSync(tool, args, { encoding: 'utf8' }).error === undefined;
}

/** What a guest boot and its host-side check need and this machine lacks (with how to get it), if anything. */
export function missingForLinuxGuest(): string | undefined {
  for (const file of ['bzImage', 'initramfs.cpio', 'guest.json']) {
    if (!existsSync(join(GUEST_DIR, file))) {
      return `${join(GUEST_DIR, file)} not found (run scripts/v86-linux/download.sh and scripts/v86-linux/build.sh, as .ci/run does)`;
    }
  }
  if (!existsSync(BIOS_PATH)) return `${BIOS_PATH} not found (install Debian's seabios package)`;
  if (!hasQemuImg()) return 'qemu-img not found on PATH (install qemu-utils)';
  if (!hasTool('e2fsck', ['-V']) || !hasTool('debugfs', ['-V'])) return 'e2fsck/debugfs not found on PATH (install e2fsprogs)';
  return undefined;
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
export function freshFiles(): Map<string, string> {
  const files = new Map<string, string>([
    ['small.txt', 'qcow2-wasm v86 guest\n'],
    ['seq.txt', PATTERN],
    ['big.txt', chunks(0, 60)],
  ]);
  for (let i = 1; i <= 24; i++) files.set(`dir/f${i}`, `file ${i}\n${PATTERN.slice(0, i * 300)}`);
  return files;
}

/** The file tree after an extend boot changed the fresh one. */
export function extendedFiles(): Map<string, string> {
  const files = freshFiles();
  files.set('seq.txt', PATTERN + PATTERN);
  files.delete('dir/f7');
  files.set('added.txt', chunks(60, 80));
  return files;
}

export const sha256 = (data: string | Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** SHA256SUMS as the guest writes it: `sha256sum` lines for ./PATH, sorted bytewise. */
function sumsFile(files: Map<string, string>): string {
  return [...files.keys()].map((path) => `./${path}`).sort()
    .map((path) => `${sha256(files.get(path.slice(2))!)}  ${path}\n`).join('');
}

/** Every file the host expects on the guest's file system, SHA256SUMS included. */
export function withSums(files: Map<string, string>): Map<string, string> {
  return new Map([...files, ['SHA256SUMS', sumsFile(files)]]);
}

// ---------------------------------------------------------------------------------------------
// Reading the file system back on the host.
// ---------------------------------------------------------------------------------------------

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

/**
 * Expects the qcow2 image at `path` (its backing files beside it) to pass qemu-img check with no
 * errors, corruptions or leaks, and its guest view, converted to raw in `scratchDir`, to pass
 * e2fsck -fn and to hold exactly `expected` (debugfs rdump of the whole tree, lost+found aside).
 * `name` labels the scratch files and the assertion messages.
 */
export function expectGuestFiles(path: string, expected: Map<string, string>, scratchDir: string, name: string): void {
  const check = qemuCheck(path);
  expect(check.exitCode, `${name}: qemu-img check exit code`).toBe(0);
  expect(check['check-errors']).toBe(0);
  expect(check.corruptions ?? 0).toBe(0);
  expect(check.leaks ?? 0).toBe(0);

  const rawPath = join(scratchDir, `${name}.raw`);
  writeFileSync(rawPath, convertToRaw(path));
  const fsck = run('e2fsck', ['-fn', rawPath]);
  expect(fsck.code, fsck.output).toBe(0);

  const dumpDir = join(scratchDir, `${name}-files`);
  rmSync(dumpDir, { recursive: true, force: true });
  mkdirSync(dumpDir);
  const dump = run('debugfs', ['-R', `rdump / ${dumpDir}`, rawPath]);
  expect(dump.code, dump.output).toBe(0);
  const actual = readTree(dumpDir);
  const listed = [...actual.keys()].filter((file) => !file.startsWith('lost+found')).sort();
  expect(listed).toEqual([...expected.keys()].sort());
  for (const [file, content] of expected) {
    expect(sha256(actual.get(file)!), `${name}: ${file}`).toBe(sha256(content));
  }
  rmSync(rawPath);
}
