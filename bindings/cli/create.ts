// SPDX-License-Identifier: MIT
// `qcow2-wasm create [-q] [-f fmt] [-b backing_file -F backing_fmt] [-u] [-o options] filename [size]`:
// qemu-img create's options, "Formatting ..." line and messages, over createQcow2.

import { resolve } from 'node:path';
import type { Backend } from '../backends/backend.js';
import type { BlockImage, CreateOptions } from '../dispatch/image.js';
import { openNodeBackend } from '../backends/node.js';
import { nodeFiles } from '../files/node-files.js';
import { refuseBackingLoop } from '../files/open-image.js';
import { createQcow2 } from '../qcow2/qcow2-create.js';
import { help } from './main.js';
import { CliError, describe, PROGRAM, print, usageError, type CliIo } from './io.js';
import { hasOption, imageFormat, lastOption, parseArgs } from './args.js';
import { parseSize } from './sizes.js';
import { isSameFile, openImage, pathCombine } from './files.js';
import { asksForHelp, createOptionsHelp } from './options-help.js';

const ON_OFF: Record<string, boolean> = { on: true, yes: true, true: true, off: false, no: false, false: false };

/** What `-o` and the other create options say, with the text qemu-img echoes. */
export interface CreateRequest {
  format: 'qcow2' | 'raw';
  options: Omit<CreateOptions, 'virtualSize'>;
  /** As typed, for the "Formatting" line: compat, extended_l2, lazy_refcounts, preallocation. */
  typed: Record<string, string>;
  size?: number;
}

/** Reads a create `-o` list for `format` (qemu-img's messages for what it refuses). */
export function parseCreateOptions(list: string, format: 'qcow2' | 'raw'): CreateRequest {
  const request: CreateRequest = { format, options: {}, typed: {} };
  const o = request.options;
  for (const item of list.split(',').filter((s) => s !== '')) {
    const eq = item.indexOf('=');
    const key = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? '' : item.slice(eq + 1);
    const bool = () => {
      const b = ON_OFF[value];
      if (b === undefined) throw new CliError(`Parameter '${key}' expects 'on' or 'off'`);
      request.typed[key] = value;
      return b;
    };
    const bytes = () => {
      const n = parseSize(value);
      if (n === undefined) throw new CliError(`Parameter '${key}' expects a non-negative number below 2^64`);
      return n;
    };
    if (key === 'size') request.size = bytes();
    else if (key === 'preallocation') {
      if (value !== 'off' && value !== 'metadata' && value !== 'falloc' && value !== 'full') {
        throw new CliError(`Parameter 'preallocation' does not accept value '${value}'`);
      }
      if (value === 'falloc' || value === 'full') throw new CliError(`preallocation=${value} is not supported (off and metadata are)`);
      if (format === 'raw' && value !== 'off') throw new CliError(`preallocation=${value} is not supported for raw images`);
      o.preallocation = value;
      request.typed.preallocation = value;
    } else if (format === 'raw') {
      throw new CliError(`Invalid parameter '${key}'`);
    } else if (key === 'cluster_size') o.clusterSize = bytes();
    else if (key === 'compat') {
      const compat = ({ '0.10': '0.10', v2: '0.10', '1.1': '1.1', v3: '1.1' } as const)[value];
      if (compat === undefined) throw new CliError(`Parameter 'version' does not accept value '${value}'`);
      o.compat = compat;
      request.typed.compat = value;
    } else if (key === 'extended_l2') o.extendedL2 = bool();
    else if (key === 'lazy_refcounts') o.lazyRefcounts = bool();
    else if (key === 'refcount_bits') {
      const n = Number(value);
      if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) throw new CliError(`Parameter 'refcount_bits' expects a non-negative number`);
      o.refcountBits = n;
    } else if (key === 'compression_type') {
      if (value !== 'zlib' && value !== 'zstd') throw new CliError(`Parameter 'compression-type' does not accept value '${value}'`);
      o.compressionType = value;
    } else if (key === 'backing_file') o.backingFile = value;
    else if (key === 'backing_fmt') {
      if (value !== 'qcow2' && value !== 'raw') throw new CliError(`Unknown backing format '${value}' (${PROGRAM} supports qcow2 and raw)`);
      o.backingFormat = value;
    } else throw new CliError(`Invalid parameter '${key}'`);
  }
  return request;
}

/** qemu-img's "Formatting ..." line: its option order, defaults included. */
function formattingLine(file: string, r: CreateRequest, size: number): string {
  const o = r.options;
  if (r.format === 'raw') return `Formatting '${file}', fmt=raw size=${size}`;
  const parts = [`cluster_size=${o.clusterSize ?? 65536}`, `extended_l2=${r.typed.extended_l2 ?? 'off'}`];
  if (r.typed.preallocation) parts.push(`preallocation=${r.typed.preallocation}`);
  parts.push(`compression_type=${o.compressionType ?? 'zlib'}`, `size=${size}`);
  if (r.typed.compat) parts.push(`compat=${r.typed.compat}`);
  if (o.backingFile) parts.push(`backing_file=${o.backingFile}`);
  if (o.backingFormat) parts.push(`backing_fmt=${o.backingFormat}`);
  parts.push(`lazy_refcounts=${r.typed.lazy_refcounts ?? 'off'}`, `refcount_bits=${o.refcountBits ?? 16}`);
  return `Formatting '${file}', fmt=qcow2 ${parts.join(' ')}`;
}

/** Runs `create` with `args`; returns the exit code. */
export async function createCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'hf:o:b:F:uq', long: ['help'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) return help(io);
  const format = imageFormat(lastOption(p, 'f')) ?? 'qcow2';
  if (asksForHelp(p.options.filter(([n]) => n === 'o').map(([, v]) => v).join(','))) return print(io, createOptionsHelp(format));
  if (p.operands.length < 1) throw usageError('Expecting image file name');
  if (p.operands.length > 2) throw usageError(`Unexpected argument: ${p.operands[2]}`);
  const file = p.operands[0];
  const fail = (message: string) => new CliError(`${file}: ${message}`);
  let request: CreateRequest;
  try {
    request = parseCreateOptions(p.options.filter(([n]) => n === 'o').map(([, v]) => v).join(','), format);
  } catch (error) {
    throw fail(describe(error));
  }
  const o = request.options;
  const backingFile = lastOption(p, 'b');
  if (backingFile !== undefined) o.backingFile = backingFile;
  const backingFormat = lastOption(p, 'F');
  if (backingFormat !== undefined) {
    if (backingFormat !== 'qcow2' && backingFormat !== 'raw') throw fail(`Unknown backing format '${backingFormat}' (${PROGRAM} supports qcow2 and raw)`);
    o.backingFormat = backingFormat;
  }
  if (format === 'raw' && o.backingFile) throw fail("'raw' does not support backing files");
  const path = resolve(io.cwd, file);
  // qemu-img refuses only the same name; a name resolving to the same file is refused as well.
  if (o.backingFile && (o.backingFile === file || await isSameFile(path, resolve(io.cwd, pathCombine(file, o.backingFile))))) {
    throw fail('Error: Trying to create an image with the same filename as the backing file');
  }

  let size = request.size;
  if (p.operands.length === 2) {
    size = parseSize(p.operands[1]);
    if (size === undefined) {
      throw new CliError('Invalid image size specified. You may use k, M, G, T, P or E suffixes for\n' +
        `${PROGRAM}: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.`);
    }
  }
  if (o.backingFile) {
    if (!o.backingFormat) throw fail('Backing file specified without backing format');
    // Like qemu-img (without -u): the backing file must open, and gives the size if none is given.
    if (!hasOption(p, 'u') || size === undefined) {
      const backingPath = pathCombine(file, o.backingFile);
      let backing: BlockImage;
      try {
        backing = await openImage(io, backingPath, o.backingFormat);
      } catch (error) {
        throw fail(`${describe(error)}\nCould not open backing image.`);
      }
      size ??= backing.virtualSize;
      await backing.close();
      try {
        await refuseBackingLoop(nodeFiles, path, o);
      } catch (error) {
        throw fail(describe(error));
      }
    }
  }
  if (size === undefined) throw fail('Image creation needs a size parameter');
  // qemu-img echoes the size as given, then rounds it up to whole sectors.
  if (!hasOption(p, 'q')) io.stdout(`${formattingLine(file, request, size)}\n`);
  size = Math.ceil(size / 512) * 512;

  let backend: Backend;
  try {
    backend = await openNodeBackend(path, { writable: true, create: true });
  } catch (error) {
    throw fail(`Could not create '${file}': ${describe(error)}`);
  }
  try {
    if (format === 'raw') {
      await backend.truncate!(0);
      await backend.truncate!(size);
    } else {
      await createQcow2(backend, { ...o, virtualSize: size });
    }
  } catch (error) {
    throw fail(describe(error));
  } finally {
    await backend.close();
  }
  return 0;
}
