// SPDX-License-Identifier: MIT
// The qcow2-wasm command line against qemu-img 7.2 on the image zoo: create, info, map (coverage
// compared precisely, see compareMaps) and compare print what qemu-img prints and exit alike.
// Runs main() in-process with captured output; one test runs the bin launcher.

import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from '../bindings/cli/main.js';
import { parseSize, formatSize } from '../bindings/cli/sizes.js';
import { openImageFile } from '../bindings/node.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import type { BlockImage } from '../bindings/dispatch/image.js';
import { describeWithQemu, zoo, qemuImg, qemuIo, qemuCheck, type ZooImage, type QemuMapEntry } from './helpers/qemu.js';
import { expectBytes } from './helpers/bytes.js';

/** What one CLI run printed and returned. */
interface CliRun { code: number; stdout: string; stderr: string }

async function run(args: string[], cwd = process.cwd()): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { cwd, stdout: (t) => { stdout += t; }, stderr: (t) => { stderr += t; } });
  return { code, stdout, stderr };
}

const MiB = 1024 * 1024;

describe('qcow2-wasm CLI without QEMU', () => {
  it('prints help with the commands it has, and exits 0', async () => {
    const help = await run(['--help']);
    expect(help.code).toBe(0);
    for (const command of ['create', 'info', 'map', 'compare']) expect(help.stdout).toMatch(new RegExp(`^  ${command} `, 'm'));
    expect((await run(['-h'])).stdout).toBe(help.stdout);
    expect((await run(['create', '--help'])).stdout).toBe(help.stdout);
    expect((await run(['--version'])).stdout).toMatch(/^qcow2-wasm version \d+\.\d+\.\d+/);
  });

  it('answers unknown commands and options with usage and exit code 1', async () => {
    const none = await run([]);
    expect(none).toMatchObject({ code: 1, stdout: '' });
    expect(none.stderr).toMatch(/Not enough arguments\nTry 'qcow2-wasm --help'/);
    const unknown = await run(['frobnicate', 'x']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^qcow2-wasm: Command not found: frobnicate\n/);
    expect(unknown.stderr).toMatch(/Command syntax:/);
    const option = await run(['info', '--bogus', 'x']);
    expect(option.code).toBe(1);
    expect(option.stderr).toBe("qcow2-wasm: unrecognized option '--bogus'\nTry 'qcow2-wasm --help' for more information\n");
    expect((await run(['info', '-Z', 'x'])).stderr).toMatch(/unrecognized option '-Z'/);
    expect((await run(['info'])).stderr).toMatch(/Expecting one image file name/);
    expect((await run(['compare', 'a'])).stderr).toMatch(/Expecting two image file names/);
    expect((await run(['info', '--output=xml', 'x'])).stderr).toMatch(/--output must be used with human or json/);
  });

  it('reads sizes and prints them like qemu-img', () => {
    expect(parseSize('4M')).toBe(4 * MiB);
    expect(parseSize('1.5M')).toBe(1.5 * MiB);
    expect(parseSize('64k')).toBe(65536);
    expect(parseSize('2T')).toBe(2 * 2 ** 40);
    expect(parseSize('512b')).toBe(512);
    expect(parseSize('1000')).toBe(1000);
    for (const bad of ['4Q', '-5', '1.5', 'M', '', '9E']) expect(parseSize(bad), bad).toBeUndefined();
    expect(formatSize(0)).toBe('0 B');
    expect(formatSize(397312)).toBe('388 KiB');
    expect(formatSize(1638400)).toBe('1.56 MiB');
    expect(formatSize(4 * MiB)).toBe('4 MiB');
    expect(formatSize(1000 * 1024)).toBe('0.977 MiB');
    expect(formatSize(999 * 1024)).toBe('999 KiB');
    expect(formatSize(1023.9 * 1000)).toBe('1e+03 KiB');
  });

  it('runs through the bin launcher (when dist/ is built)', () => {
    const root = fileURLToPath(new URL('..', import.meta.url));
    if (!existsSync(join(root, 'dist/cli/qcow2-wasm.cjs'))) {
      console.warn('dist/cli/qcow2-wasm.cjs is missing (run npm run build): the launcher test only checks the file exists');
      expect(existsSync(join(root, 'bin/qcow2-wasm.js'))).toBe(true);
      return;
    }
    const launched = spawnSync(process.execPath, [join(root, 'bin/qcow2-wasm.js'), '--help'], { encoding: 'utf8' });
    expect(launched.status, launched.stderr).toBe(0);
    expect(launched.stdout).toMatch(/^qcow2-wasm version/);
    const failed = spawnSync(process.execPath, [join(root, 'bin/qcow2-wasm.js'), 'frobnicate'], { encoding: 'utf8' });
    expect(failed.status).toBe(1);
  });
});

/** One map entry with the fields compareMaps compares, as of a byte position. */
interface MapState { depth: number; present: boolean; zero: boolean; data: boolean; offset?: number }

/**
 * Compares qemu-img map JSON with ours byte range by byte range (entries may split differently).
 * Exact: depth, present, and for data the host offset. Normalised, where QEMU reports what the host
 * file system says rather than what the image says (mapImage's documented differences):
 * - in raw layers (`rawDepths`) QEMU marks holes of the raw file zero and not data: taken as data;
 * - a qcow2 data cluster in a hole of the host file is zero and data for QEMU: taken as not zero;
 * - offsets of ranges without data (reserved clusters of zero or unallocated subclusters) are dropped.
 */
function compareMaps(name: string, theirs: QemuMapEntry[], ours: QemuMapEntry[], rawDepths: Set<number>): void {
  const normalise = (e: QemuMapEntry): MapState => {
    let { zero, data } = e;
    if (rawDepths.has(e.depth) && e.present) { zero = false; data = true; }
    if (data) zero = false;
    return { depth: e.depth, present: e.present, zero, data, ...(data && e.offset !== undefined ? { offset: e.offset } : {}) };
  };
  const cuts = [...new Set([...theirs, ...ours].flatMap((e) => [e.start, e.start + e.length]))].sort((a, b) => a - b);
  const at = (entries: QemuMapEntry[], position: number): MapState | undefined => {
    const e = entries.find((x) => x.start <= position && position < x.start + x.length);
    if (!e) return undefined;
    const state = normalise(e);
    if (state.offset !== undefined) state.offset += position - e.start;
    return state;
  };
  expect(ours[0]?.start ?? 0, name).toBe(theirs[0]?.start ?? 0);
  for (let i = 0; i + 1 < cuts.length; i++) {
    expect(at(ours, cuts[i]), `${name}: map at guest offset ${cuts[i]}`).toEqual(at(theirs, cuts[i]));
  }
}

/** Depths of raw layers in the chain of `image`. */
function rawDepths(image: BlockImage): Set<number> {
  const depths = new Set<number>();
  for (let layer: BlockImage | undefined = image, depth = 0; layer; depth++) {
    if (layer instanceof Qcow2Image) layer = layer.backing;
    else { depths.add(depth); layer = undefined; }
  }
  return depths;
}

describeWithQemu('qcow2-wasm CLI against qemu-img', () => {
  let dir: string;
  let images: ZooImage[];
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-cli-'));
    images = zoo(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('info --output=json prints what qemu-img prints, for every zoo image', async () => {
    for (const image of images) {
      const ours = await run(['info', '--output=json', image.name], dir);
      const theirs = qemuImg(['info', '--output=json', image.name], dir);
      expect(ours.code, `${image.name}: ${ours.stderr}`).toBe(0);
      expect(JSON.parse(ours.stdout), image.name).toEqual(JSON.parse(theirs.stdout));
      expect(ours.stdout, image.name).toBe(theirs.stdout);
    }
  });

  it('check prints what qemu-img check prints, with its exit codes, and -r all repairs', async () => {
    for (const image of images.filter((i) => i.format === 'qcow2')) {
      const ours = await run(['check', image.name], dir);
      const theirs = qemuImg(['check', image.name], dir);
      expect({ code: ours.code, stdout: ours.stdout }, image.name).toEqual({ code: theirs.code, stdout: theirs.stdout });
      const json = await run(['check', '--output=json', image.name], dir);
      expect(JSON.parse(json.stdout), image.name).toEqual(JSON.parse(qemuImg(['check', '--output=json', image.name], dir).stdout));
    }
    // A crash with lazy refcounts leaves refcounts missing: exit 2, then -r all repairs it.
    expect(qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', 'crashed.qcow2', '1M'], dir).code).toBe(0);
    qemuIo(['-c', 'write -P 0x11 0 64k', '-c', 'abort', 'crashed.qcow2'], dir);
    const broken = await run(['check', 'crashed.qcow2'], dir);
    const qemuBroken = qemuImg(['check', 'crashed.qcow2'], dir);
    expect({ code: broken.code, stdout: broken.stdout, stderr: broken.stderr }).toEqual({ code: 2, stdout: qemuBroken.stdout, stderr: qemuBroken.stderr });
    const repaired = await run(['check', '-r', 'all', 'crashed.qcow2'], dir);
    expect(repaired.code, repaired.stderr).toBe(0);
    expect(qemuCheck(join(dir, 'crashed.qcow2')).exitCode).toBe(0);
  });

  it('info prints the human form qemu-img prints', async () => {
    for (const image of images) {
      const ours = await run(['info', image.name], dir);
      const theirs = qemuImg(['info', image.name], dir).stdout;
      expect(ours.stdout, image.name).toBe(theirs);
    }
    // A path with a directory: the backing file's actual path is shown, as qemu-img shows it.
    const nested = images.find((i) => i.name === 'chain_top.qcow2')!;
    const relative = `${dir.split('/').pop()}/${nested.name}`;
    const parent = join(dir, '..');
    expect((await run(['info', relative], parent)).stdout).toBe(qemuImg(['info', relative], parent).stdout);
    expect((await run(['info', '--output=json', nested.path])).stdout).toBe(qemuImg(['info', '--output=json', nested.path]).stdout);
  });

  it('info -f raw shows a qcow2 file as raw; a missing file is an error with exit code 1', async () => {
    const ours = await run(['info', '-f', 'raw', '--output=json', 'v3.qcow2'], dir);
    expect(ours.stdout).toBe(qemuImg(['info', '-f', 'raw', '--output=json', 'v3.qcow2'], dir).stdout);
    const missing = await run(['info', 'missing.qcow2'], dir);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^qcow2-wasm: Could not open 'missing.qcow2': .*ENOENT/);
  });

  it('map --output=json has the coverage qemu-img map has, for every zoo image', async () => {
    for (const image of images) {
      const ours = await run(['map', '--output=json', image.name], dir);
      expect(ours.code, `${image.name}: ${ours.stderr}`).toBe(0);
      const theirs = JSON.parse(qemuImg(['map', '--output=json', image.name], dir).stdout) as QemuMapEntry[];
      const opened = await openImageFile(image.path, { readOnly: true });
      try {
        compareMaps(image.name, theirs, JSON.parse(ours.stdout) as QemuMapEntry[], rawDepths(opened));
      } finally {
        await opened.close();
      }
    }
    // Where no difference applies, the text is qemu-img's exactly.
    for (const name of ['v3.qcow2', 'v2.qcow2', 'overlay.qcow2', 'comp_io.qcow2', 'comp_zstd.qcow2', 'c512_rb1.qcow2', 'big_cluster.qcow2']) {
      expect((await run(['map', '--output=json', name], dir)).stdout, name).toBe(qemuImg(['map', '--output=json', name], dir).stdout);
    }
  });

  it('map --start-offset/--max-length map part of the image as qemu-img does', async () => {
    const args = ['map', '--output=json', '--start-offset=100000', '--max-length=2M', 'overlay.qcow2'];
    expect((await run(args, dir)).stdout).toBe(qemuImg(args, dir).stdout);
  });

  it('map prints the human form qemu-img prints (and refuses compressed clusters like it)', async () => {
    for (const image of images) {
      if (image.format === 'raw' || ['overlay_rawbase.qcow2', 'chain_top.qcow2', 'prealloc_meta.qcow2'].includes(image.name)) continue;
      const ours = await run(['map', image.name], dir);
      const theirs = qemuImg(['map', image.name], dir);
      expect(ours.stdout, image.name).toBe(theirs.stdout);
      expect(ours.code, image.name).toBe(theirs.code);
      if (theirs.code !== 0) expect(ours.stderr, image.name).toBe(theirs.stderr.replace(/^qemu-img:/, 'qcow2-wasm:'));
    }
  });

  it('compare gives qemu-img compare\'s verdicts, offsets and exit codes', async () => {
    qemuImg(['create', '-q', '-f', 'qcow2', 'empty4m.qcow2', '4M'], dir);
    qemuImg(['create', '-q', '-f', 'qcow2', 'empty5m.qcow2', '5M'], dir);
    qemuImg(['create', '-q', '-f', 'qcow2', 'tail5m.qcow2', '5M'], dir);
    qemuIo(['-f', 'qcow2', '-c', 'write -q -P 1 4200000 1', 'tail5m.qcow2'], dir);
    qemuImg(['convert', '-O', 'qcow2', 'v3.qcow2', 'v3copy.qcow2'], dir);
    qemuIo(['-f', 'qcow2', '-c', 'write -q -P 0x77 70000 1', 'v3copy.qcow2'], dir);
    qemuImg(['convert', '-O', 'raw', 'chain_top.qcow2', 'chain.raw'], dir);
    const pairs: string[][] = [
      ['v3.qcow2', 'v2.qcow2'], ['comp_zstd.qcow2', 'comp_conv.qcow2'], ['v3.qcow2', 'src.raw'], ['overlay.qcow2', 'base.qcow2'],
      ['c512_rb1.qcow2', 'c4k_rb64.qcow2'], ['empty4m.qcow2', 'empty5m.qcow2'], ['empty4m.qcow2', 'tail5m.qcow2'],
      ['tail5m.qcow2', 'empty4m.qcow2'], ['v3.qcow2', 'v3copy.qcow2'], ['chain_top.qcow2', 'chain.raw'],
      ['overlay_rawbase.qcow2', 'src.raw'], ['xl2.qcow2', 'empty4m.qcow2'], ['-q', 'v3.qcow2', 'src.raw'],
      ['-f', 'qcow2', '-F', 'raw', 'v3.qcow2', 'src.raw'], ['-f', 'qcow2', 'base.qcow2', 'src.raw'],
      ['extdata.qcow2', 'prealloc_meta.qcow2'],
    ];
    for (const pair of pairs) {
      const ours = await run(['compare', ...pair], dir);
      const theirs = qemuImg(['compare', ...pair], dir);
      expect({ code: ours.code, stdout: ours.stdout }, pair.join(' ')).toEqual({ code: theirs.code, stdout: theirs.stdout });
    }
    const missing = await run(['compare', 'v3.qcow2', 'nope.qcow2'], dir);
    expect(missing.code).toBe(qemuImg(['compare', 'v3.qcow2', 'nope.qcow2'], dir).code);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/Could not open 'nope.qcow2'/);
  });

  it('create prints qemu-img\'s line and writes qemu-img\'s file', async () => {
    const variants: string[][] = [
      [], ['-o', 'compat=0.10'], ['-o', 'cluster_size=4k,refcount_bits=8'], ['-o', 'extended_l2=on,lazy_refcounts=on', '-o', 'compression_type=zstd'],
      ['-o', 'preallocation=metadata,cluster_size=512'], ['-o', 'compat=v3,refcount_bits=1'], ['-b', 'base.qcow2', '-F', 'qcow2'],
      ['-o', 'compat=0.10', '-b', 'src.raw', '-F', 'raw'], ['-o', 'backing_file=base.qcow2,backing_fmt=qcow2'],
    ];
    for (const [i, options] of variants.entries()) {
      for (const size of ['4M', '1.5M', '1000']) {
        const ours = await run(['create', '-f', 'qcow2', ...options, `ours${i}.qcow2`, size], dir);
        const theirs = qemuImg(['create', '-f', 'qcow2', ...options, `theirs${i}.qcow2`, size], dir);
        const what = `create ${options.join(' ')} ${size}`;
        expect(ours.code, `${what}: ${ours.stderr}`).toBe(theirs.code);
        expect(ours.stdout.replace(`ours${i}`, 'X'), what).toBe(theirs.stdout.replace(`theirs${i}`, 'X'));
        expectBytes(readFileSync(join(dir, `ours${i}.qcow2`)), readFileSync(join(dir, `theirs${i}.qcow2`)), what);
      }
    }
  });

  it('create takes the size from the backing file, makes raw files with -f raw, and is quiet with -q', async () => {
    const ours = await run(['create', '-q', '-b', 'overlay.qcow2', '-F', 'qcow2', 'sized.qcow2'], dir);
    expect(ours).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(qemuCheck(join(dir, 'sized.qcow2')).exitCode).toBe(0);
    const image = await openImageFile(join(dir, 'sized.qcow2'), { readOnly: true });
    try {
      expect(image.virtualSize).toBe(4 * MiB);
      expectBytes(await image.read(0, 4 * MiB), readOverlay(dir), 'overlay made by the CLI reads as its backing file');
    } finally {
      await image.close();
    }
    const raw = await run(['create', '-f', 'raw', 'plain.img', '3M'], dir);
    expect(raw.stdout).toBe(qemuImg(['create', '-f', 'raw', 'plain2.img', '3M'], dir).stdout.replace('plain2.img', 'plain.img'));
    expect(readFileSync(join(dir, 'plain.img')).length).toBe(3 * MiB);
  });

  it('create refuses what qemu-img refuses, with its messages and exit code 1', async () => {
    const refusals: [string[], RegExp][] = [
      [['bad.qcow2', '4Q'], /Invalid image size specified/],
      [['-o', 'cluster_size=1000', 'bad.qcow2', '1M'], /bad.qcow2: Cluster size must be a power of two between 512 and 2048k/],
      [['-o', 'foo=bar', 'bad.qcow2', '1M'], /bad.qcow2: Invalid parameter 'foo'/],
      [['-o', 'compat=1.2', 'bad.qcow2', '1M'], /Parameter 'version' does not accept value '1.2'/],
      [['-o', 'extended_l2=maybe', 'bad.qcow2', '1M'], /Parameter 'extended_l2' expects 'on' or 'off'/],
      [['-o', 'compat=0.10,lazy_refcounts=on', 'bad.qcow2', '1M'], /Lazy refcounts only supported with compatibility level 1.1/],
      [['-o', 'cluster_size=4k,extended_l2=on', 'bad.qcow2', '1M'], /at least 16384 bytes/],
      [['-o', 'backing_fmt=qcow2', 'bad.qcow2', '1M'], /Backing format cannot be used without backing file/],
      [['-o', 'preallocation=metadata', '-b', 'base.qcow2', '-F', 'qcow2', 'bad.qcow2'], /only be used at the same time if extended_l2 is on/],
      [['-b', 'base.qcow2', 'bad.qcow2', '4M'], /Backing file specified without backing format/],
      [['-b', 'nonexistent.qcow2', '-F', 'qcow2', 'bad.qcow2', '4M'], /Could not open 'nonexistent.qcow2'.*\nCould not open backing image/],
      [['bad.qcow2'], /bad.qcow2: Image creation needs a size parameter/],
      [['-o', 'cluster_size=512', 'bad.qcow2', '1T'], /too large for file format 'qcow2'/],
    ];
    for (const [args, message] of refusals) {
      const ours = await run(['create', '-q', '-f', 'qcow2', ...args], dir);
      const theirs = qemuImg(['create', '-q', '-f', 'qcow2', ...args], dir);
      expect(theirs.code, `qemu-img create ${args.join(' ')}`).toBe(1);
      expect(ours.code, args.join(' ')).toBe(1);
      expect(ours.stderr, args.join(' ')).toMatch(message);
      expect(ours.stderr.startsWith('qcow2-wasm: '), args.join(' ')).toBe(true);
    }
  });
});

/** The guest content of the zoo's overlay.qcow2 (qemu-img convert). */
function readOverlay(dir: string): Uint8Array {
  qemuImg(['convert', '-O', 'raw', 'overlay.qcow2', 'overlay.raw'], dir);
  return readFileSync(join(dir, 'overlay.raw'));
}
