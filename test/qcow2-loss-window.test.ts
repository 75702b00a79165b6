// SPDX-License-Identifier: MIT
// The bounded loss window: a process that writes through openImageFile with default options and
// is killed (SIGKILL) 2 s after its last write resolved, without flush() or close(), loses
// nothing: qemu-img check is clean and qemu-img compare finds every byte. The same under Deno's
// file backend. A control run with the window disabled shows the test can fail.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { describeWithQemu, qemuCheck, qemuImg } from './helpers/qemu.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const child = join(root, 'test', 'helpers', 'loss-window-child.mjs');
const nodeModule = join(root, 'dist', 'bindings', 'node.js');
const denoBin = join(root, 'node_modules', '.bin', 'deno');
const scratch = mkdtempSync(join(tmpdir(), 'qcow2-loss-window-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const MIB = 1024 * 1024;
/** How long after the last write resolved the child is killed. */
const KILL_AFTER_MS = 2000;

/** Starts the child, waits for "written", waits KILL_AFTER_MS, SIGKILLs it; rejects on early exit. */
function writeThenKill(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const proc = spawn(command, args, { cwd: root, env: { ...process.env, DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let killed = false;
    proc.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
      if (!killed && output.includes('written\n')) {
        killed = true;
        setTimeout(() => proc.kill('SIGKILL'), KILL_AFTER_MS);
      }
    });
    proc.stderr.on('data', (chunk: Buffer) => { output += chunk.toString('utf8'); });
    proc.on('error', reject);
    proc.on('close', (code, signal) => {
      if (signal === 'SIGKILL' && killed) resolve();
      else reject(new Error(`the child exited early (code ${code}, signal ${signal}):\n${output.slice(-3000)}`));
    });
  });
}

interface Layout { name: string; image: string; expected: string }

/** A 64 MiB qcow2 image made by qemu-img, fresh or as an overlay over a raw file with content. */
function makeLayout(name: string, overlay: boolean): Layout {
  const dir = mkdtempSync(join(scratch, `${name}-`));
  const image = join(dir, 'disk.qcow2');
  const expected = join(dir, 'expected.raw');
  const content = new Uint8Array(64 * MIB);
  if (overlay) {
    for (let i = 0; i < content.length; i += 4096) content.fill(1 + ((i >> 12) % 200), i, i + 4096);
    writeFileSync(join(dir, 'base.raw'), content);
  }
  writeFileSync(expected, content);
  const args = overlay ? ['-b', 'base.raw', '-F', 'raw', image] : [image, String(64 * MIB)];
  const created = qemuImg(['create', '-q', '-f', 'qcow2', ...args], dir);
  if (created.code !== 0) throw new Error(`qemu-img create: ${created.stderr}`);
  return { name, image, expected };
}

/** qemu-img check is clean (no corruption, no leak) and compare finds the expected content. */
function expectIntact(layout: Layout): void {
  const check = qemuCheck(layout.image);
  expect({ exitCode: check.exitCode, corruptions: check.corruptions ?? 0, leaks: check.leaks ?? 0 }, `qemu-img check ${layout.name}`)
    .toEqual({ exitCode: 0, corruptions: 0, leaks: 0 });
  const compare = qemuImg(['compare', '-f', 'qcow2', '-F', 'raw', layout.image, layout.expected]);
  expect(compare.code, `qemu-img compare ${layout.name}: ${compare.stdout}${compare.stderr}`).toBe(0);
}

function requireBuilt(): void {
  if (!existsSync(nodeModule)) throw new Error(`${nodeModule} is missing: run npm run build (the child process loads the built package)`);
}

describeWithQemu('the loss window: SIGKILL 2 s after the last write', () => {
  it.each([['fresh', false], ['overlay', true]] as const)('Node, %s image: check clean and every byte there', async (name, overlay) => {
    requireBuilt();
    const layout = makeLayout(`node-${name}`, overlay);
    await writeThenKill(process.execPath, [child, nodeModule, layout.image, layout.expected, '17', '64']);
    expectIntact(layout);
  }, 60_000);

  it('Deno, overlay image: check clean and every byte there', async () => {
    if (!existsSync(denoBin)) throw new Error(`${denoBin} is missing: the deno devDependency is not installed (run npm ci)`);
    const layout = makeLayout('deno-overlay', true);
    const dir = join(layout.image, '..');
    await writeThenKill(denoBin, ['run', `--config=${join(root, 'deno.json')}`, `--allow-read=${root},${dir}`, `--allow-write=${dir}`,
      child, join(root, 'bindings', 'deno.ts'), layout.image, layout.expected, '23', '64']);
    expectIntact(layout);
  }, 90_000);

  it('control: with writebackDelayMs false the same kill loses the writes', async () => {
    requireBuilt();
    const layout = makeLayout('node-control', false);
    await writeThenKill(process.execPath, [child, nodeModule, layout.image, layout.expected, '17', '64', 'no-window']);
    const compare = qemuImg(['compare', '-f', 'qcow2', '-F', 'raw', layout.image, layout.expected]);
    expect(compare.code, 'qemu-img compare exit code (1: the images differ)').toBe(1);
  }, 60_000);
});
