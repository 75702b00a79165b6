// SPDX-License-Identifier: MIT
// The convert figure table of README.md and docs/benchmarks.md, made from
// bench/results/convert.json (written by `npm run bench:convert`). `node scripts/convert-table.mjs`
// prints it; `--write` puts it into both files between the `<!-- convert-table -->` markers.
// test/convert-table.test.ts checks they agree.
import { readFileSync, writeFileSync } from 'node:fs';

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

/** The markdown table (with its provenance line) for one parsed convert.json. */
export function convertTable(results) {
  const load = results.loadAverage;
  const lines = [
    `From \`npm run bench:convert\` at revision ${results.revision}: ${results.machine.coreCount} vCPU ${results.machine.cpuModel}, ` +
      `Node ${results.versions.node.replace(/^v/, '')}, ${results.versions.qemuImg}; medians of ${results.rounds} rounds; ` +
      `1-minute load average ${load.start.toFixed(1)} at the start and ${load.end.toFixed(1)} at the end (the machine was shared: ` +
      'compare within a row). Every output is on disk when its time stops.',
    '',
    '| case | qemu-img MiB/s | CLI MiB/s | CLI vs qemu-img | library MiB/s | library vs qemu-img | output size vs qemu-img |',
    '|:--|--:|--:|--:|--:|--:|--:|',
  ];
  for (const [name, r] of Object.entries(results.results)) {
    const qemu = median(r.qemuMiBps);
    const cli = median(r.cliMiBps);
    const library = median(r.libraryMiBps);
    lines.push(`| ${name} | ${qemu.toFixed(0)} | ${cli.toFixed(0)} | ${(cli / qemu).toFixed(2)}x | ${library.toFixed(0)} | ` +
      `${(library / qemu).toFixed(2)}x | ${(r.cliBytes / r.qemuBytes).toFixed(3)}x |`);
  }
  return lines.join('\n');
}

const BEGIN = '<!-- convert-table -->';
const END = '<!-- /convert-table -->';

/** `page` with the text between the markers replaced by `table`. */
export function withConvertTable(page, table) {
  const begin = page.indexOf(BEGIN);
  const end = page.indexOf(END);
  if (begin < 0 || end < begin) throw new Error(`no ${BEGIN} ... ${END} markers`);
  return `${page.slice(0, begin + BEGIN.length)}\n${table}\n${page.slice(end)}`;
}

/** The pages that show the table. */
export const CONVERT_TABLE_PAGES = ['README.md', 'docs/benchmarks.md'];

if (import.meta.url === `file://${process.argv[1]}`) {
  const table = convertTable(JSON.parse(readFileSync('bench/results/convert.json', 'utf8')));
  if (process.argv.includes('--write')) {
    for (const page of CONVERT_TABLE_PAGES) writeFileSync(page, withConvertTable(readFileSync(page, 'utf8'), table));
  } else console.log(table);
}
