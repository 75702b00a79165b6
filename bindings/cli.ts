// SPDX-License-Identifier: MIT
// The `qcow2-wasm` command line (package bin), speaking like qemu-img 7.2: same commands, options,
// output formats and exit codes, for the subset this package implements (create, info, map,
// compare). It only parses arguments, opens files and prints; the library does the work.

import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import type { Backend } from './backend.js';
import type { BlockImage, CreateOptions } from './image.js';
import { openNodeBackend } from './backends/node.js';
import { nodeFiles } from './node-files.js';
import { openImageWith, refuseBackingLoop } from './open-image.js';
import { Qcow2Image, probeFormat } from './qcow2-image.js';
import { parseQcow2Header, qcow2HeaderBytesNeeded, type Qcow2Header } from './qcow2-header.js';
import { createQcow2 } from './qcow2-create.js';
import { mapImage, type MapEntry } from './qcow2-map.js';
import { checkQcow2, checkExitCode, qemuCheckJson, type Qcow2CheckReport } from './qcow2-check.js';
import { listSnapshots, type Qcow2Snapshot } from './qcow2-snapshots.js';
import { instantiateCore } from './wasm.js';
import { snapshotCommand } from './cli/snapshot.js';
import { resizeCommand } from './cli/resize.js';
import { amendCommand } from './cli/amend.js';
import { commitCommand, rebaseCommand } from './cli/commit.js';
import { asksForHelp, createOptionsHelp } from './cli/options-help.js';
import { firstBlockStatusMismatch } from './cli/compare-strict.js';
import { infoWithChain } from './cli/info-chain.js';
import { splitCommand, SPLIT_SYNOPSIS } from './cli/split.js';
import { convertCommand } from './cli/convert.js';
import { measureCommand } from './cli/measure.js';
import { benchCommand } from './cli/bench.js';

/** Where the CLI writes and which directory relative file names start from. */
export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Directory relative file names resolve against (default: process.cwd()). */
  cwd: string;
}

export const PROGRAM = 'qcow2-wasm';

/** A failure that ends the command: `message` goes to stderr (prefixed with the program name). */
export class CliError extends Error {
  constructor(message: string, readonly exitCode = 1, readonly hint = false) {
    super(message);
  }
}

export const usageError = (message: string) => new CliError(message, 1, true);

/** The text of an error from the library or the platform. */
export const describe = (error: unknown): string => (error instanceof Error ? error.message : String(error));

// ---------------------------------------------------------------------------------------------
// Arguments: getopt_long as qemu-img uses it (options may follow operands; "--" ends options).
// ---------------------------------------------------------------------------------------------

export interface OptionSpec {
  /** Short options, getopt style: a letter followed by ':' takes an argument. */
  short: string;
  /** Long options; a trailing '=' takes an argument. */
  long: readonly string[];
}

export interface ParsedArgs {
  /** Options in order: [name, value] (value '' for flags). Long options keep their name. */
  options: [string, string][];
  operands: string[];
}

export function parseArgs(args: readonly string[], spec: OptionSpec): ParsedArgs {
  const options: [string, string][] = [];
  const operands: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '--') {
      operands.push(...args.slice(i + 1));
      break;
    }
    if (arg.startsWith('--')) {
      const [name, inline] = arg.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
      if (spec.long.includes(name)) {
        if (inline !== undefined) throw usageError(`unrecognized option '${arg}'`);
        options.push([name, '']);
      } else if (spec.long.includes(`${name}=`)) {
        const value = inline ?? args[++i];
        if (value === undefined) throw usageError(`missing argument for option '--${name}'`);
        options.push([name, value]);
      } else {
        throw usageError(`unrecognized option '${arg}'`);
      }
      continue;
    }
    if (arg.startsWith('-') && arg.length > 1) {
      for (let j = 1; j < arg.length; j++) {
        const letter = arg[j];
        const at = spec.short.indexOf(letter);
        if (at < 0 || letter === ':') {
          throw usageError(`unrecognized option '${arg}'`);
        }
        if (spec.short[at + 1] === ':') {
          const value = j + 1 < arg.length ? arg.slice(j + 1) : args[++i];
          if (value === undefined) throw usageError(`missing argument for option '${arg}'`);
          options.push([letter, value]);
          break;
        }
        options.push([letter, '']);
      }
      continue;
    }
    operands.push(arg);
  }
  return { options, operands };
}

/** The last value of option `name`, or undefined. */
export const lastOption = (p: ParsedArgs, name: string): string | undefined => p.options.filter(([n]) => n === name).pop()?.[1];
/** Whether option `name` was given. */
export const hasOption = (p: ParsedArgs, name: string): boolean => p.options.some(([n]) => n === name);
/** -U / --force-share: open even while the image is open for writing (in this process). */
export const forceShare = (p: ParsedArgs): boolean => hasOption(p, 'U') || hasOption(p, 'force-share');

function outputFormat(p: ParsedArgs): 'human' | 'json' {
  const value = lastOption(p, 'output') ?? 'human';
  if (value !== 'human' && value !== 'json') throw new CliError(`--output must be used with human or json as argument.`);
  return value;
}

export function imageFormat(value: string | undefined): 'qcow2' | 'raw' | undefined {
  if (value === undefined || value === 'qcow2' || value === 'raw') return value;
  throw new CliError(`Unknown file format '${value}' (${PROGRAM} supports qcow2 and raw)`);
}

const SIZE_SUFFIXES: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60 };

/**
 * A size as qemu-img reads one: a number with an optional fraction and an optional suffix
 * k, M, G, T, P, E (binary, any case; b or none means bytes). Fractions need a unit above
 * bytes. Returns undefined for anything else or a size above 2^53.
 */
export function parseSize(text: string): number | undefined {
  const match = /^(\d+)(?:\.(\d+))?\s*([bkmgtpe]?)$/i.exec(text.trim());
  if (!match) return undefined;
  const unit = SIZE_SUFFIXES[match[3].toLowerCase()];
  if (match[2] !== undefined && unit === 1) return undefined;
  const value = Math.floor(Number(`${match[1]}.${match[2] ?? '0'}`) * unit);
  return Number.isSafeInteger(value) ? value : undefined;
}

/**
 * A byte count for people, as qemu-img prints one: three significant digits and a binary unit,
 * switching to the next unit from 1000 of the current one ("388 KiB", "1.56 MiB", "0 B").
 */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let unit = 0;
  while (unit < units.length - 1 && bytes >= 1000 * 1024 ** unit) unit++;
  const value = Number((bytes / 1024 ** unit).toPrecision(3));
  // C's "%0.3g": at most three significant digits, no trailing zeros; 999.5 .. 999.99 round to 1e+03.
  const text = value >= 1000 ? value.toExponential().replace(/e\+(\d)$/, 'e+0$1') : String(value);
  return `${text} ${units[unit]}`;
}

/** QEMU's path_combine: a relative name is relative to the directory of `base` as written. */
export function pathCombine(base: string, name: string): string {
  if (isAbsolute(name)) return name;
  const slash = base.lastIndexOf('/');
  return slash < 0 ? name : base.slice(0, slash + 1) + name;
}

// ---------------------------------------------------------------------------------------------
// Opening files.
// ---------------------------------------------------------------------------------------------

/**
 * Opens `path` read-only as an image (probing the format unless given) with its backing chain,
 * each backing name resolved next to the image that records it. `shareWithWriter` (-U) opens it
 * even while this process has it open for writing.
 */
export async function openImage(io: CliIo, path: string, format: 'qcow2' | 'raw' | undefined, shareWithWriter = false): Promise<BlockImage> {
  try {
    return await openImageWith(nodeFiles, resolve(io.cwd, path), { readOnly: true, format, shareWithWriter });
  } catch (error) {
    throw new CliError(`Could not open '${path}': ${describe(error)}`);
  }
}

/** True when `a` and `b` are one file: the same path, or the same device and inode. */
async function isSameFile(a: string, b: string): Promise<boolean> {
  if (a === b) return true;
  const [idA, idB] = await Promise.all([a, b].map((p) => nodeFiles.identify(p).catch(() => undefined)));
  return idA !== undefined && idA === idB;
}

/** Reads and validates only the header of a qcow2 file (no tables, no backing file). */
async function readHeader(backend: Backend): Promise<Qcow2Header> {
  const core = await instantiateCore();
  const fileBytes = await backend.getSize();
  const bytes = new Uint8Array(qcow2HeaderBytesNeeded(core, fileBytes));
  await backend.preadv(0, [bytes]);
  return parseQcow2Header(core, bytes, fileBytes);
}

// ---------------------------------------------------------------------------------------------
// create
// ---------------------------------------------------------------------------------------------

const ON_OFF: Record<string, boolean> = { on: true, yes: true, true: true, off: false, no: false, false: false };

/** What `-o` and the other create options say, with the text qemu-img echoes. */
export interface CreateRequest {
  format: 'qcow2' | 'raw';
  options: Omit<CreateOptions, 'virtualSize'>;
  /** As typed, for the "Formatting" line: compat, extended_l2, lazy_refcounts, preallocation. */
  typed: Record<string, string>;
  size?: number;
}

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

async function createCommand(io: CliIo, args: readonly string[]): Promise<number> {
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

// ---------------------------------------------------------------------------------------------
// info
// ---------------------------------------------------------------------------------------------

/** qemu-img info's fields, in the order qemu-img 7.2 prints them as JSON. */
function infoJson(file: string, format: 'qcow2' | 'raw', virtualSize: number, actualSize: number, header?: Qcow2Header,
                  snapshots: readonly Qcow2Snapshot[] = []): object {
  if (!header) return { 'virtual-size': virtualSize, filename: file, format, 'actual-size': actualSize, 'dirty-flag': false };
  const info: Record<string, unknown> = {};
  if (header.backingFile !== undefined && header.backingFormat !== undefined) info['backing-filename-format'] = header.backingFormat;
  if (snapshots.length > 0) info.snapshots = snapshots.map(snapshotJson);
  Object.assign(info, {
    'virtual-size': virtualSize, filename: file, 'cluster-size': header.clusterSize, format, 'actual-size': actualSize,
    'format-specific': { type: 'qcow2', data: formatSpecific(header) },
  });
  if (header.backingFile !== undefined) {
    info['full-backing-filename'] = pathCombine(file, header.backingFile);
    info['backing-filename'] = header.backingFile;
  }
  info['dirty-flag'] = header.flags.dirty;
  return info;
}

/** One snapshot as qemu-img info --output=json prints it (its key order). */
function snapshotJson(snapshot: Qcow2Snapshot): Record<string, unknown> {
  const json: Record<string, unknown> = {};
  if (snapshot.icount !== undefined) json.icount = snapshot.icount;
  Object.assign(json, {
    'vm-clock-nsec': snapshot.vmClockNanoseconds % 1e9, name: snapshot.name, 'date-sec': snapshot.dateSeconds,
    'date-nsec': snapshot.dateNanoseconds, 'vm-clock-sec': Math.floor(snapshot.vmClockNanoseconds / 1e9), id: snapshot.id,
    'vm-state-size': snapshot.vmStateBytes,
  });
  return json;
}

/** qemu-img info's "Snapshot list:" table (dates in local time, as qemu-img prints them). */
export function snapshotLines(snapshots: readonly Qcow2Snapshot[]): string[] {
  const two = (n: number) => String(n).padStart(2, '0');
  const lines = ['Snapshot list:', `${'ID'.padEnd(10)}${'TAG'.padEnd(17)}${'VM SIZE'.padStart(8)}${'DATE'.padStart(20)}${'VM CLOCK'.padStart(13)}${'ICOUNT'.padStart(11)}`];
  for (const s of snapshots) {
    const d = new Date(s.dateSeconds * 1000);
    const date = `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
    const clockMs = Math.floor(s.vmClockNanoseconds / 1e6);
    const clock = `${two(Math.floor(clockMs / 3_600_000))}:${two(Math.floor(clockMs / 60_000) % 60)}:${two(Math.floor(clockMs / 1000) % 60)}.${String(clockMs % 1000).padStart(3, '0')}`;
    lines.push(`${s.id.padEnd(9)} ${s.name.padEnd(16)} ${formatSize(s.vmStateBytes).padStart(8)} ${date.padStart(19)} ${clock.padStart(12)} ${(s.icount === undefined ? '' : String(s.icount)).padStart(10)}`);
  }
  return lines;
}

function formatSpecific(header: Qcow2Header): Record<string, unknown> {
  const data: Record<string, unknown> = { compat: header.version === 2 ? '0.10' : '1.1', 'compression-type': header.compressionType };
  if (header.version === 2) return { ...data, 'refcount-bits': 2 ** header.refcountOrder };
  data['lazy-refcounts'] = header.flags.lazyRefcounts;
  data['refcount-bits'] = 2 ** header.refcountOrder;
  if (header.flags.externalDataFile) {
    if (header.dataFile !== undefined) data['data-file'] = header.dataFile;
    data['data-file-raw'] = header.flags.dataFileRaw;
  }
  data.corrupt = header.flags.corrupt;
  data['extended-l2'] = header.flags.extendedL2;
  return data;
}

function infoHuman(file: string, format: 'qcow2' | 'raw', virtualSize: number, actualSize: number, header?: Qcow2Header,
                   snapshots: readonly Qcow2Snapshot[] = []): string {
  const lines = [`image: ${file}`, `file format: ${format}`, `virtual size: ${formatSize(virtualSize)} (${virtualSize} bytes)`,
    `disk size: ${formatSize(actualSize)}`];
  if (header) {
    lines.push(`cluster_size: ${header.clusterSize}`);
    if (header.backingFile !== undefined) {
      const full = pathCombine(file, header.backingFile);
      lines.push(`backing file: ${header.backingFile}${full !== header.backingFile ? ` (actual path: ${full})` : ''}`);
      if (header.backingFormat !== undefined) lines.push(`backing file format: ${header.backingFormat}`);
    }
    if (snapshots.length > 0) lines.push(...snapshotLines(snapshots));
    lines.push('Format specific information:');
    for (const [key, value] of Object.entries(formatSpecific(header))) lines.push(`    ${key.replace(/-/g, ' ')}: ${String(value)}`);
  }
  return `${lines.join('\n')}\n`;
}

async function infoCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'hf:U', long: ['help', 'output=', 'force-share'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) return help(io);
  const output = outputFormat(p);
  const forced = imageFormat(lastOption(p, 'f'));
  if (p.operands.length !== 1) throw usageError('Expecting one image file name');
  const file = p.operands[0];
  const path = resolve(io.cwd, file);
  let backend: Backend;
  try {
    backend = await openNodeBackend(path, { writable: false });
  } catch (error) {
    throw new CliError(`Could not open '${file}': ${describe(error)}`);
  }
  let format: 'qcow2' | 'raw';
  let header: Qcow2Header | undefined;
  let snapshots: Qcow2Snapshot[] = [];
  let virtualSize: number;
  try {
    format = forced ?? (await probeFormat(backend));
    if (format === 'qcow2') {
      header = await readHeader(backend);
      snapshots = await listSnapshots(backend, header);
      virtualSize = header.virtualSize;
    } else {
      virtualSize = await backend.getSize();
    }
  } catch (error) {
    throw new CliError(`Could not open '${file}': ${describe(error)}`);
  } finally {
    await backend.close();
  }
  const actualSize = (await stat(path)).blocks * 512;
  if (output === 'json') io.stdout(`${JSON.stringify(infoJson(file, format, virtualSize, actualSize, header, snapshots), null, 4)}\n`);
  else io.stdout(infoHuman(file, format, virtualSize, actualSize, header, snapshots));
  return 0;
}

// ---------------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------------

/** The report's summary worded as qemu-img check prints it on stdout (findings go to stderr). */
function checkHuman(report: Qcow2CheckReport): string {
  const lines: string[] = [];
  if (report.corruptionsFixed + report.leaksFixed > 0) {
    lines.push('The following inconsistencies were found and repaired:', '',
      `    ${report.leaksFixed} leaked clusters`, `    ${report.corruptionsFixed} corruptions`, '');
  }
  if (report.corruptions > 0) {
    lines.push('', `${report.corruptions} errors were found on the image.`, 'Data may be corrupted, or further writes to the image may corrupt it.');
  }
  if (report.leaks > 0) {
    lines.push('', `${report.leaks} leaked clusters were found on the image.`, 'This means waste of disk space, but no harm to data.');
  }
  if (report.checkErrors > 0) lines.push('', `${report.checkErrors} internal errors have occurred during the check.`);
  if (report.corruptions + report.leaks + report.checkErrors === 0) lines.push('No errors were found on the image.');
  // printf("%.2f") rounds exact halves to even (3.125 -> 3.12); toFixed rounds them up.
  const percent = (part: number, whole: number) => {
    const hundredths = whole === 0 ? 0 : (part * 10000) / whole;
    let rounded = Math.round(hundredths);
    if (hundredths - Math.floor(hundredths) === 0.5 && rounded % 2 !== 0) rounded -= 1;
    return (rounded / 100).toFixed(2);
  };
  if (report.totalClusters > 0 && report.allocatedClusters > 0) {
    lines.push(`${report.allocatedClusters}/${report.totalClusters} = ${percent(report.allocatedClusters, report.totalClusters)}% allocated, ` +
      `${percent(report.fragmentedClusters, report.allocatedClusters)}% fragmented, ${percent(report.compressedClusters, report.allocatedClusters)}% compressed clusters`);
  }
  if (report.imageEndOffset > 0) lines.push(`Image end offset: ${report.imageEndOffset}`);
  return `${lines.join('\n')}\n`;
}

async function checkCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'hf:qr:U', long: ['help', 'output=', 'force-share'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) return help(io);
  const output = outputFormat(p);
  const repairOption = lastOption(p, 'r');
  if (repairOption !== undefined && repairOption !== 'leaks' && repairOption !== 'all') {
    throw usageError(`Unknown option value for -r (expecting 'leaks' or 'all'): ${repairOption}`);
  }
  if (p.operands.length !== 1) throw usageError('Expecting one image file name');
  const file = p.operands[0];
  let backend: Backend;
  try {
    backend = await openNodeBackend(resolve(io.cwd, file), { writable: repairOption !== undefined });
  } catch (error) {
    throw new CliError(`Could not open '${file}': ${describe(error)}`);
  }
  try {
    if ((imageFormat(lastOption(p, 'f')) ?? (await probeFormat(backend))) !== 'qcow2') {
      throw new CliError(`This image format does not support checks`, 63);
    }
    const report = await checkQcow2(backend, repairOption === undefined ? {} : { repair: repairOption });
    if (output === 'json') io.stdout(`${JSON.stringify(qemuCheckJson(report, file), null, 4)}\n`);
    else if (!hasOption(p, 'q')) {
      if (report.messages.length > 0) io.stderr(`${report.messages.join('\n')}\n`);
      io.stdout(checkHuman(report));
    }
    return checkExitCode(report);
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new CliError(`Check failed: ${describe(error)}`);
  } finally {
    await backend.close();
  }
}

// ---------------------------------------------------------------------------------------------
// map
// ---------------------------------------------------------------------------------------------

/** One entry as qemu-img map --output=json prints it. */
function mapEntryJson(e: MapEntry): string {
  return `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, ` +
    `"zero": ${e.zero}, "data": ${e.data}${e.offset !== undefined ? `, "offset": ${e.offset}` : ''}}`;
}

/** C's "%#-16" PRIx64: 0x-prefixed hex (plain 0 for zero), left-justified in 16 columns. */
const hexColumn = (n: number) => (n === 0 ? '0' : `0x${n.toString(16)}`).padEnd(16);

/** The file each layer of the chain reads from, named as qemu-img names it. */
function layerFiles(image: BlockImage, file: string): string[] {
  const names: string[] = [];
  let layer: BlockImage | undefined = image;
  let name = file;
  while (layer) {
    if (layer instanceof Qcow2Image) {
      names.push(layer.header.dataFile ?? name);
      if (layer.header.backingFile !== undefined) name = pathCombine(name, layer.header.backingFile);
      layer = layer.backing;
    } else {
      names.push(name);
      layer = undefined;
    }
  }
  return names;
}

async function mapCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'hf:U', long: ['help', 'output=', 'start-offset=', 'max-length=', 'force-share'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) return help(io);
  const output = outputFormat(p);
  const format = imageFormat(lastOption(p, 'f'));
  const startText = lastOption(p, 'start-offset');
  const lengthText = lastOption(p, 'max-length');
  const start = startText === undefined ? 0 : parseSize(startText);
  if (start === undefined) throw new CliError('--start-offset: Invalid offset specified');
  const maxLength = lengthText === undefined ? Infinity : parseSize(lengthText);
  if (maxLength === undefined) throw new CliError('--max-length: Invalid length specified');
  if (p.operands.length !== 1) throw usageError('Expecting one image file name');
  const file = p.operands[0];
  const image = await openImage(io, file, format, forceShare(p));
  try {
    const from = Math.min(start, image.virtualSize);
    const entries = await mapImage(image, from, Math.min(maxLength, image.virtualSize - from));
    if (output === 'json') {
      io.stdout(`[${entries.map(mapEntryJson).join(',\n')}]\n`);
      return 0;
    }
    const files = layerFiles(image, file);
    io.stdout(`${'Offset'.padEnd(16)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}File\n`);
    for (const e of entries) {
      if (!e.data || e.zero) continue;
      if (e.offset === undefined) throw new CliError('File contains external, encrypted or compressed clusters.');
      io.stdout(`${hexColumn(e.start)}${hexColumn(e.length)}${hexColumn(e.offset)}${files[e.depth]}\n`);
    }
    return 0;
  } finally {
    await image.close();
  }
}

// ---------------------------------------------------------------------------------------------
// compare
// ---------------------------------------------------------------------------------------------

/** Bytes compare reads at once from each image. */
const COMPARE_CHUNK_BYTES = 1 << 20;
/** qemu-img compare reports the 512-byte sector holding the first difference. */
const SECTOR_BYTES = 512;

/** Guest ranges an image is known to read as zeros without reading them (from its map). */
class KnownZeros {
  private index = 0;
  constructor(private readonly ranges: readonly MapEntry[]) {}

  /** True when all of [start, end) reads as zeros by the map. Calls must ask rising ranges. */
  covers(start: number, end: number): boolean {
    const r = this.ranges;
    while (this.index < r.length && r[this.index].start + r[this.index].length <= start) this.index++;
    for (let i = this.index, at = start; i < r.length; i++) {
      const e = r[i];
      if (e.start > at || !(e.zero && !e.data)) return false;
      at = e.start + e.length;
      if (at >= end) return true;
    }
    return false;
  }
}

/** The first guest offset in [start, end) where `a` and `b` differ (b past its end reads as zeros), or -1. */
async function firstDifference(a: BlockImage, b: BlockImage | undefined, zerosA: KnownZeros, zerosB: KnownZeros | undefined,
                               start: number, end: number): Promise<number> {
  for (let at = start; at < end; at += COMPARE_CHUNK_BYTES) {
    const chunkEnd = Math.min(end, at + COMPARE_CHUNK_BYTES);
    const aZero = zerosA.covers(at, chunkEnd);
    if (aZero && (!zerosB || zerosB.covers(at, chunkEnd))) continue;
    const left = aZero ? new Uint8Array(chunkEnd - at) : await a.read(at, chunkEnd - at);
    const right = b ? await b.read(at, chunkEnd - at) : new Uint8Array(chunkEnd - at);
    if (Buffer.compare(left, right) === 0) continue;
    for (let i = 0; i < left.length; i++) if (left[i] !== right[i]) return at + i;
  }
  return -1;
}

async function compareCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'hf:F:qsU', long: ['help', 'force-share'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) return help(io);
  if (p.operands.length !== 2) throw usageError('Expecting two image file names');
  const quiet = hasOption(p, 'q');
  const say = (line: string) => { if (!quiet) io.stdout(`${line}\n`); };
  const open = async (file: string, format: string | undefined) => {
    try {
      return await openImage(io, file, imageFormat(format), forceShare(p));
    } catch (error) {
      throw new CliError(describe(error), 2);
    }
  };
  const a = await open(p.operands[0], lastOption(p, 'f'));
  let b: BlockImage;
  try {
    b = await open(p.operands[1], lastOption(p, 'F'));
  } catch (error) {
    await a.close();
    throw error;
  }
  try {
    const common = Math.min(a.virtualSize, b.virtualSize);
    const [mapA, mapB] = await Promise.all([mapImage(a), mapImage(b)]);
    const zerosA = new KnownZeros(mapA);
    const zerosB = new KnownZeros(mapB);
    const strict = hasOption(p, 's');
    if (strict && a.virtualSize !== b.virtualSize) {
      say('Strict mode: Image size mismatch!');
      return 1;
    }
    if (a.virtualSize !== b.virtualSize) say('Warning: Image size mismatch!');
    let difference = await firstDifference(a, b, zerosA, zerosB, 0, common);
    const statusMismatch = strict ? firstBlockStatusMismatch(mapA, mapB, common) : -1;
    if (statusMismatch >= 0 && (difference < 0 || statusMismatch <= difference)) {
      say(`Strict mode: Offset ${statusMismatch} block status mismatch!`);
      return 1;
    }
    if (difference < 0 && a.virtualSize !== b.virtualSize) {
      // The larger image's tail must read as zeros.
      const [larger, zeros] = a.virtualSize > b.virtualSize ? [a, zerosA] : [b, zerosB];
      difference = await firstDifference(larger, undefined, zeros, undefined, common, larger.virtualSize);
    }
    if (difference >= 0) {
      say(`Content mismatch at offset ${Math.floor(difference / SECTOR_BYTES) * SECTOR_BYTES}!`);
      return 1;
    }
    say('Images are identical.');
    return 0;
  } catch (error) {
    throw new CliError(describe(error), 2);
  } finally {
    await Promise.allSettled([a.close(), b.close()]);
  }
}

// ---------------------------------------------------------------------------------------------
// Commands, help, main.
// ---------------------------------------------------------------------------------------------

interface Command {
  /** The command's line in the help text (after the name). */
  synopsis: string;
  run: (io: CliIo, args: readonly string[]) => Promise<number>;
}

// Commands in help order. Each handles its own options, -h/--help included.
const COMMANDS: Record<string, Command> = {
  amend: { synopsis: '[-f fmt] [-q] -o options filename', run: amendCommand },
  bench: { synopsis: '[-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-i aio] [-w] [-U] filename', run: benchCommand },
  check: { synopsis: '[-f fmt] [--output=ofmt] [-r leaks | -r all] [-q] [-U] filename', run: checkCommand },
  commit: { synopsis: '[-f fmt] [-b base] [-d] [-p] [-q] filename', run: commitCommand },
  compare: { synopsis: '[-f fmt] [-F fmt] [-q] [-s] [-U] filename1 filename2', run: compareCommand },
  convert: { synopsis: '[-U] [-c] [-p] [-q] [-n] [-f fmt] [-O output_fmt] [-B backing_file -F backing_fmt] [-o options] [-S sparse_size] [-m num_coroutines] [-W] filename output_filename', run: convertCommand },
  create: { synopsis: '[-q] [-f fmt] [-b backing_file -F backing_fmt] [-u] [-o options] filename [size]', run: createCommand },
  info: { synopsis: '[-f fmt] [--output=ofmt] [--backing-chain] [-U] filename', run: (io, args) => infoWithChain(io, args, infoCommand) },
  measure: { synopsis: '[--output=ofmt] [-O output_fmt] [-o options] [--size N | [-f fmt] filename]', run: measureCommand },
  map: { synopsis: '[-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename', run: mapCommand },
  rebase: { synopsis: '[-f fmt] [-p] [-q] [-u] -b backing_file [-F backing_fmt] filename', run: rebaseCommand },
  resize: { synopsis: '[-f fmt] [--preallocation=off] [-q] [--shrink] filename [+ | -]size', run: resizeCommand },
  snapshot: { synopsis: '[-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename', run: snapshotCommand },
  split: { synopsis: SPLIT_SYNOPSIS, run: splitCommand },
};

function version(): string {
  for (const candidate of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(candidate, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'qcow2-wasm' && pkg.version) return pkg.version;
    } catch {
      // not this one
    }
  }
  return 'unknown';
}

function helpText(): string {
  const commands = Object.entries(COMMANDS).map(([name, c]) => `  ${name} ${c.synopsis}`).join('\n');
  return `${PROGRAM} version ${version()}
usage: ${PROGRAM} [standard options] command [command options]
qcow2 disk image utility, speaking like qemu-img (a subset of its commands)

    '-h', '--help'       display this help and exit
    '-V', '--version'    output version information and exit

Command syntax:
${commands}

Command parameters:
  'filename' is a disk image filename
  'fmt' is the disk image format (qcow2 or raw). It is guessed automatically when omitted;
    create makes qcow2 unless told otherwise
  'size' is the disk image size in bytes. Optional suffixes 'k' or 'K' (kilobyte, 1024),
    'M' (megabyte, 1024k), 'G' (gigabyte, 1024M), 'T' (terabyte, 1024G), 'P' (petabyte, 1024T)
    and 'E' (exabyte, 1024P) are supported. 'b' is ignored. Sizes round up to 512 bytes
  'options' is a comma separated list of name=value: cluster_size, compat (0.10 or 1.1),
    extended_l2, refcount_bits, lazy_refcounts, compression_type (zlib or zstd),
    preallocation (off or metadata), backing_file, backing_fmt, size
  '--output' takes the format in which the output must be done (human or json)
  '-q' use Quiet mode - do not print any output (except errors)
  '-u' create: do not open the backing file (then the size must be given)
  '-U' open the image even while it is open for writing (images are always opened read-only;
    other processes are not locked out, so -U only matters inside one process)

Exit codes: 0 success; 1 error (compare: images differ; check: the check was incomplete); 2 compare: error, check: corruptions; 3 check: leaked clusters only.
`;
}

/** Prints `text` to stdout; returns exit code 0. */
export function print(io: CliIo, text: string): number {
  io.stdout(text);
  return 0;
}

export function help(io: CliIo): number {
  io.stdout(helpText());
  return 0;
}

/**
 * Runs the CLI with `args` (without the program name) and returns the exit code: 0 on success,
 * 1 on errors and for an unknown command or option (with a hint to --help), and for compare 1
 * when the images differ and 2 when it could not compare. Output goes to `io` (default: the
 * process's stdout and stderr; file names resolve against io.cwd, default process.cwd()).
 */
export async function main(args: readonly string[], ioOverrides: Partial<CliIo> = {}): Promise<number> {
  const io: CliIo = {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    cwd: process.cwd(),
    ...ioOverrides,
  };
  const [name, ...rest] = args;
  try {
    if (name === undefined) throw usageError('Not enough arguments');
    if (name === '-h' || name === '--help' || name === 'help') return help(io);
    if (name === '-V' || name === '--version') {
      io.stdout(`${PROGRAM} version ${version()}\n`);
      return 0;
    }
    const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (!command) {
      io.stderr(`${PROGRAM}: Command not found: ${name}\n\n${helpText()}`);
      return 1;
    }
    return await command.run(io, rest);
  } catch (error) {
    if (!(error instanceof CliError)) {
      io.stderr(`${PROGRAM}: ${describe(error)}\n`);
      return 1;
    }
    io.stderr(`${PROGRAM}: ${error.message}\n`);
    if (error.hint) io.stderr(`Try '${PROGRAM} --help' for more information\n`);
    return error.exitCode;
  }
}
