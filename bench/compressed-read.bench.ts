// SPDX-License-Identifier: MIT
// Reading compressed images (`npm run bench:compressed`): runCompressedReads (compressed-read.ts)
// on a 256 MiB disk, 3 rounds, medians. Needs qemu-img. `--quick`: 64 MiB, one round. Writes
// bench/results/compressed-read.json.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCompressedReads } from './compressed-read.js';
import { compressedTable } from './reads-table.js';
import { machineLine, runProvenance, withTempDir } from './harness.js';

const MIB = 1024 * 1024;
const QUICK = process.argv.includes('--quick');
const DISK_BYTES = (QUICK ? 64 : 256) * MIB;
const ROUNDS = QUICK ? 1 : 3;

async function main(): Promise<void> {
  const provenance = runProvenance();
  console.log(`compressed reads: a ${DISK_BYTES / MIB} MiB disk, 64 KiB clusters, compressed by qemu-img convert -c, read whole into a raw file`);
  console.log(`${machineLine()}; revision ${provenance.revision}`);
  console.log(provenance.qemu ?? 'qemu-img is missing: apt-get install qemu-utils');
  const result = await withTempDir('qcow2-wasm-compressed-', (dir) => runCompressedReads(dir, DISK_BYTES, ROUNDS));
  compressedTable(result);
  mkdirSync(join('bench', 'results'), { recursive: true });
  writeFileSync(join('bench', 'results', 'compressed-read.json'),
    `${JSON.stringify({ bench: 'compressed-read', ...provenance, ...result }, null, 2)}\n`);
}

await main();
