// SPDX-License-Identifier: MIT
// The API reference (`npm run docs`, TypeDoc over the package's entry points) builds without a
// warning: every export of qcow2-wasm, qcow2-wasm/node, /browser, /deno and /v86 has a doc comment
// and every {@link} resolves (typedoc.json: notDocumented, invalidLink, warnings as errors).
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

describe('API reference', () => {
  it('builds with every export documented', () => {
    const out = mkdtempSync(join(tmpdir(), 'qcow2-wasm-api-'));
    try {
      const run = spawnSync(process.execPath, ['node_modules/typedoc/bin/typedoc', '--out', out], { encoding: 'utf8' });
      expect(run.stdout + run.stderr).not.toMatch(/warning|error\]/i);
      expect(run.status).toBe(0);
      expect(existsSync(join(out, 'index.html'))).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 180_000);
});
