// SPDX-License-Identifier: MIT
// Running this package's CLI and qemu-img side by side in a test's directory, to compare their
// output and exit codes, and judging an image with qemu-img check.
import { expect } from 'vitest';
import { main } from '../../bindings/cli/main.js';
import { qemuCheck, qemuImg } from './qemu.js';

/** What one CLI run printed and returned. */
export interface CliRun { code: number; stdout: string; stderr: string }

/** Runs this package's CLI in-process with `args`, relative names starting at `dir`. */
export async function runOurCli(dir: string, args: string[]): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { cwd: dir, stdout: (t) => { stdout += t; }, stderr: (t) => { stderr += t; } });
  return { code, stdout, stderr };
}

/** Runs qemu-img with `args` in `dir`; `renamed` puts this CLI's name where qemu-img prints its own. */
export function runQemuImg(dir: string, args: string[], renamed = false): CliRun {
  const result = qemuImg(args, dir);
  const rename = (text: string) => (renamed ? text.replaceAll('qemu-img', 'qcow2-wasm') : text);
  return { code: result.code, stdout: rename(result.stdout), stderr: rename(result.stderr) };
}

/** Asserts that qemu-img check finds `path` clean: no corruptions, no leaks, no check errors. */
export function expectQemuClean(path: string, what: string): void {
  const r = qemuCheck(path);
  expect({ exitCode: r.exitCode, corruptions: r.corruptions ?? 0, leaks: r.leaks ?? 0, checkErrors: r['check-errors'] }, `${what}: qemu-img check`)
    .toEqual({ exitCode: 0, corruptions: 0, leaks: 0, checkErrors: 0 });
}
