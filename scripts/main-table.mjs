// SPDX-License-Identifier: MIT
// The README's figure table, made from the main job's results file (bench/results/main.json,
// written by `npm start`). `node scripts/main-table.mjs` prints it; `--write` puts it into
// README.md between the `<!-- main-table -->` markers. test/readme.test.ts checks they agree.
import { readFileSync, writeFileSync } from 'node:fs';

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

/** The markdown table (with its provenance line) for one parsed main.json. */
export function mainTable(results) {
  const lines = [
    `From \`npm start\` at revision ${results.revision}, ${results.date.slice(0, 10)}: ${results.machine.coreCount} vCPU ` +
      `${results.machine.cpuModel}, Node ${results.machine.node.replace(/^v/, '')}, ${results.qemu ?? 'no qemu-img'}; ` +
      `medians of ${results.rounds} rounds of ${results.streamBytes / 2 ** 20} MiB. The machine was shared, so compare within the table.`,
    '',
    '| workload | host bytes written / guest byte | backing bytes read / guest byte | host writes / request | MB/s | vs qemu-img bench |',
    '|:--|--:|--:|--:|--:|--:|',
  ];
  for (const [name, workload] of Object.entries(results.workloads)) {
    const qemuMbPerSecond = workload.qemuMbPerSecond;
    for (const [mode, runs] of Object.entries(workload.runs)) {
      const mbPerSecond = workload.mbPerSecond[mode];
      lines.push(`| ${name}: ${mode} | ` +
        `${median(runs.map((r) => r.hostWriteBytes / r.guestBytes)).toFixed(3)} | ` +
        `${median(runs.map((r) => r.backingReadBytes / r.guestBytes)).toFixed(3)} | ` +
        `${median(runs.map((r) => r.hostWriteCalls / r.requests)).toFixed(4)} | ` +
        `${mbPerSecond.toFixed(0)} | ${qemuMbPerSecond ? `${(mbPerSecond / qemuMbPerSecond).toFixed(2)}x` : ''} |`);
    }
    if (workload.qemu) {
      const runs = workload.qemu;
      lines.push(`| ${name}: \`qemu-img bench\` | ` +
        `${median(runs.map((r) => r.writtenPerGuest)).toFixed(3)} | ${median(runs.map((r) => r.readPerGuest)).toFixed(3)} | ` +
        `${median(runs.map((r) => r.writesPerRequest)).toFixed(4)} | ${qemuMbPerSecond.toFixed(0)} | 1.00x |`);
    }
  }
  if (results.depth1) {
    const { qcow2, raw, bare, requests, rounds } = results.depth1;
    const row = (name, r) => `| ${name} | ${r.read.toFixed(1)} | ${r.write.toFixed(1)} | ` +
      `${(r.read / raw.read).toFixed(2)}x | ${(r.write / raw.write).toFixed(2)}x | ${(r.read / bare.read).toFixed(2)}x | ${(r.write / bare.write).toFixed(2)}x |`;
    lines.push('', `Depth 1 (${requests} random 4 KiB requests, each awaited before the next, in place, as an IDE controller sends them; ` +
      `openImageFile defaults; per request, the median over slices of 250 requests, the contenders taking turns slice by slice, of ${rounds} rounds):`, '',
    '| image | read µs | write µs | read vs RawImage | write vs RawImage | read vs bare syscalls | write vs bare syscalls |',
    '|:--|--:|--:|--:|--:|--:|--:|',
    row('qcow2', qcow2), row('RawImage', raw), row('bare `fs.readSync` / `fs.writeSync`', bare));
  }
  if (results.reads) {
    const { depth1, depth32, sequential, requests } = results.reads;
    const speed = (ours, theirs) => (theirs === undefined || theirs === null ? '' : `${(theirs / ours).toFixed(2)}x`);
    const row = (name, r) => `| ${name} | ${r.qcow2.toFixed(1)} | ${r.raw.toFixed(1)} | ${r.qemu === undefined || r.qemu === null ? '' : r.qemu.toFixed(1)} | ` +
      `${speed(r.qcow2, r.qemu)} | ${speed(r.qcow2, r.raw)} |`;
    lines.push('', `Reads (${requests} 4 KiB reads at the scattered offsets \`qemu-img bench -S\` visits, and 16 passes over a 64 MiB image in 1 MiB reads; ` +
      'openImageFile defaults; speed above 1.00x means qcow2 is faster):', '',
    '| pattern | qcow2 µs/request | RawImage µs/request | `qemu-img bench` µs/request | qcow2 speed vs `qemu-img bench` | qcow2 speed vs RawImage |',
    '|:--|--:|--:|--:|--:|--:|',
    row('4 KiB, depth 1', depth1), row('4 KiB, depth 32', depth32), row('1 MiB sequential, depth 1', sequential));
  }
  if (results.compressed) {
    const { diskBytes, results: byType } = results.compressed;
    const mbPerSecond = (seconds) => diskBytes / median(seconds) / 1e6;
    lines.push('', `Compressed images (64 KiB clusters, made by \`qemu-img convert -c\`): a ${diskBytes / 2 ** 20} MiB disk read whole into a raw ` +
      'file (1 MiB reads, 4 in flight) against `qemu-img convert -O raw`:', '',
    '| compression | ours MB/s | `qemu-img convert` MB/s | ours / qemu-img |', '|:--|--:|--:|--:|');
    for (const [type, entry] of Object.entries(byType)) {
      const ours = mbPerSecond(entry.oursSeconds);
      const qemu = mbPerSecond(entry.qemuSeconds);
      lines.push(`| ${type} | ${ours.toFixed(0)} | ${qemu.toFixed(0)} | ${(ours / qemu).toFixed(2)}x |`);
    }
  }
  if (results.memory) {
    const mib = (bytes) => (bytes / 2 ** 20).toFixed(2);
    lines.push('', `A 1 TiB image with the default cache, after ${results.memory.requests} scattered 4 KiB reads and as many writes: ` +
      `${mib(results.memory.coreMemoryBytes)} MiB of wasm memory, ${mib(results.memory.rssGrowthBytes)} MiB of process resident set growth.`);
  }
  return lines.join('\n');
}

const BEGIN = '<!-- main-table -->';
const END = '<!-- /main-table -->';

/** `readme` with the text between the markers replaced by `table`. */
export function withTable(readme, table) {
  const begin = readme.indexOf(BEGIN);
  const end = readme.indexOf(END);
  if (begin < 0 || end < begin) throw new Error(`README.md has no ${BEGIN} ... ${END} markers`);
  return `${readme.slice(0, begin + BEGIN.length)}\n${table}\n${readme.slice(end)}`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const table = mainTable(JSON.parse(readFileSync('bench/results/main.json', 'utf8')));
  if (process.argv.includes('--write')) writeFileSync('README.md', withTable(readFileSync('README.md', 'utf8'), table));
  else console.log(table);
}
