// SPDX-License-Identifier: MIT
// Runs the Deno test run (test/deno/run.test.ts: the Deno file backend and the core tests, through
// the vitest shim) with the npm-installed Deno and checks its JUnit report: every Deno test passed,
// every file ran tests, and no fewer ran than expected. Deno's summary is printed.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { openDenoBackend } from '../bindings/deno.js';

const root = fileURLToPath(new URL('..', import.meta.url));
/** The binary of the `deno` devDependency (npm ci installs it). */
const denoBin = join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'deno.cmd' : 'deno');
/** The files run.test.ts loads; each must pass at least one test. */
const FILES = ['vitest-shim-check', 'deno-file-backend', 'backend-memory', 'backend-wrappers', 'merge', 'multiwrite', 'multiwrite-failure',
  'raw-differential', 'qcow2-header', 'qcow2-check', 'qcow2-create'];
/** Fewer passing tests than this means part of the run silently vanished (405 today). */
const MIN_PASSED = 390;

/** One test case of Deno's JUnit report; `name` is the path of steps joined with " > ". */
interface JunitCase {
  name: string;
  outcome: 'passed' | 'failed' | 'skipped';
}

const unescapeXml = (text: string) =>
  text.replace(/&(lt|gt|quot|apos|amp);/g, (_, entity: string) => ({ lt: '<', gt: '>', quot: '"', apos: "'", amp: '&' })[entity]!);

function parseJunit(xml: string): JunitCase[] {
  const cases: JunitCase[] = [];
  for (const match of xml.matchAll(/<testcase\s+name="([^"]*)"[^>]*?(\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const body = match[3] ?? '';
    const outcome = /<(failure|error)\b/.test(body) ? 'failed' : /<skipped\b/.test(body) ? 'skipped' : 'passed';
    cases.push({ name: unescapeXml(match[1]!), outcome });
  }
  return cases;
}

/** Runs a command; resolves with its exit code and combined output. */
function run(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString('utf8'); });
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString('utf8'); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

it('passes every test of the Deno run (Deno file backend, core tests)', async () => {
  if (!existsSync(denoBin)) {
    throw new Error(`${denoBin} is missing: the deno devDependency is not installed (run npm ci). The Deno tests cannot be skipped.`);
  }
  const scratch = mkdtempSync(join(tmpdir(), 'qcow2-wasm-deno-run-'));
  try {
    const junitPath = join(scratch, 'junit.xml');
    // The tests write only below their own TMPDIR; they read the repository and that directory.
    const { code, output } = await run(denoBin, [
      'test', `--allow-read=${root},${scratch}`, `--allow-write=${scratch}`, '--allow-env=QCOW2_WASM_SEED,CI,TMPDIR',
      `--junit-path=${junitPath}`, 'test/deno/run.test.ts',
    ], { ...process.env, TMPDIR: scratch, DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1' });

    const failedLines = output.split('\n').filter((line) => /\.\.\. FAILED/.test(line));
    const summary = output.trim().split('\n').filter((line) => /^(ok|FAILED) \|/.test(line)).pop() ?? '(no summary line)';
    expect(existsSync(junitPath), `deno test wrote no JUnit report (exit ${code}):\n${output.slice(-4000)}`).toBe(true);
    const cases = parseJunit(readFileSync(junitPath, 'utf8'));
    // Leaves are the tests; steps that contain other steps are describe blocks or files.
    const leaves = cases.filter((c) => !cases.some((other) => other.name.startsWith(`${c.name} > `)));
    const count = (outcome: JunitCase['outcome'], prefix = '') =>
      leaves.filter((c) => c.outcome === outcome && (prefix === '' || c.name.startsWith(`${prefix} > `))).length;
    console.log(`Deno ${summary}\nDeno tests: ${count('passed')} passed, ${count('failed')} failed, ${count('skipped')} ignored (QEMU oracle blocks)`);

    expect(count('failed'), `failing Deno tests:\n${failedLines.join('\n')}\n${output.slice(-4000)}`).toBe(0);
    expect(code, `deno test exited with ${code}:\n${output.slice(-4000)}`).toBe(0);
    for (const file of FILES) expect(count('passed', file), `tests passed in ${file}`).toBeGreaterThan(0);
    expect(count('passed')).toBeGreaterThanOrEqual(MIN_PASSED);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}, 240_000);

it('outside Deno, openDenoBackend rejects with BACKEND_NOT_SUPPORTED', async () => {
  await expect(openDenoBackend(join(tmpdir(), 'never-opened.img'))).rejects.toMatchObject({ code: 'BACKEND_NOT_SUPPORTED' });
});
