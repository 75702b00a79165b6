// SPDX-License-Identifier: MIT
// `qcow2-wasm measure`, speaking like `qemu-img measure` 7.2: --size or one image, -O qcow2 or raw
// (default raw), -o creation options, --output human or json; the same numbers, texts and exit
// codes. bindings/tools/measure.ts computes.

import { measureImage, type MeasureTarget } from '../tools/measure.js';
import { CliError, describe, type CliIo } from './io.js';
import { hasOption, imageFormat, lastOption, parseArgs } from './args.js';
import { parseSize } from './sizes.js';
import { openImage } from './files.js';

const ON_OFF: Record<string, boolean> = { on: true, yes: true, true: true, off: false, no: false, false: false };

// Options qemu-img accepts for the format but that do not change the numbers.
const QCOW2_IGNORED = new Set(['backing_fmt', 'lazy_refcounts', 'compression_type', 'encryption', 'data_file', 'data_file_raw', 'nocow']);

function parseMeasureOptions(list: string, target: MeasureTarget): void {
  for (const item of list.split(',').filter((s) => s !== '')) {
    const eq = item.indexOf('=');
    const key = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? '' : item.slice(eq + 1);
    const invalid = () => new CliError(`Invalid parameter '${key}'\nqcow2-wasm: Invalid options for file format '${target.format}'`);
    if (key === 'size') {
      const size = parseSize(value);
      if (size === undefined) throw new CliError(`Parameter 'size' expects a non-negative number below 2^64`);
      target.virtualSize = size;
    } else if (key === 'preallocation') {
      if (!['off', 'metadata', 'falloc', 'full'].includes(value)) throw new CliError(`Parameter 'preallocation' does not accept value '${value}'`);
      target.preallocation = value as MeasureTarget['preallocation'];
    } else if (target.format === 'raw') {
      throw invalid();
    } else if (key === 'cluster_size') {
      const size = parseSize(value);
      if (size === undefined) throw new CliError(`Parameter 'cluster_size' expects a non-negative number below 2^64`);
      target.clusterSize = size;
    } else if (key === 'extended_l2') {
      const flag = ON_OFF[value];
      if (flag === undefined) throw new CliError(`Parameter 'extended_l2' expects 'on' or 'off'`);
      target.extendedL2 = flag;
    } else if (key === 'compat') {
      const compat = ({ '0.10': '0.10', v2: '0.10', '1.1': '1.1', v3: '1.1' } as const)[value];
      if (compat === undefined) throw new CliError(`Invalid compatibility level: '${value}'`);
      target.compat = compat;
    } else if (key === 'refcount_bits') {
      if (!/^\d+$/.test(value)) throw new CliError(`Parameter 'refcount_bits' expects a non-negative number`);
      target.refcountBits = Number(value);
    } else if (key === 'backing_file') {
      target.hasBackingFile = true;
    } else if (!QCOW2_IGNORED.has(key)) {
      throw invalid();
    }
  }
}

/** Runs `qcow2-wasm measure` with `args` (after the command name); returns the exit code. */
export async function measureCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'hf:O:o:l:U', long: ['help', 'size=', 'output=', 'image-opts', 'object='] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) {
    io.stdout('usage: qcow2-wasm measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [-f fmt] filename]\n');
    return 0;
  }
  const output = lastOption(p, 'output') ?? 'human';
  if (output !== 'human' && output !== 'json') throw new CliError('--output must be used with human or json as argument.');
  const sizeText = lastOption(p, 'size');
  let size: number | undefined;
  if (sizeText !== undefined) {
    size = parseSize(sizeText);
    if (size === undefined) throw new CliError('Invalid image size specified. Must be between 0 and 9223372036854775807.');
  }
  if (p.operands.length > 1) throw new CliError(`Unexpected argument: ${p.operands[1]}`);
  const filename = p.operands[0];
  if (filename !== undefined && size !== undefined) throw new CliError('--size N cannot be used together with a filename.');
  if (filename === undefined && size === undefined) throw new CliError('Either --size N or one filename must be specified.');
  const formatName = lastOption(p, 'O') ?? 'raw';
  if (formatName !== 'qcow2' && formatName !== 'raw') throw new CliError(`Block driver '${formatName}' does not support size measurement`);
  const target: MeasureTarget = { format: formatName, virtualSize: size };
  parseMeasureOptions(p.options.filter(([n]) => n === 'o').map(([, v]) => v).join(','), target);

  const source = filename === undefined ? undefined : await openImage(io, filename, imageFormat(lastOption(p, 'f')));
  try {
    const result = await measureImage(target, source).catch((error: unknown) => { throw new CliError(describe(error)); });
    if (output === 'json') {
      const fields = [...(result.bitmaps !== undefined ? [`    "bitmaps": ${result.bitmaps}`] : []),
        `    "required": ${result.required}`, `    "fully-allocated": ${result.fullyAllocated}`];
      io.stdout(`{\n${fields.join(',\n')}\n}\n`);
    } else {
      io.stdout(`required size: ${result.required}\nfully allocated size: ${result.fullyAllocated}\n`);
      if (result.bitmaps !== undefined) io.stdout(`bitmaps size: ${result.bitmaps}\n`);
    }
    return 0;
  } finally {
    await source?.close();
  }
}
