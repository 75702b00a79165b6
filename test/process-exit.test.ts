// SPDX-License-Identifier: MIT
// A Node process that read compressed clusters exits by itself once its images are closed: the
// decoding workers never keep it alive (through the library, and through the command, whose
// verbs install the same decoders).

import { it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { describeWithQemu, qemuImg } from './helpers/qemu.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const EXIT_TIMEOUT_MS = 30_000;

describeWithQemu('processes that read compressed images exit by themselves', () => {
  let dir: string;
  beforeAll(() => {
    // The child processes run the compiled package: npm test builds it first.
    if (!existsSync(join(root, 'dist/bindings/node.js'))) throw new Error('dist/ is missing: run npm run build');
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-exit-'));
    const raw = new Uint8Array(4 << 20);
    for (let i = 0; i < raw.length; i++) raw[i] = (i >> 9) & 0x3f; // compressible, not zero
    writeFileSync(join(dir, 'flat.raw'), raw);
    for (const type of ['zlib', 'zstd']) {
      const made = qemuImg(['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `compression_type=${type}`, 'flat.raw', `${type}.qcow2`], dir);
      expect(made.code, made.stderr).toBe(0);
    }
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  for (const type of ['zlib', 'zstd']) {
    it(`the library, after reading a ${type} image whole`, () => {
      const script = `
        import { openImageFile } from ${JSON.stringify(join(root, 'dist/bindings/node.js'))};
        const image = await openImageFile(${JSON.stringify(join(dir, `${type}.qcow2`))}, { readOnly: true });
        const bytes = await image.read(0, image.virtualSize);
        await image.close();
        console.log(bytes.reduce((sum, b) => sum + b, 0));`;
      const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: EXIT_TIMEOUT_MS });
      expect(run.signal, 'the process had to be killed: it did not exit by itself').toBeNull();
      expect(run.status, run.stderr).toBe(0);
      let sum = 0;
      for (let i = 0; i < 4 << 20; i++) sum += (i >> 9) & 0x3f;
      expect(Number(run.stdout.trim())).toBe(sum);
    });

    it(`the command, comparing a ${type} image with its source`, () => {
      const run = spawnSync(process.execPath, [join(root, 'bin/qcow2-wasm.js'), 'compare', '-f', 'raw', '-F', 'qcow2', 'flat.raw', `${type}.qcow2`],
        { cwd: dir, encoding: 'utf8', timeout: EXIT_TIMEOUT_MS });
      expect(run.signal, 'the process had to be killed: it did not exit by itself').toBeNull();
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout).toBe('Images are identical.\n');
    });
  }
});
