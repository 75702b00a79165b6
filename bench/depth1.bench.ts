// SPDX-License-Identifier: MIT
// Depth-1 latency alone (`npm run bench:depth1`): the table `npm start` ends with, with more
// requests. `--quick`: 1,000 requests, one round.

import { runDepth1 } from './depth1.js';
import { machineLine, printTable, runProvenance, withTempDir } from './harness.js';

const QUICK = process.argv.includes('--quick');

async function main(): Promise<void> {
  const provenance = runProvenance();
  console.log(`depth-1 latency, openImageFile defaults; ${machineLine()}; revision ${provenance.revision}`);
  const result = await withTempDir('qcow2-wasm-depth1-', (dir) => runDepth1(dir, QUICK ? 1000 : 20000, QUICK ? 1 : 5));
  const row = (name: string, r: { read: number; write: number }) =>
    [name, r.read.toFixed(1), r.write.toFixed(1), `${(r.read / result.raw.read).toFixed(2)}x`, `${(r.write / result.raw.write).toFixed(2)}x`,
      `${(r.read / result.bare.read).toFixed(2)}x`, `${(r.write / result.bare.write).toFixed(2)}x`];
  printTable(['contender', 'read µs', 'write µs', 'read vs raw', 'write vs raw', 'read vs bare', 'write vs bare'],
    [row('Qcow2Image', result.qcow2), row('RawImage', result.raw), row('bare syscalls', result.bare)]);
  console.log('\nCPU time of this process (user + system, all threads) per request: what a shared machine disturbs least');
  const cpuRow = (name: string, r: { readCpu: number; writeCpu: number }) =>
    [name, r.readCpu.toFixed(1), r.writeCpu.toFixed(1), `${(r.readCpu / result.raw.readCpu).toFixed(2)}x`, `${(r.writeCpu / result.raw.writeCpu).toFixed(2)}x`,
      `${(r.readCpu / result.bare.readCpu).toFixed(2)}x`, `${(r.writeCpu / result.bare.writeCpu).toFixed(2)}x`];
  printTable(['contender', 'read CPU µs', 'write CPU µs', 'read vs raw', 'write vs raw', 'read vs bare', 'write vs bare'],
    [cpuRow('Qcow2Image', result.qcow2), cpuRow('RawImage', result.raw), cpuRow('bare syscalls', result.bare)]);
}

await main();
