// SPDX-License-Identifier: MIT
// The `qcow2-wasm` command line (package bin), speaking like qemu-img 7.2: same commands, options,
// output formats and exit codes, for the subset this package implements. This file is the
// dispatch table, the help text and `main`; each command lives in bindings/cli/<command>.ts, and
// what they share in bindings/cli/io.ts (output, errors), args.ts (options), sizes.ts and files.ts.
// A command's module is loaded when it runs, so a run loads only the modules its command needs.

import { readFileSync } from 'node:fs';
import { CliError, describe, PROGRAM, usageError, type CliIo } from './io.js';

type Run = (io: CliIo, args: readonly string[]) => Promise<number>;

interface Command {
  /** The command's line in the help text (after the name). */
  synopsis: string;
  /** Imports the command's module and returns the command. */
  load: () => Promise<Run>;
}

// `info` with and without --backing-chain.
async function loadInfo(): Promise<Run> {
  const [{ infoWithChain }, { infoCommand }] = await Promise.all([import('./info-chain.js'), import('./info.js')]);
  return (io, args) => infoWithChain(io, args, infoCommand);
}

// Commands in help order. Each handles its own options, -h/--help included.
const COMMANDS: Record<string, Command> = {
  amend: { synopsis: '[-f fmt] [-q] -o options filename', load: async () => (await import('./amend.js')).amendCommand },
  bench: { synopsis: '[-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-i aio] [-w] [-U] filename', load: async () => (await import('./bench.js')).benchCommand },
  check: { synopsis: '[-f fmt] [--output=ofmt] [-r leaks | -r all] [-q] [-U] filename', load: async () => (await import('./check.js')).checkCommand },
  commit: { synopsis: '[-f fmt] [-b base] [-d] [-p] [-q] filename', load: async () => (await import('./commit.js')).commitCommand },
  compare: { synopsis: '[-f fmt] [-F fmt] [-q] [-s] [-U] filename1 filename2', load: async () => (await import('./compare.js')).compareCommand },
  convert: { synopsis: '[-U] [-c] [-p] [-q] [-n] [-f fmt] [-O output_fmt] [-B backing_file -F backing_fmt] [-o options] [-S sparse_size] [-m num_coroutines] [-W] filename output_filename', load: async () => (await import('./convert.js')).convertCommand },
  create: { synopsis: '[-q] [-f fmt] [-b backing_file -F backing_fmt] [-u] [-o options] filename [size]', load: async () => (await import('./create.js')).createCommand },
  info: { synopsis: '[-f fmt] [--output=ofmt] [--backing-chain] [-U] filename', load: loadInfo },
  measure: { synopsis: '[--output=ofmt] [-O output_fmt] [-o options] [--size N | [-f fmt] filename]', load: async () => (await import('./measure.js')).measureCommand },
  map: { synopsis: '[-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename', load: async () => (await import('./map.js')).mapCommand },
  rebase: { synopsis: '[-f fmt] [-p] [-q] [-u] [-c] -b backing_file [-F backing_fmt] filename', load: async () => (await import('./commit.js')).rebaseCommand },
  resize: { synopsis: '[-f fmt] [--preallocation=off] [-q] [--shrink] filename [+ | -]size', load: async () => (await import('./resize.js')).resizeCommand },
  snapshot: { synopsis: '[-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename', load: async () => (await import('./snapshot.js')).snapshotCommand },
  split: { synopsis: '[--part-size=size] [--zstd] [-q] filename outdir', load: async () => (await import('./split.js')).splitCommand },
};

function version(): string {
  for (const candidate of ['../../package.json', '../../../package.json']) {
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

/** Prints the help text; returns exit code 0. */
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
    return await (await command.load())(io, rest);
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
