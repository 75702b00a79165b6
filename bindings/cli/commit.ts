// SPDX-License-Identifier: MIT
// `qcow2-wasm commit [-f fmt] [-b base] [-d] [-p] [-q] filename` and
// `qcow2-wasm rebase [-f fmt] [-p] [-u] [-c] -b backing_file [-F backing_fmt] filename`: qemu-img's
// options, progress lines and messages, over commitImage and copyBackingDifferences.

import { dirname, resolve } from 'node:path';
import type { Backend } from '../backends/backend.js';
import type { BlockImage } from '../dispatch/image.js';
import { openNodeBackend } from '../backends/node.js';
import { RawImage } from '../raw/raw-image.js';
import { Qcow2Image, probeFormat } from '../qcow2/qcow2-image.js';
import { readQcow2Header } from '../qcow2/qcow2-shadow-update.js';
import { resizeQcow2 } from '../tools/resize.js';
import { commitImage } from '../tools/commit.js';
import { copyBackingDifferences } from '../tools/rebase.js';
import { createWorkerCompressor } from '../qcow2/compress-node.js';
import { writeBackingFileName } from '../qcow2/qcow2-backing-name.js';
import { help } from './main.js';
import { CliError, describe, usageError, type CliIo } from './io.js';
import { hasOption, imageFormat, lastOption, parseArgs } from './args.js';
import { openFailure, pathCombine } from './files.js';
import { PROBED_RAW_WARNING } from './snapshot.js';

/** qemu-img's progress line ("    (12.34/100%)" then a carriage return), printed when the value moves. */
function progressPrinter(io: CliIo, enabled: boolean): { update: (done: number, total: number) => void; end: () => void } {
  let last = -1;
  const print = (percent: number) => {
    if (enabled && percent !== last) io.stdout(`    (${percent.toFixed(2)}/100%)\r`);
    last = percent;
  };
  print(0);
  return {
    update: (done, total) => print(total === 0 ? 100 : Math.floor((done / total) * 10000) / 100),
    end: () => {
      print(100);
      if (enabled) io.stdout('\n');
    },
  };
}

/** Opens `path` writable as a qcow2 image whose backing files open read-only beside it. */
async function openWritableQcow2(backend: Backend, path: string): Promise<Qcow2Image> {
  const beside = (name: string) => openNodeBackend(resolve(dirname(path), name), { writable: false });
  return Qcow2Image.open(backend, { openBacking: beside, openDataFile: beside });
}

/** Runs `commit` with `args`; returns the exit code. */
export async function commitCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'f:ht:b:dpqr:', long: ['help', 'object=', 'image-opts'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) return help(io);
  if (p.operands.length !== 1) throw usageError('Expecting one image file name');
  const file = p.operands[0];
  const path = resolve(io.cwd, file);
  const forced = imageFormat(lastOption(p, 'f'));
  const quiet = hasOption(p, 'q');
  let backend: Backend;
  try {
    backend = await openNodeBackend(path, { writable: true });
  } catch (error) {
    throw new CliError(`Could not open '${file}': ${openFailure(file, error)}`);
  }
  const format = forced ?? (await probeFormat(backend).catch(() => 'raw' as const));
  if (format === 'raw') {
    await backend.close();
    if (forced === undefined) io.stderr(PROBED_RAW_WARNING(file));
    throw new CliError('Image does not have a backing file');
  }
  let header;
  try {
    header = await readQcow2Header(backend);
  } catch (error) {
    await backend.close();
    throw new CliError(`Could not open '${file}': ${describe(error)}`);
  }
  if (header.backingFile === undefined) {
    await backend.close();
    throw new CliError('Image does not have a backing file');
  }
  const basePath = resolve(dirname(path), header.backingFile);
  const requestedBase = lastOption(p, 'b');
  if (requestedBase !== undefined && resolve(io.cwd, requestedBase) !== basePath) {
    await backend.close();
    throw new CliError(`Did not find '${requestedBase}' in the backing chain of '${file}'`);
  }
  // With -b, qemu-img keeps the overlay (-b implies -d).
  const keepOverlay = hasOption(p, 'd') || requestedBase !== undefined;
  let overlay: Qcow2Image;
  try {
    overlay = await openWritableQcow2(backend, path);
  } catch (error) {
    await backend.close();
    throw new CliError(`Could not open '${file}': ${describe(error)}`);
  }
  let base: BlockImage | undefined;
  try {
    base = await openBase(basePath, pathCombine(file, header.backingFile), header.backingFormat, overlay.virtualSize);
    const progress = progressPrinter(io, hasOption(p, 'p') && !quiet);
    await commitImage(overlay, base, { keepOverlay, onProgress: progress.update });
    progress.end();
  } catch (error) {
    throw error instanceof CliError ? error : new CliError(describe(error));
  } finally {
    await Promise.allSettled([overlay.close(), base?.close()]);
  }
  if (!quiet) io.stdout('Image committed.\n');
  return 0;
}

// Opens the backing image writable (grown to `size` first when smaller, as qemu-img grows it).
async function openBase(path: string, shown: string, format: string | undefined, size: number): Promise<BlockImage> {
  let backend: Backend;
  try {
    backend = await openNodeBackend(path, { writable: true });
  } catch (error) {
    throw new CliError(`Could not reopen '${shown}': ${openFailure(shown, error)}`);
  }
  const detected = format ?? (await probeFormat(backend));
  if (detected === 'raw') {
    if ((await backend.getSize()) < size) await backend.truncate!(size);
    return RawImage.open(backend);
  }
  if ((await readQcow2Header(backend)).virtualSize < size) await resizeQcow2(backend, size);
  return openWritableQcow2(backend, path);
}

/** Runs `rebase` with `args`; returns the exit code. */
export async function rebaseCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'hf:F:b:upt:T:qc', long: ['help', 'object=', 'image-opts', 'force-share'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) return help(io);
  if (p.operands.length !== 1) throw usageError('Expecting one image file name');
  const unsafe = hasOption(p, 'u');
  const newName = lastOption(p, 'b');
  if (newName === undefined && !unsafe) throw usageError('Must specify backing file (-b) or use unsafe mode (-u)');
  const compress = hasOption(p, 'c');
  const file = p.operands[0];
  const path = resolve(io.cwd, file);
  const newFormat = imageFormat(lastOption(p, 'F'));
  const target = newName === undefined || newName === '' ? undefined : newName;
  if (target !== undefined && newFormat === undefined) throw new CliError(`Could not change the backing file to '${target}': backing format must be specified`);
  let backend: Backend;
  try {
    backend = await openNodeBackend(path, { writable: true });
  } catch (error) {
    throw new CliError(`Could not open '${file}': ${openFailure(file, error)}`);
  }
  const forced = imageFormat(lastOption(p, 'f'));
  if ((forced ?? (await probeFormat(backend))) === 'raw') {
    await backend.close();
    if (compress) throw new CliError('Compression not supported for this file format');
    throw new CliError(`Could not change the backing file to '${newName ?? ''}': Operation not supported`);
  }
  if (unsafe) {
    try {
      await writeBackingFileName(backend, target, newFormat);
    } catch (error) {
      throw new CliError(`Could not change the backing file to '${newName ?? ''}': ${describe(error)}`);
    } finally {
      await backend.close();
    }
    return 0;
  }
  let image: Qcow2Image;
  try {
    image = await openWritableQcow2(backend, path);
  } catch (error) {
    await backend.close();
    throw new CliError(`Could not open '${file}': ${describe(error)}`);
  }
  try {
    let newBacking: BlockImage | undefined;
    if (target !== undefined) {
      // The new name is relative to the image, as it will be stored.
      const shown = pathCombine(file, target);
      let newBackend: Backend;
      try {
        newBackend = await openNodeBackend(resolve(dirname(path), target), { writable: false });
      } catch (error) {
        throw new CliError(`Could not open new backing file '${shown}': ${openFailure(shown, error)}`);
      }
      try {
        const beside = (name: string) => openNodeBackend(resolve(dirname(resolve(dirname(path), target)), name), { writable: false });
        newBacking = newFormat === 'raw' ? await RawImage.open(newBackend, { readOnly: true })
          : await Qcow2Image.open(newBackend, { readOnly: true, openBacking: beside, openDataFile: beside });
      } catch (error) {
        await newBackend.close();
        throw new CliError(`Could not open new backing file '${shown}': ${describe(error)}`);
      }
    }
    try {
      const progress = progressPrinter(io, hasOption(p, 'p') && !hasOption(p, 'q'));
      const compressor = compress ? createWorkerCompressor() : undefined;
      try {
        await copyBackingDifferences(image, newBacking, { onProgress: progress.update, compress, compressor });
      } finally {
        await compressor?.close();
      }
      progress.end();
    } finally {
      await newBacking?.close();
    }
    await image.setBackingFile(target, target === undefined ? undefined : newFormat);
  } catch (error) {
    throw error instanceof CliError ? error : new CliError(describe(error));
  } finally {
    await image.close();
  }
  return 0;
}
