// SPDX-License-Identifier: MIT
// The npm package as a consumer gets it: `npm pack` (scripts off: the tarball takes the dist/
// and build/ that `npm test` has just built) holds the built entry points with their types,
// the wasm core, the command, README, LICENSE and docs, and nothing of the tests, benchmarks or
// sources; the installed command runs (a convert there and back); and a consumer's TypeScript
// finds the types of every entry point under moduleResolution node10, bundler and nodenext.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = fileURLToPath(new URL('..', import.meta.url));
const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  dependencies: Record<string, string>;
  scripts: Record<string, string>;
  sideEffects: string[];
};
const ENTRIES = ['index', 'node', 'browser', 'deno', 'v86'];

function run(command: string, args: string[], cwd: string): { status: number | null; output: string } {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

/** Whether the entry point's source runs a statement when imported (e.g. installs the platform's decoders). */
function runsCodeOnImport(entry: string): boolean {
  const path = join(root, 'bindings', `${entry}.ts`);
  const source = ts.createSourceFile(path, readFileSync(path, 'utf8'), ts.ScriptTarget.ES2022);
  return source.statements.some((statement) => ts.isExpressionStatement(statement));
}

describe('package.json sideEffects', () => {
  it('lists exactly the entry points that run code when imported, so no bundler drops their setup', () => {
    const expected = ENTRIES.filter(runsCodeOnImport).map((entry) => `./dist/bindings/${entry}.js`);
    expect(expected).toContain('./dist/bindings/browser.js');
    expect([...manifest.sideEffects].sort()).toEqual(expected.sort());
  });
});

describe('npm package', () => {
  let files: string[] = [];
  let scratch = '';

  beforeAll(() => {
    const packed = run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], root);
    expect(packed.status, packed.output).toBe(0);
    files = (JSON.parse(packed.output.slice(packed.output.indexOf('['))) as [{ files: { path: string }[] }])[0]
      .files.map((file) => file.path);
    scratch = mkdtempSync(join(tmpdir(), 'qcow2-wasm-package-'));
    const tarball = run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', scratch], root);
    expect(tarball.status, tarball.output).toBe(0);
    const filename = (JSON.parse(tarball.output.slice(tarball.output.indexOf('['))) as [{ filename: string }])[0].filename;
    const extracted = run('tar', ['-xzf', join(scratch, filename), '-C', scratch], scratch);
    expect(extracted.status, extracted.output).toBe(0);
    // Consumers' projects live under scratch/, beside node_modules/ holding the package (as
    // installed) and its dependencies and @types from this repository.
    const modules = join(scratch, 'node_modules');
    mkdirSync(modules);
    renameSync(join(scratch, 'package'), join(modules, 'qcow2-wasm'));
    for (const dependency of [...Object.keys(manifest.dependencies), '@types']) {
      if (dependency.includes('/')) mkdirSync(join(modules, dependency.slice(0, dependency.indexOf('/'))), { recursive: true });
      symlinkSync(join(root, 'node_modules', dependency), join(modules, dependency));
    }
  }, 120_000);

  afterAll(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('holds every entry point built, with types, the wasm core, the command and its code cache, README, LICENSE', () => {
    for (const entry of ENTRIES) {
      expect(files).toContain(`dist/bindings/${entry}.js`);
      expect(files).toContain(`dist/bindings/${entry}.d.ts`);
    }
    for (const file of ['build/core.wasm', 'bin/qcow2-wasm.js', 'dist/cli/qcow2-wasm.cjs', 'dist/cli/qcow2-wasm.cjs.cache', 'README.md', 'LICENSE', 'package.json', 'docs/api-guide.md']) {
      expect(files).toContain(file);
    }
  });

  it('holds no tests, benchmarks, sources or source maps without their sources', () => {
    const stray = files.filter((file) => /^(test|bench|assembly|bindings|scripts|examples|dist\/bench|\.ci)\//.test(file) ||
      file.endsWith('.map') || file.endsWith('.ts') && !file.endsWith('.d.ts'));
    expect(stray).toEqual([]);
  });

  it('installs a command that runs: its version, and a convert to qcow2 and back to raw', () => {
    const bin = join(scratch, 'node_modules', 'qcow2-wasm', 'bin', 'qcow2-wasm.js');
    const version = run(process.execPath, [bin, '--version'], scratch);
    expect(version.output).toBe(`qcow2-wasm version ${(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version}\n`);
    const disk = new Uint8Array(3 << 20);
    for (let i = 0; i < 1 << 20; i++) disk[i] = (i * 7) >> 3; // data, then 2 MiB of zeros
    writeFileSync(join(scratch, 'disk.raw'), disk);
    for (const args of [['-f', 'raw', '-O', 'qcow2', 'disk.raw', 'disk.qcow2'], ['-f', 'qcow2', '-O', 'raw', 'disk.qcow2', 'back.raw']]) {
      const converted = run(process.execPath, [bin, 'convert', ...args], scratch);
      expect(converted.status, converted.output).toBe(0);
    }
    expect(readFileSync(join(scratch, 'disk.qcow2')).subarray(0, 4).toString('latin1')).toBe('QFI\xfb');
    expect(new Uint8Array(readFileSync(join(scratch, 'back.raw')))).toEqual(disk);
  }, 60_000);

  it('runs no build in a consumer\'s install', () => {
    // npm runs `prepare` for a local `npm install` and a git dependency, never for a registry
    // install; install-time scripts would run for every consumer.
    for (const hook of ['preinstall', 'install', 'postinstall']) expect(manifest.scripts[hook]).toBeUndefined();
  });

  it.each([
    ['node10', { module: 'commonjs', moduleResolution: 'node10' }, {}],
    ['bundler', { module: 'esnext', moduleResolution: 'bundler' }, {}],
    ['nodenext', { module: 'nodenext', moduleResolution: 'nodenext' }, { type: 'module' }],
  ])('types resolve for a consumer under moduleResolution %s', (name, compilerOptions, consumerManifest) => {
    const project = join(scratch, name);
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, ...consumerManifest }));
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { ...compilerOptions, target: 'ES2022', lib: ['ES2022', 'DOM'], types: ['node'], strict: true, noEmit: true },
      files: ['consumer.ts'],
    }));
    writeFileSync(join(project, 'consumer.ts'), [
      "import { Qcow2Image, createMemoryBackend, type BlockImage } from 'qcow2-wasm';",
      "import { openImageFile } from 'qcow2-wasm/node';",
      "import { openOpfsBackend } from 'qcow2-wasm/browser';",
      "import { openDenoBackend } from 'qcow2-wasm/deno';",
      "import { toV86Disk } from 'qcow2-wasm/v86';",
      'export async function use(): Promise<number> {',
      '  const image: BlockImage = await Qcow2Image.create(createMemoryBackend(), { virtualSize: 1 << 20 });',
      '  // The types are real, not any: this line must be an error.',
      '  // @ts-expect-error',
      '  const wrong: string = image.virtualSize;',
      '  void wrong; void openImageFile; void openOpfsBackend; void openDenoBackend;',
      '  return toV86Disk(image).byteLength;',
      '}',
      '',
    ].join('\n'));
    const compiled = run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project], project);
    expect(compiled.output).toBe('');
    expect(compiled.status).toBe(0);
  }, 120_000);
});
