// SPDX-License-Identifier: MIT
// The layers of bindings/ as the imports draw them: every folder imports only from its own folder
// and from the folders below it, so the structure of the code shows the house (base at the
// bottom; the platform entries and the CLI on top), and every folder says what it owns.

import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const BINDINGS = path.resolve(__dirname, '../bindings');
/** Lowest first: a file may import from its own layer and the layers before it. */
const LAYERS = ['base', 'core', 'backends', 'dispatch', 'raw', 'qcow2', 'tools', 'files', 'emulators', 'entries', 'cli'];

function layerOf(relativePath: string): string {
  const folder = relativePath.split('/')[0];
  return relativePath.includes('/') ? folder : 'entries';
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return sourceFiles(full);
    return name.endsWith('.ts') ? [full] : [];
  });
}

function relativeImports(source: string): string[] {
  const specifiers: string[] = [];
  const pattern = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](\.{1,2}\/[^'"]+)['"]/g;
  for (const match of source.matchAll(pattern)) specifiers.push(match[1]);
  return specifiers;
}

describe('bindings/ layers', () => {
  const files = sourceFiles(BINDINGS).map((full) => path.relative(BINDINGS, full).split(path.sep).join('/'));

  it('knows the layer of every folder', () => {
    const unknown = [...new Set(files.map(layerOf))].filter((layer) => !LAYERS.includes(layer));
    expect(unknown).toEqual([]);
  });

  it('imports only from the same layer or the layers below', () => {
    const upward: string[] = [];
    for (const file of files) {
      const from = LAYERS.indexOf(layerOf(file));
      for (const specifier of relativeImports(readFileSync(path.join(BINDINGS, file), 'utf8'))) {
        const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier));
        if (target.startsWith('..')) {
          upward.push(`${file} imports ${specifier}, outside bindings/`);
          continue;
        }
        const to = LAYERS.indexOf(layerOf(target));
        if (to > from) upward.push(`${file} (${layerOf(file)}) imports ${target} (${layerOf(target)})`);
      }
    }
    expect(upward).toEqual([]);
  });

  it('has a README in every folder saying what it owns', () => {
    const folders = readdirSync(BINDINGS).filter((name) => statSync(path.join(BINDINGS, name)).isDirectory());
    expect(folders.sort()).toEqual(LAYERS.filter((layer) => layer !== 'entries').sort());
    for (const folder of folders) {
      const readme = path.join(BINDINGS, folder, 'README.md');
      expect(existsSync(readme), `${folder}/README.md`).toBe(true);
      expect(readFileSync(readme, 'utf8')).toMatch(new RegExp(`^# bindings/${folder}\\n\\n\\S`));
    }
  });
});
