// SPDX-License-Identifier: MIT
// The convert figures of README.md and docs/benchmarks.md are the table scripts/convert-table.mjs
// makes from bench/results/convert.json (the file `npm run bench:convert` writes).

import { expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const root = fileURLToPath(new URL('..', import.meta.url));

it('README.md and docs/benchmarks.md show the figures of bench/results/convert.json', async () => {
  const { convertTable, CONVERT_TABLE_PAGES } = await import('../scripts/convert-table.mjs');
  const table: string = convertTable(JSON.parse(readFileSync(join(root, 'bench', 'results', 'convert.json'), 'utf8')));
  for (const page of CONVERT_TABLE_PAGES as string[]) {
    expect(readFileSync(join(root, page), 'utf8'), page).toContain(`<!-- convert-table -->\n${table}\n<!-- /convert-table -->`);
  }
});
