// SPDX-License-Identifier: MIT
// The wasm boundary (bindings/core/wasm.ts): the TypeScript view of the core's exports
// (bindings/core/wasm-core.generated.ts) is what assembly/ compiles to today, the module the bindings
// load matches it export for export, a core built from other sources is refused with
// INVALID_ARGUMENT, and no other bindings file types or reads the exports by hand.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CORE_CONSTANTS, CORE_ENUMS, CORE_FUNCTION_ARITY } from '../bindings/core/wasm-core.generated.js';
import { coreGlobal, init, instantiateCore } from '../bindings/core/wasm.js';
import { ImageError } from '../bindings/base/errors.js';

const root = join(import.meta.dirname, '..');
const scratch = mkdtempSync(join(tmpdir(), 'qcow2-wasm-boundary-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Every export of a compiled core module by kind, with function arities and global values. */
function exportsOf(bytes: Uint8Array): { functions: Map<string, number>; globals: Map<string, number> } {
  const module = new WebAssembly.Module(bytes);
  const memory = new WebAssembly.Memory({ initial: 32, maximum: 32 });
  const instance = new WebAssembly.Instance(module, { env: { memory } });
  const functions = new Map<string, number>();
  const globals = new Map<string, number>();
  for (const { name, kind } of WebAssembly.Module.exports(module)) {
    const value = instance.exports[name];
    if (kind === 'function' && typeof value === 'function') functions.set(name, value.length);
    if (kind === 'global' && value instanceof WebAssembly.Global) globals.set(name, value.value as number);
  }
  return { functions, globals };
}

/** The generated declarations as maps, in the shape exportsOf returns. */
function declared(): { functions: Map<string, number>; globals: Map<string, number> } {
  const globals = new Map<string, number>(Object.entries(CORE_CONSTANTS));
  for (const [enumName, members] of Object.entries(CORE_ENUMS)) {
    for (const [member, value] of Object.entries(members)) globals.set(`${enumName}.${member}`, value);
  }
  return { functions: new Map(Object.entries(CORE_FUNCTION_ARITY)), globals };
}

describe('wasm boundary', () => {
  it('the generated declarations are what assembly/ compiles to now', () => {
    // A fresh compile of the sources, declared by the same generator: a stale generated file (or
    // a build that skipped the generator) differs from it.
    const wasm = join(scratch, 'core.wasm');
    execFileSync(process.execPath, [join(root, 'node_modules/assemblyscript/bin/asc.js'), 'assembly/index.ts', '--target', 'release',
      '--outFile', wasm, '--textFile', join(scratch, 'core.wat'), '--bindings', 'raw'], { cwd: root, stdio: 'pipe' });
    const fresh = join(scratch, 'wasm-core.generated.ts');
    execFileSync(process.execPath, [join(root, 'scripts/wasm-declarations.mjs'), wasm, join(scratch, 'core.d.ts'), fresh], { cwd: root, stdio: 'pipe' });
    expect(readFileSync(fresh, 'utf8')).toBe(readFileSync(join(root, 'bindings/core/wasm-core.generated.ts'), 'utf8'));
    const compiled = exportsOf(readFileSync(wasm));
    expect(compiled).toEqual(declared());
  }, 120_000);

  it('declares every export of the module the bindings embed, with its arity and value, and nothing else', () => {
    const embedded = exportsOf(readFileSync(join(root, 'build/core.wasm')));
    const expected = declared();
    expect([...embedded.functions.keys()].sort()).toEqual([...expected.functions.keys()].sort());
    expect(embedded.functions).toEqual(expected.functions);
    expect(embedded.globals).toEqual(expected.globals);
    // The enums TypeScript decides on are there (a rename in assembly/ fails here and in tsc).
    for (const name of ['Status', 'Region', 'RunKind', 'PlanKind', 'WriteState', 'CacheId', 'MappingCorruption', 'HeaderError', 'CreateError']) {
      expect(Object.keys(CORE_ENUMS)).toContain(name);
    }
  });

  it('refuses a core that lacks the declared exports, with INVALID_ARGUMENT naming what is missing', async () => {
    // A module that imports env.memory and exports nothing.
    const empty = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
      0x02, 0x0f, 0x01, 0x03, 0x65, 0x6e, 0x76, 0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, 0x01]);
    await init({ bytes: empty });
    try {
      const error: unknown = await instantiateCore().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ImageError);
      expect((error as ImageError).code).toBe('INVALID_ARGUMENT');
      expect((error as ImageError).message).toMatch(/lacks the function initLayout/);
    } finally {
      await init();
    }
    const core = await instantiateCore();
    expect(coreGlobal(core.exports, 'MAX_BATCH_REQUESTS')).toBe(CORE_CONSTANTS.MAX_BATCH_REQUESTS);
    expect(() => coreGlobal(core.exports, 'NO_SUCH_GLOBAL')).toThrow(/lacks the global NO_SUCH_GLOBAL/);
  });

  it('no bindings file but the boundary reads globals, types the exports by hand or imports the declarations', () => {
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) walk(path);
        else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.generated.ts') && path !== join(root, 'bindings/core/wasm.ts')) {
          const text = readFileSync(path, 'utf8');
          if (/exports as unknown as|WebAssembly\.Global|\.exports as |wasm-core\.generated/.test(text)) offenders.push(path);
        }
      }
    };
    walk(join(root, 'bindings'));
    expect(offenders).toEqual([]);
  });
});
