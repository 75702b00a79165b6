// SPDX-License-Identifier: MIT
// The README's and docs/' examples run as written: every ```js block is run with Node against the
// built package (imported by its own name), and each `console.log(...); // expected` prints that.
// The README's figure table is the one scripts/main-table.mjs makes from bench/results/main.json,
// and every relative link in README.md and docs/ leads to a file that exists.

import { describe, it, expect, afterAll } from 'vitest';
import { existsSync, readFileSync, readdirSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = fileURLToPath(new URL('..', import.meta.url));
// Inside the package, so `import 'qcow2-wasm'` resolves to the package itself.
const scratch = join(root, 'test', '.readme-tmp');
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const pages = ['README.md', ...readdirSync(join(root, 'docs')).filter((name) => name.endsWith('.md')).sort().map((name) => `docs/${name}`)];
const examples = pages.flatMap((page) => [...readFileSync(join(root, page), 'utf8').matchAll(/```js\n([\s\S]*?)```/g)]
  .map((match, index) => ({ name: `${page} example ${index + 1}`, code: match[1] })));

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('README examples', () => {
  it('has examples', () => {
    expect(examples.length).toBeGreaterThan(0);
  });

  it('links only to files that exist', () => {
    const broken = pages.flatMap((page) => [...readFileSync(join(root, page), 'utf8').matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)]
      .map((match) => match[1])
      .filter((target) => !/^[a-z]+:/.test(target) && !existsSync(join(root, dirname(page), target)))
      .map((target) => `${page} -> ${target}`));
    expect(broken).toEqual([]);
  });

  it('shows the figures of bench/results/main.json', async () => {
    const { mainTable } = await import('../scripts/main-table.mjs');
    const table: string = mainTable(JSON.parse(readFileSync(join(root, 'bench', 'results', 'main.json'), 'utf8')));
    expect(readme).toContain(`<!-- main-table -->\n${table}\n<!-- /main-table -->`);
  });

  examples.forEach(({ name, code }, index) => {
    it(`${name} runs and prints what its comments say`, () => {
      mkdirSync(scratch, { recursive: true });
      const file = join(scratch, `example-${index + 1}.mjs`);
      writeFileSync(file, code);
      const stdout = execFileSync(process.execPath, [file], { cwd: root, encoding: 'utf8' });
      const expected = [...code.matchAll(/console\.log\(.*\);\s*\/\/\s*(.+)$/gm)].map((m) => m[1].trim());
      expect(expected.length).toBeGreaterThan(0);
      expect(stdout.trim().split('\n')).toEqual(expected);
    });
  });
});
