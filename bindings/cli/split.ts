// SPDX-License-Identifier: MIT
// `qcow2-wasm split [--part-size=SIZE] [--zstd] [-q] FILENAME OUTDIR`: writes an image file as a
// split image (numbered parts and manifest.json, see writeSplitImage) for static hosting; a page
// opens it with openSplitBackend(URL of OUTDIR/manifest.json).

import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import * as zlib from 'node:zlib';
import { openNodeBackend } from '../backends/node.js';
import { writeSplitImage } from '../tools/split-writer.js';
import type { CliIo } from './io.js';
import { parseSize } from './sizes.js';

/** The synopsis line of the help text. */
export const SPLIT_SYNOPSIS = '[--part-size=size] [--zstd] [-q] filename outdir';

const DEFAULT_PART_BYTES = 1024 * 1024;

/** A zstd compressor: node:zlib's where Node has it (22.15+), else the zstd program. */
function zstdCompressor(): (part: Uint8Array) => Uint8Array {
  const native = (zlib as unknown as { zstdCompressSync?: (data: Uint8Array) => Uint8Array }).zstdCompressSync;
  if (typeof native === 'function') return (part) => new Uint8Array(native(part));
  return (part) => {
    const result = spawnSync('zstd', ['-q', '-c', '-3', '--no-progress'], { input: part, maxBuffer: part.byteLength * 2 + 65536 });
    if (result.error !== undefined || result.status !== 0) {
      throw new Error(`--zstd needs Node 22.15+ or the zstd program: ${result.error?.message ?? result.stderr.toString().trim()}`);
    }
    return new Uint8Array(result.stdout);
  };
}

/** Runs `split` with `args` (after the command name); resolves with the exit code. */
export async function splitCommand(io: CliIo, args: readonly string[]): Promise<number> {
  let partBytes = DEFAULT_PART_BYTES;
  let zstd = false;
  let quiet = false;
  const operands: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '-h' || arg === '--help') {
      io.stdout(`usage: qcow2-wasm split ${SPLIT_SYNOPSIS}\n\nWrites FILENAME as numbered parts of --part-size bytes (default 1M, a multiple of 512)\nand OUTDIR/manifest.json, each part compressed with zstd when --zstd is given.\n`);
      return 0;
    }
    if (arg === '--zstd') zstd = true;
    else if (arg === '-q') quiet = true;
    else if (arg === '--part-size' || arg.startsWith('--part-size=')) {
      const text = arg === '--part-size' ? args[++i] : arg.slice('--part-size='.length);
      const size = text === undefined ? undefined : parseSize(text);
      if (size === undefined || size <= 0 || size % 512 !== 0) {
        throw new Error(`split: --part-size must be a positive multiple of 512 bytes (suffixes k, M, G allowed), got ${JSON.stringify(text)}`);
      }
      partBytes = size;
    } else if (arg.startsWith('-') && arg !== '-') throw new Error(`split: unrecognized option '${arg}'`);
    else operands.push(arg);
  }
  if (operands.length !== 2) throw new Error('split: expecting an image file name and an output directory');
  const at = (name: string) => (isAbsolute(name) ? name : resolve(io.cwd, name));
  const [file, outDir] = [at(operands[0]!), at(operands[1]!)];
  const source = await openNodeBackend(file);
  try {
    await mkdir(outDir, { recursive: true });
    const manifest = await writeSplitImage(source, (name, bytes) => writeFile(join(outDir, name), bytes), {
      partBytes,
      zstdCompress: zstd ? zstdCompressor() : undefined,
    });
    if (!quiet) io.stdout(`Wrote ${manifest.partCount} parts of ${manifest.partBytes} bytes (${manifest.totalBytes} bytes${zstd ? ', zstd' : ''}) and manifest.json to ${outDir}\n`);
    return 0;
  } finally {
    await source.close();
  }
}
