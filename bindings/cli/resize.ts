// SPDX-License-Identifier: MIT
// `qcow2-wasm resize [-f fmt] [--shrink] [-q] filename [+ | -]size`: qemu-img resize's options,
// messages and exit codes, over resizeQcow2 (qcow2) or a truncate (raw).

import { probeFormat } from '../qcow2/qcow2-image.js';
import { readQcow2Header } from '../qcow2/qcow2-shadow-update.js';
import { resizeQcow2 } from '../tools/resize.js';
import { help } from './main.js';
import { CliError, describe, usageError, type CliIo } from './io.js';
import { hasOption, imageFormat, lastOption, parseArgs } from './args.js';
import { parseSize } from './sizes.js';
import { PROBED_RAW_WARNING } from './snapshot.js';
import { openFileBackend } from './files.js';

const SHRINK_REFUSED = 'Use the --shrink option to perform a shrink operation.\n' +
  "qcow2-wasm: warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.";
const SIZE_INVALID = "Parameter 'size' expects a non-negative number below 2^64\n" +
  'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.';

/** Runs `resize` with `args`; returns the exit code. */
export async function resizeCommand(io: CliIo, args: readonly string[]): Promise<number> {
  // As qemu-img: the size is the last argument, taken before options so "-10M" is no option.
  if (args.length < 2) throw usageError('Not enough arguments');
  const sizeText = args[args.length - 1];
  const p = parseArgs(args.slice(0, -1), { short: 'f:hq', long: ['help', 'shrink', 'preallocation=', 'object=', 'image-opts'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) return help(io);
  if (p.operands.length !== 1) throw usageError('Expecting image file name and size');
  const preallocation = lastOption(p, 'preallocation');
  if (preallocation !== undefined && !['off', 'metadata', 'falloc', 'full'].includes(preallocation)) throw new CliError(`Invalid preallocation mode '${preallocation}'`);
  if (preallocation !== undefined && preallocation !== 'off') throw new CliError(`preallocation=${preallocation} is not supported (off is)`);
  const forced = imageFormat(lastOption(p, 'f'));
  const file = p.operands[0];
  const relative = sizeText.startsWith('+') ? 1 : sizeText.startsWith('-') ? -1 : 0;
  const amount = parseSize(relative === 0 ? sizeText : sizeText.slice(1));
  if (amount === undefined) throw new CliError(SIZE_INVALID);

  const backend = await openFileBackend(io, file, true);
  try {
    const format = forced ?? (await probeFormat(backend));
    // qemu-img warns when it opens a probed raw image: to read its size, and again to resize it.
    const probedRaw = format === 'raw' && forced === undefined;
    if (probedRaw) io.stderr(PROBED_RAW_WARNING(file));
    const current = format === 'qcow2' ? (await readQcow2Header(backend)).virtualSize : await backend.getSize();
    const size = relative === 0 ? amount : current + relative * amount;
    if (size <= 0) throw new CliError('New image size must be positive');
    const shrink = hasOption(p, 'shrink');
    if (format === 'raw') {
      if (size < current && !shrink) throw new CliError(SHRINK_REFUSED);
      if (probedRaw) io.stderr(PROBED_RAW_WARNING(file));
      await backend.truncate!(size);
    } else {
      try {
        await resizeQcow2(backend, size, { shrink });
      } catch (error) {
        if (size < current && !shrink) throw new CliError(SHRINK_REFUSED);
        throw new CliError(describe(error));
      }
    }
  } finally {
    await backend.close();
  }
  if (!hasOption(p, 'q')) io.stdout('Image resized.\n');
  return 0;
}
