// SPDX-License-Identifier: MIT
// Command arguments read as qemu-img reads them (getopt_long: options may follow operands, "--"
// ends options), and the option values every command shares (--output, -f, -U).

import { CliError, PROGRAM, usageError } from './io.js';

/** The options one command takes. */
export interface OptionSpec {
  /** Short options, getopt style: a letter followed by ':' takes an argument. */
  short: string;
  /** Long options; a trailing '=' takes an argument. */
  long: readonly string[];
}

/** A command line read against an {@link OptionSpec}. */
export interface ParsedArgs {
  /** Options in order: [name, value] (value '' for flags). Long options keep their name. */
  options: [string, string][];
  operands: string[];
}

/**
 * Reads `args` against `spec` as getopt_long does: short options may be grouped and take their value
 * attached or as the next argument, long options take `--name=value` or `--name value`, and "--"
 * ends options. Throws a usage error for an unknown option or a missing value.
 */
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

/** The --output value: 'human' (default) or 'json'; anything else is an error. */
export function outputFormat(p: ParsedArgs): 'human' | 'json' {
  const value = lastOption(p, 'output') ?? 'human';
  if (value !== 'human' && value !== 'json') throw new CliError(`--output must be used with human or json as argument.`);
  return value;
}

/** A -f / -F value: qcow2, raw or none given; any other format is an error. */
export function imageFormat(value: string | undefined): 'qcow2' | 'raw' | undefined {
  if (value === undefined || value === 'qcow2' || value === 'raw') return value;
  throw new CliError(`Unknown file format '${value}' (${PROGRAM} supports qcow2 and raw)`);
}
