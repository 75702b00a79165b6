// SPDX-License-Identifier: MIT
// `qcow2-wasm compare [-f fmt] [-F fmt] [-q] [-s] [-U] filename1 filename2`: qemu-img compare's
// messages and exit codes (0 identical, 1 different, 2 error); ranges both maps show as zeros are
// not read.

import type { BlockImage } from '../dispatch/image.js';
import { mapImage, type MapEntry } from '../tools/qcow2-map.js';
import { help } from './main.js';
import { CliError, describe, usageError, type CliIo } from './io.js';
import { forceShare, hasOption, imageFormat, lastOption, parseArgs } from './args.js';
import { openImage } from './files.js';
import { firstBlockStatusMismatch } from './compare-strict.js';

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

/** Runs `compare` with `args`; returns 0 (identical), 1 (different) or 2 (error). */
export async function compareCommand(io: CliIo, args: readonly string[]): Promise<number> {
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
