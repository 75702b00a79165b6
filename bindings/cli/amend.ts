// SPDX-License-Identifier: MIT
// `qcow2-wasm amend [-f fmt] [-q] -o options filename`: qemu-img amend's options and messages,
// over amendQcow2.

import { probeFormat } from '../qcow2/qcow2-image.js';
import { amendQcow2, type AmendOptions } from '../tools/amend.js';
import { help } from './main.js';
import { CliError, describe, print, usageError, type CliIo } from './io.js';
import { hasOption, imageFormat, lastOption, parseArgs } from './args.js';
import { parseSize } from './sizes.js';
import { amendOptionsHelp, asksForHelp } from './options-help.js';
import { openFileBackend } from './files.js';

const ON_OFF: Record<string, boolean> = { on: true, off: false };
const CREATE_ONLY = ['cluster_size', 'compression_type', 'extended_l2', 'preallocation', 'encryption'];

/** Parses an amend `-o` list (qemu-img's messages for what it refuses). */
function parseAmendOptions(list: string): AmendOptions {
  const options: AmendOptions = {};
  for (const item of list.split(',').filter((s) => s !== '')) {
    const eq = item.indexOf('=');
    const key = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? '' : item.slice(eq + 1);
    if (key === 'compat') {
      const compat = ({ '0.10': '0.10', v2: '0.10', '1.1': '1.1', v3: '1.1' } as const)[value];
      if (compat === undefined) throw new CliError(`Unknown compatibility level ${value}`);
      options.compat = compat;
    } else if (key === 'lazy_refcounts') {
      if (!(value in ON_OFF)) throw new CliError("Parameter 'lazy_refcounts' expects 'on' or 'off'");
      options.lazyRefcounts = ON_OFF[value];
    } else if (key === 'refcount_bits') {
      if (!/^\d+$/.test(value)) throw new CliError("Parameter 'refcount_bits' expects a number");
      options.refcountBits = Number(value);
    } else if (key === 'size') {
      const size = parseSize(value);
      if (size === undefined) throw new CliError("Parameter 'size' expects a non-negative number below 2^64");
      options.virtualSize = size;
    } else if (key === 'backing_file' || key === 'backing_fmt') {
      throw new CliError("Cannot amend the backing file\nYou can use 'qcow2-wasm rebase' instead.");
    } else if (CREATE_ONLY.includes(key) || key.startsWith('encrypt.')) {
      throw new CliError(`Invalid parameter '${key}'\nThis option is only supported for image creation`);
    } else if (key === 'data_file' || key === 'data_file_raw') {
      throw new CliError(`${key} is not supported (external data files cannot be amended)`);
    } else {
      throw new CliError(`Invalid parameter '${key}'`);
    }
  }
  return options;
}

/** Runs `amend` with `args`; returns the exit code. */
export async function amendCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'ho:f:t:pq', long: ['help', 'object=', 'image-opts', 'force'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) return help(io);
  const list = p.options.filter(([n]) => n === 'o').map(([, v]) => v).join(',');
  if (!hasOption(p, 'o')) throw usageError('Must specify options (-o)');
  const forced = imageFormat(lastOption(p, 'f'));
  if (asksForHelp(list) && forced !== 'raw') return print(io, amendOptionsHelp());
  if (p.operands.length !== 1) throw usageError('Expecting one image file name');
  const file = p.operands[0];
  const backend = await openFileBackend(io, file, true);
  try {
    const format = forced ?? (await probeFormat(backend));
    if (format === 'raw') throw new CliError("Format driver 'raw' does not support option amendment");
    const options = parseAmendOptions(list);
    try {
      // qemu-img amend -o size= shrinks without asking.
      await amendQcow2(backend, { ...options, shrink: true });
    } catch (error) {
      throw new CliError(describe(error));
    }
  } finally {
    await backend.close();
  }
  return 0;
}
