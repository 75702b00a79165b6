// SPDX-License-Identifier: MIT
// `qcow2-wasm map [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename`:
// qemu-img map's table and JSON, over mapImage.

import type { BlockImage } from '../dispatch/image.js';
import { Qcow2Image } from '../qcow2/qcow2-image.js';
import { mapImage, type MapEntry } from '../tools/qcow2-map.js';
import { help } from './main.js';
import { CliError, usageError, type CliIo } from './io.js';
import { forceShare, hasOption, imageFormat, lastOption, outputFormat, parseArgs } from './args.js';
import { parseSize } from './sizes.js';
import { openImage, pathCombine } from './files.js';

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

/** Runs `map` with `args`; returns the exit code. */
export async function mapCommand(io: CliIo, args: readonly string[]): Promise<number> {
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
