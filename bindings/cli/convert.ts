// SPDX-License-Identifier: MIT
// `qcow2-wasm convert`, speaking like `qemu-img convert` 7.2: -f -O -o -c -B -F -n -S -p -q -m -W
// -U, the same messages and exit codes; several source images are concatenated as qemu-img does.
// It parses, opens and prints; the library's convert functions (bindings/tools/convert.ts) do the work.

import { access } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Backend } from '../backends/backend.js';
import type { BlockImage, CreateOptions } from '../dispatch/image.js';
import { openNodeBackend } from '../backends/node.js';
import { createMemoryBackend } from '../backends/memory.js';
import { createQcow2 } from '../qcow2/qcow2-create.js';
import { Qcow2Image } from '../qcow2/qcow2-image.js';
import { openImageFile } from '../node.js';
import { convertInto, convertToQcow2, convertToRaw } from '../tools/convert.js';
import { createWorkerCompressor } from '../qcow2/compress-node.js';
import { convertIntoCompressed } from '../tools/convert-compressed-into.js';
import { CompressedOverwriteError } from '../qcow2/qcow2-compressed-write.js';
import { ConcatenatedImage } from '../tools/concatenated-image.js';
import { CliError, describe, type CliIo } from './io.js';
import { hasOption, imageFormat, lastOption, parseArgs } from './args.js';
import { openImage, pathCombine } from './files.js';
import { parseSize } from './sizes.js';
import { parseCreateOptions } from './create.js';

/** Largest -S value qemu-img takes: 32768 sectors. */
const MAX_SPARSE_BYTES = 16 << 20;

/**
 * Prints progress as qemu-img does: "    (NN.NN/100%)\r" at 0, whenever it grew by more than one
 * percentage point, on reaching 100, once more at the end, then a newline.
 */
export function progressPrinter(write: (text: string) => void): { update: (done: number, total: number) => void; end: () => void } {
  let last = -1;
  const print = (percent: number) => write(`    (${percent.toFixed(2)}/100%)\r`);
  return {
    update(done, total) {
      const percent = total === 0 ? 100 : (done / total) * 100;
      if (last < 0 || percent > last + 1 || (percent === 100 && last !== 100)) {
        print(percent);
        last = percent;
      }
    },
    end() {
      print(100);
      write('\n');
    },
  };
}

/** Runs `qcow2-wasm convert` with `args` (after the command name); returns the exit code. */
export async function convertCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'hf:O:B:co:S:pqnm:WUF:', long: ['help'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) {
    io.stdout('usage: qcow2-wasm convert [-U] [-c] [-p] [-q] [-n] [-f fmt] [-O output_fmt] [-B backing_file [-F backing_fmt]] ' +
      '[-o options] [-S sparse_size] [-m num_coroutines] [-W] filename [filename2 [...]] output_filename\n');
    return 0;
  }
  if (p.operands.length < 2) throw new CliError('Must specify image file name');
  const sourceNames = p.operands.slice(0, -1);
  const targetName = p.operands[p.operands.length - 1];
  const sourceFormat = imageFormat(lastOption(p, 'f'));
  const targetFormat = imageFormat(lastOption(p, 'O')) ?? 'raw';
  const compress = hasOption(p, 'c');
  const skipCreate = hasOption(p, 'n');
  const quiet = hasOption(p, 'q');
  const backingFile = lastOption(p, 'B');
  const backingFormat = lastOption(p, 'F');
  const optionList = p.options.filter(([n]) => n === 'o').map(([, v]) => v).join(',');

  let minSparseBytes = 4096;
  const sparse = lastOption(p, 'S');
  if (sparse !== undefined) {
    const bytes = parseSize(sparse);
    if (bytes === undefined || bytes % 512 !== 0 || bytes > MAX_SPARSE_BYTES) {
      throw new CliError('Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. ' +
        'Select 0 to disable sparse detection (fully allocates output).');
    }
    minSparseBytes = bytes;
  }
  let requestsInFlight = 8;
  const coroutines = lastOption(p, 'm');
  if (coroutines !== undefined) {
    requestsInFlight = Number(coroutines);
    if (!/^\d+$/.test(coroutines) || requestsInFlight < 1 || requestsInFlight > 16) {
      throw new CliError('Invalid number of coroutines. Allowed number of coroutines is between 1 and 16');
    }
  }
  if (skipCreate && optionList !== '') throw new CliError('-o has no effect when skipping image creation');

  // As qemu-img: the sources are opened first, then the target's options are checked in this order.
  const source = await openSources(io, sourceNames, sourceFormat);
  try {
    let create: Omit<CreateOptions, 'virtualSize'> = {};
    if (!skipCreate) {
      try {
        create = parseCreateOptions(optionList, targetFormat).options;
      } catch (error) {
        throw new CliError(describe(error));
      }
    }
    if (backingFile !== undefined && targetFormat === 'raw') throw new CliError(`Backing file not supported for file format 'raw'`);
    if (backingFile !== undefined && source instanceof ConcatenatedImage) {
      throw new CliError('Having a backing file for the target makes no sense when concatenating multiple input images');
    }
    if (backingFile !== undefined && backingFormat === undefined) throw new CliError('Use of backing file requires explicit backing format');
    if (compress && targetFormat === 'raw') throw new CliError('Compression not supported for this file format');
    if (backingFile !== undefined && !skipCreate) {
      create.backingFile = backingFile;
      create.backingFormat = backingFormat === undefined ? undefined : imageFormat(backingFormat);
    }
    if (!skipCreate && targetFormat === 'qcow2') {
      try {
        await createQcow2(createMemoryBackend(), { ...create, virtualSize: source.virtualSize });
      } catch (error) {
        throw new CliError(`${targetName}: error while converting qcow2: ${describe(error).replace(/ \([^)]*\)$/, '')}`);
      }
      if (create.backingFile) {
        const backingPath = resolve(io.cwd, pathCombine(targetName, create.backingFile));
        try {
          await access(backingPath);
        } catch (error) {
          throw new CliError(`Could not open '${targetName}': Could not open backing file: Could not open '${create.backingFile}': ` +
            `${describe(error).includes('ENOENT') ? 'No such file or directory' : describe(error)}`);
        }
      }
    }
    const progress = hasOption(p, 'p') && !quiet ? progressPrinter(io.stdout) : undefined;
    const options = { minSparseBytes, requestsInFlight, onProgress: progress?.update };
    const targetPath = resolve(io.cwd, targetName);
    if (skipCreate) {
      await convertIntoExisting(io, source, targetName, targetFormat, compress, { ...options, targetHasBacking: backingFile !== undefined });
    } else {
      let target: Backend;
      try {
        target = await openNodeBackend(targetPath, { writable: true, create: true });
      } catch (error) {
        throw new CliError(`${targetName}: error while converting ${targetFormat}: ${describe(error)}`);
      }
      const compressor = compress ? createWorkerCompressor() : undefined;
      try {
        if (targetFormat === 'qcow2') await convertToQcow2(source, target, { ...options, create, compress, compressor });
        else await convertToRaw(source, target, options);
      } catch (error) {
        throw new CliError(`error while writing ${targetName}: ${describe(error)}`);
      } finally {
        await compressor?.close();
        await target.close();
      }
    }
    progress?.end();
    return 0;
  } finally {
    await source.close();
  }
}

/** Opens the source images read-only, in order; several become one ConcatenatedImage. */
async function openSources(io: CliIo, names: readonly string[], format: 'qcow2' | 'raw' | undefined): Promise<BlockImage> {
  const images: BlockImage[] = [];
  try {
    for (const name of names) images.push(await openImage(io, name, format));
  } catch (error) {
    await Promise.allSettled(images.map((image) => image.close()));
    throw error;
  }
  return images.length === 1 ? images[0] : new ConcatenatedImage(images);
}

async function convertIntoExisting(io: CliIo, source: BlockImage, targetName: string, targetFormat: 'qcow2' | 'raw', compress: boolean,
  options: Parameters<typeof convertInto>[2]): Promise<void> {
  let target: BlockImage;
  try {
    target = await openImageFile(resolve(io.cwd, targetName));
  } catch (error) {
    throw new CliError(`Could not open '${targetName}': ${describe(error).includes('ENOENT') ? `Could not open '${targetName}': No such file or directory` : describe(error)}`);
  }
  try {
    if ((targetFormat === 'qcow2') !== (target instanceof Qcow2Image)) {
      throw new CliError(`Could not open '${targetName}': the image is not in '${targetFormat}' format`);
    }
    if (target.virtualSize < source.virtualSize) throw new CliError('output file is smaller than input file');
    if (!compress) await convertInto(source, target, options);
    else {
      const compressor = createWorkerCompressor();
      try {
        await convertIntoCompressed(source, target as Qcow2Image, { ...options, compressor });
      } catch (error) {
        // QEMU refuses a compressed write over an allocated cluster with EIO.
        if (error instanceof CompressedOverwriteError) throw new CliError(`error while writing at byte ${error.guestOffset}: Input/output error`);
        throw error;
      } finally {
        await compressor.close();
      }
    }
  } finally {
    await target.close();
  }
}
