// SPDX-License-Identifier: MIT
// Depth-1 latency alone (`npm run bench:depth1`): the table `npm start` ends with, with more
// requests. `--quick`: 1,000 requests, one round.

import { runDepth1, type Depth1Row } from './depth1.js';
import { machineLine, printTable, runProvenance, withTempDir } from './harness.js';

const QUICK = process.argv.includes('--quick');

async function main(): Promise<void> {
  const provenance = runProvenance();
  console.log(`depth-1 latency, openImageFile defaults; ${machineLine()}; revision ${provenance.revision}`);
  const result = await withTempDir('qcow2-wasm-depth1-', (dir) => runDepth1(dir, QUICK ? 1000 : 20000, QUICK ? 1 : 5));
  // One table of the three contenders by one pair of figures (read, write) of each row.
  const table = (title: string, unit: string, pick: (r: Depth1Row) => [number, number]) => {
    console.log(`\n${title}`);
    const [rawRead, rawWrite] = pick(result.raw);
    const [bareRead, bareWrite] = pick(result.bare);
    const row = (name: string, r: Depth1Row) => {
      const [read, write] = pick(r);
      return [name, read.toFixed(1), write.toFixed(1), `${(read / rawRead).toFixed(2)}x`, `${(write / rawWrite).toFixed(2)}x`,
        `${(read / bareRead).toFixed(2)}x`, `${(write / bareWrite).toFixed(2)}x`];
    };
    printTable(['contender', `read ${unit}`, `write ${unit}`, 'read vs raw', 'write vs raw', 'read vs bare', 'write vs bare'],
      [row('Qcow2Image', result.qcow2), row('RawImage', result.raw), row('bare syscalls', result.bare)]);
  };
  table('Wall-clock time per request, the median over slices of 250 requests (the contenders take turns slice by slice)', 'µs', (r) => [r.read, r.write]);
  table('Wall-clock time per request over all slices (the mean: a burst of other load on the machine moves it)', 'µs', (r) => [r.readMean, r.writeMean]);
  table('CPU time of this process (user + system, all threads) per request', 'CPU µs', (r) => [r.readCpu, r.writeCpu]);
}

await main();
