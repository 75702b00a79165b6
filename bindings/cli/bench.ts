// SPDX-License-Identifier: MIT
// `qcow2-wasm bench`, speaking like `qemu-img bench` 7.2: -c -d -f -n -i -o -q -s -S -t -w -U,
// --pattern, --flush-interval, --no-drain; the same "Sending ..." and "Run completed in N seconds."
// lines, so runs compare like for like. -n, -i and -t are accepted and have no effect (this
// package has one I/O path per platform). bindings/tools/image-bench.ts runs the requests.

import { resolve } from 'node:path';
import { openImageFile } from '../node.js';
import { runImageBench, type ImageBenchOptions } from '../tools/image-bench.js';
import { CliError, describe, usageError, type CliIo } from './io.js';
import { hasOption, lastOption, parseArgs } from './args.js';
import { parseSize } from './sizes.js';
import { openImage } from './files.js';

const INT_MAX = 2 ** 31 - 1;

/** An integer as C's strtoul with base 0 reads it (decimal, 0x hex, 0 octal), or undefined. */
function parseUnsigned(text: string): number | undefined {
  const match = /^\s*(0x[0-9a-f]+|0[0-7]*|[1-9]\d*)$/i.exec(text);
  if (!match) return undefined;
  const digits = match[1];
  if (/^0x/i.test(digits)) return parseInt(digits.slice(2), 16);
  if (digits.length > 1 && digits.startsWith('0')) return parseInt(digits, 8);
  return Number(digits);
}

function limited(text: string, max: number, message: string): number {
  const value = parseUnsigned(text);
  if (value === undefined || value > max) throw new CliError(message);
  return value;
}

function size(text: string, message: string): number {
  const value = parseSize(text);
  if (value === undefined || value > INT_MAX) throw new CliError(message);
  return value;
}

/** Runs `qcow2-wasm bench` with `args` (after the command name); returns the exit code. */
export async function benchCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'hc:d:f:ni:o:qs:S:t:wU', long: ['help', 'flush-interval=', 'no-drain', 'pattern=', 'image-opts', 'force-share'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) {
    io.stdout('usage: qcow2-wasm bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-n] [--no-drain] ' +
      '[-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-i aio] [-w] [-U] filename\n');
    return 0;
  }
  const options: ImageBenchOptions = {
    count: 75000, depth: 64, bufferBytes: 4096, offset: 0, stepBytes: 0, write: false, pattern: 0, flushInterval: 0, drainOnFlush: true,
  };
  for (const [name, value] of p.options) {
    if (name === 'c') options.count = limited(value, INT_MAX, 'Invalid request count specified');
    else if (name === 'd') {
      // qemu-img takes 0 and then never finishes; refuse it with the same message.
      options.depth = limited(value, INT_MAX, 'Invalid queue depth specified');
      if (options.depth === 0) throw new CliError('Invalid queue depth specified');
    } else if (name === 's') {
      options.bufferBytes = size(value, 'Invalid buffer size specified. You may use k, M, G, T, P or E suffixes for\n' +
        'qcow2-wasm: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.');
    } else if (name === 'S') {
      options.stepBytes = size(value, 'Invalid step size specified. You may use k, M, G, T, P or E suffixes for\n' +
        'qcow2-wasm: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.');
    } else if (name === 'o') {
      const offset = parseSize(value);
      if (offset === undefined) throw new CliError('Invalid offset specified. You may use k, M, G, T, P or E suffixes for\n' +
        'qcow2-wasm: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.');
      options.offset = offset;
    } else if (name === 'pattern') options.pattern = limited(value, 0xff, 'Invalid pattern byte specified');
    else if (name === 'flush-interval') options.flushInterval = limited(value, INT_MAX, 'Invalid flush interval specified');
    else if (name === 'no-drain') options.drainOnFlush = false;
    else if (name === 'w') options.write = true;
    else if (name === 'i' && value !== 'threads' && value !== 'native' && value !== 'io_uring') throw new CliError(`Invalid aio option: ${value}`);
  }
  if (p.operands.length !== 1) throw usageError('Expecting one image file name');
  if (!options.write && options.flushInterval) throw new CliError('--flush-interval is only available in write tests');
  if (options.flushInterval && options.flushInterval < options.depth) throw new CliError("Flush interval can't be smaller than depth");
  const format = lastOption(p, 'f');
  if (format !== undefined && format !== 'qcow2' && format !== 'raw') throw new CliError(`Unknown file format '${format}' (qcow2-wasm supports qcow2 and raw)`);

  const filename = p.operands[0];
  const image = options.write
    ? await openImageFile(resolve(io.cwd, filename)).catch((error: unknown) => { throw new CliError(`Could not open '${filename}': ${describe(error)}`); })
    : await openImage(io, filename, format);
  try {
    const step = options.stepBytes === 0 ? options.bufferBytes : options.stepBytes;
    // Like qemu-img 7.2, -q does not silence these lines.
    io.stdout(`Sending ${options.count} ${options.write ? 'write' : 'read'} requests, ${options.bufferBytes} bytes each, ` +
      `${options.depth} in parallel (starting at offset ${options.offset}, step size ${step})\n`);
    if (options.flushInterval) io.stdout(`Sending flush every ${options.flushInterval} requests\n`);
    const start = performance.now();
    try {
      await runImageBench(image, options);
    } catch (error) {
      throw new CliError(`Failed request: ${describe(error)}`);
    }
    const seconds = (performance.now() - start) / 1000;
    io.stdout(`Run completed in ${seconds.toFixed(3)} seconds.\n`);
    return 0;
  } finally {
    await image.close();
  }
}
