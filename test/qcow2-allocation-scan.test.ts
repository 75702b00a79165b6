// SPDX-License-Identifier: MIT
// An allocating write into an image whose first refcount block is really a data cluster (every
// cluster it covers reads as used) ends: the allocator walks the whole stretch of "used" clusters,
// loading one refcount slice after another, and resumes where it stopped after each load. Before,
// it restarted from its first candidate after every load; with more slices to walk than the cache
// holds it evicted the one it needed next and never ended, blocking the event loop. Each write
// runs in a child process (the compiled package), so a loop fails the test instead of hanging it.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildBaseImage, parseLayout, setU64 } from './helpers/hostile-images.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const WRITE_TIMEOUT_MS = 60_000;

/** Outcomes a write into such an image may have: it succeeds, or fails as corrupt. */
const ACCEPTED = ['ok', 'QCOW2_CORRUPT'];

/**
 * An image of `clusterSize` clusters with guest clusters 0 and 1 written, whose refcount table
 * entry 0 points at guest cluster 1's data cluster, filled with 0xff (refcount 0xffff everywhere).
 */
async function imageWithDataAsRefblock(clusterSize: number): Promise<Uint8Array> {
  const bytes = await buildBaseImage({ virtualSize: 4 * clusterSize, clusterSize, writtenClusters: [0, 1] });
  const layout = parseLayout(bytes);
  const data = layout.data.find((entry) => entry.guestCluster === 1)!;
  const hostOffset = Number(data.entry & 0x00fffffffffffe00n);
  bytes.fill(0xff, hostOffset, hostOffset + clusterSize);
  setU64(bytes, layout.reftableOffset, BigInt(hostOffset));
  return bytes;
}

describe('an allocating write when the first refcount block reads as all used', () => {
  let dir: string;
  beforeAll(() => {
    // The child processes run the compiled package: npm test builds it first.
    if (!existsSync(join(root, 'dist/bindings/node.js'))) throw new Error('dist/ is missing: run npm run build');
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-allocation-scan-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const cases: Array<[string, number, number | undefined]> = [
    ['64 KiB clusters, a 64 KiB metadata cache', 64 << 10, 64 << 10],
    ['2 MiB clusters, the default metadata cache', 2 << 20, undefined],
  ];
  for (const [name, clusterSize, cacheBytes] of cases) {
    it(`ends (${name})`, async () => {
      const path = join(dir, `image-${clusterSize}.qcow2`);
      writeFileSync(path, await imageWithDataAsRefblock(clusterSize));
      const script = `
        import { openNodeBackend, Qcow2Image } from ${JSON.stringify(join(root, 'dist/bindings/node.js'))};
        const image = await Qcow2Image.open(await openNodeBackend(${JSON.stringify(path)}, { writable: true }), ${JSON.stringify(cacheBytes === undefined ? {} : { cacheBytes })});
        let outcome = 'ok';
        try { await image.write(${3 * clusterSize}, new Uint8Array(4096).fill(7)); } catch (error) { outcome = error.code ?? String(error); }
        await image.close().catch(() => {});
        console.log(outcome);`;
      const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: WRITE_TIMEOUT_MS });
      expect(run.signal, `the write did not end within ${WRITE_TIMEOUT_MS} ms: the process had to be killed`).toBeNull();
      expect(run.status, run.stderr).toBe(0);
      expect(ACCEPTED, `outcome: ${run.stdout}`).toContain(run.stdout.trim());
    }, WRITE_TIMEOUT_MS + 10_000);
  }
});
