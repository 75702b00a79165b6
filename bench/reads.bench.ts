// SPDX-License-Identifier: MIT
// Reads alone (`npm run bench:reads`): the read table `npm start` prints, with more requests.
// and the 1 TiB image's memory. Needs qemu-img. `--quick`: 2,000 requests, one round.

import { measureHugeImage, runReads } from './reads.js';
import { hugeImageTable, readsTable } from './reads-table.js';
import { machineLine, runProvenance, withTempDir } from './harness.js';

const QUICK = process.argv.includes('--quick');

async function main(): Promise<void> {
  const provenance = runProvenance();
  console.log(`reads, openImageFile defaults; ${machineLine()}; revision ${provenance.revision}`);
  console.log(provenance.qemu ?? 'qemu-img is missing: apt-get install qemu-utils');
  await withTempDir('qcow2-wasm-reads-', async (dir) => {
    readsTable(await runReads(dir, QUICK ? 2000 : 50000, QUICK ? 1 : 5));
    hugeImageTable(await measureHugeImage(dir, QUICK ? 2000 : 20000));
  });
}

await main();
