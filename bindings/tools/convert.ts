// SPDX-License-Identifier: MIT
// convert / export: copies any BlockImage (a whole backing chain, a raw disk, an HTTP base under an
// OPFS overlay) into a new qcow2 or raw image on any backend, into an existing image, or as a raw
// stream to a WritableStream, as qemu-img convert does: zero and unallocated ranges are skipped
// (-S semantics), several chunks are read (and compressed) at once and written in guest order,
// writes are gathered into large host writes. Platform-neutral; compression runs on the thread
// given by the compressor (bindings/qcow2/compress.ts, bindings/qcow2/compress-node.ts).

import type { Backend } from '../backends/backend.js';
import type { BlockImage, CreateOptions } from '../dispatch/image.js';
import { ImageError } from '../base/errors.js';
import { WriteQueue } from '../backends/write-queue.js';
import { Qcow2SequentialWriter, type SequentialWriteResult } from '../qcow2/qcow2-sequential-writer.js';
import { classifySource } from './convert-plan.js';
import { chunkActions, decideClusters, planChunk } from './convert-cluster-plan.js';
import { APPLIED, prepareBytes, readRanges, runPipeline, type Action, type Applied } from './convert-pipeline.js';
import { createInlineCompressor, type ClusterCompressor } from '../qcow2/compress.js';
import type { CompressionType } from '../qcow2/decompress.js';
import { convertChunkBytes } from './convert-chunk-size.js';

/** Options of every convert function. */
export interface ConvertOptions {
  /**
   * Zero runs shorter than this (bytes, a multiple of 512) are written anyway; longer ones are
   * skipped (qemu-img's -S; default 4096). 0 writes every byte the source stores as data.
   */
  minSparseBytes?: number;
  /** Chunks read, compressed and written at once (qemu-img's -m; default 8, 1 to 16). */
  requestsInFlight?: number;
  /** Called after each chunk with the guest bytes done and the total. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/** Options of convertToQcow2: the target's create options (virtualSize defaults to the source's). */
export interface ConvertToQcow2Options extends ConvertOptions {
  /** The new image's create options, as Qcow2Image.create takes them; default: qemu-img create's defaults. */
  create?: Omit<CreateOptions, 'virtualSize'> & {
    /** The new image's size in bytes; default (and minimum) the source's virtual size. */
    virtualSize?: number;
  };
  /** Store clusters compressed where that saves space (qemu-img convert -c). */
  compress?: boolean;
  /** Compressor for `compress` (default: on the calling thread). Not closed by convert. */
  compressor?: ClusterCompressor;
}

/** Options of convertInto. */
export interface ConvertIntoOptions extends ConvertOptions {
  /** Leave ranges the source's backing chain serves to the target's backing file (convert -n -B). */
  targetHasBacking?: boolean;
}

/** What a convert wrote. */
export interface ConvertResult {
  /** Guest bytes the target holds: the source's virtual size. */
  virtualSize: number;
  /** Guest bytes written as data (compressed clusters count whole). */
  dataBytes: number;
  /** For qcow2 targets: the sequential writer's counts. */
  qcow2?: SequentialWriteResult;
}

const DEFAULT_MIN_SPARSE = 4096;
const DEFAULT_IN_FLIGHT = 8;

/** Checks the options every convert takes; returns -S and -m with their defaults. Throws INVALID_ARGUMENT. */
export function checkOptions(options: ConvertOptions): { minSparse: number; inFlight: number } {
  const minSparse = options.minSparseBytes ?? DEFAULT_MIN_SPARSE;
  const inFlight = options.requestsInFlight ?? DEFAULT_IN_FLIGHT;
  if (!Number.isSafeInteger(minSparse) || minSparse < 0 || minSparse % 512 !== 0) {
    throw new ImageError('INVALID_ARGUMENT', `minSparseBytes must be a non-negative multiple of 512, got ${minSparse}`);
  }
  if (!Number.isSafeInteger(inFlight) || inFlight < 1 || inFlight > 16) {
    throw new ImageError('INVALID_ARGUMENT', `requestsInFlight must be an integer from 1 to 16, got ${inFlight}`);
  }
  return { minSparse, inFlight };
}

/**
 * Copies `source` into a new qcow2 image written front to back into `target` (truncated first):
 * options.create as Qcow2Image.create takes them (virtualSize defaults to the source's; a
 * `backingFile` makes it an overlay: only what the source's own top layer holds is copied, as with
 * qemu-img convert -B). `preallocation` is refused. Resolves once the image is complete and
 * flushed; the backend stays open. Errors: Qcow2CreateError for create options, INVALID_ARGUMENT,
 * source read errors, backend errors (the target is then not a valid image).
 */
export async function convertToQcow2(source: BlockImage, target: Backend, options: ConvertToQcow2Options = {}): Promise<ConvertResult> {
  const { minSparse, inFlight } = checkOptions(options);
  const create: CreateOptions = { ...options.create, virtualSize: options.create?.virtualSize ?? source.virtualSize };
  if (create.virtualSize < source.virtualSize) {
    throw new ImageError('INVALID_ARGUMENT', `the target's virtual size ${create.virtualSize} is below the source's ${source.virtualSize}`);
  }
  const writer = await Qcow2SequentialWriter.start(target, create);
  const clusterBytes = writer.clusterBytes;
  const targetHasBacking = create.backingFile !== undefined && create.backingFile !== '';
  const compressor = options.compress ? options.compressor ?? createInlineCompressor() : undefined;
  const ownCompressor = options.compress && !options.compressor;
  const zeroAction = (guestOffset: number, end: number): Action | undefined => {
    if (!targetHasBacking) return undefined; // a new image reads zeros already
    return writer.zeroFlagSupported
      ? { kind: 'zero', guestOffset, length: end - guestOffset }
      : { kind: 'data', guestOffset, bytes: new Uint8Array(end - guestOffset) };
  };

  const prepare = async (start: number, length: number, buffer: Uint8Array): Promise<Action[]> => {
    const plan = planChunk(await classifySource(source, start, length, targetHasBacking, minSparse === 0), start, length, clusterBytes);
    await readRanges(source, start, buffer, plan.reads);
    buffer.fill(0, length, plan.needs.length * clusterBytes); // a last cluster past the virtual size pads with zeros
    const decided = decideClusters(plan, buffer, minSparse, compressor !== undefined);
    const actions = chunkActions(plan, decided, buffer, compressor !== undefined, zeroAction);
    if (compressor) await compressDataActions(compressor, writer.compressionType, clusterBytes, buffer, actions);
    return actions;
  };

  const apply = async (actions: Action[]): Promise<Applied> => {
    for (const action of actions) {
      if (action.kind === 'data') await writer.writeData(action.guestOffset, action.bytes);
      else if (action.kind === 'compressed') await writer.writeCompressed(action.guestOffset, action.bytes);
      else for (let at = action.guestOffset; at < action.guestOffset + action.length; at += clusterBytes) writer.writeZero(at);
    }
    return { bufferFree: writer.written() };
  };

  try {
    const dataBytes = await runPipeline({
      source, clusterBytes, chunkBytes: Math.ceil(convertChunkBytes() / clusterBytes) * clusterBytes, inFlight, prepare, apply, pooled: true,
      allocate: compressor?.allocateBuffer?.bind(compressor), onProgress: options.onProgress,
    });
    const qcow2 = await writer.finish();
    return { virtualSize: create.virtualSize, dataBytes, qcow2 };
  } catch (error) {
    await writer.abandon();
    throw error;
  } finally {
    if (ownCompressor) await compressor?.close();
  }
}

/**
 * Compresses the one-cluster data actions of a chunk (whose bytes lie in `buffer`, in guest
 * order) with `compressor`, replacing each that compresses smaller by a compressed action. The
 * clusters first move to the front of `buffer`, end to end, as the compressor takes them: each
 * moves down or stays, so none is overwritten before it moved.
 */
async function compressDataActions(compressor: ClusterCompressor, type: CompressionType, clusterBytes: number, buffer: Uint8Array,
  actions: Action[]): Promise<void> {
  const candidates: number[] = [];
  for (let i = 0; i < actions.length; i++) {
    const action = actions[i];
    if (action.kind !== 'data') continue;
    const packedAt = candidates.length * clusterBytes;
    const at = action.bytes.byteOffset - buffer.byteOffset;
    if (at !== packedAt) buffer.copyWithin(packedAt, at, at + clusterBytes);
    action.bytes = buffer.subarray(packedAt, packedAt + action.bytes.byteLength);
    candidates.push(i);
  }
  if (candidates.length === 0) return;
  const results = await compressor.compressClusters(type, buffer.subarray(0, candidates.length * clusterBytes), clusterBytes);
  candidates.forEach((index, i) => {
    const compressed = results[i];
    if (compressed) actions[index] = { kind: 'compressed', guestOffset: actions[index].guestOffset, bytes: compressed };
  });
}

/**
 * Copies `source` into `target` as a raw image (emptied and sized to the virtual size first, as
 * qemu-img creates a raw target, then written where the source holds data, holes left elsewhere).
 * Resolves once flushed; the backend stays open. Errors: INVALID_ARGUMENT, source read errors,
 * backend errors.
 */
export async function convertToRaw(source: BlockImage, target: Backend, options: ConvertOptions = {}): Promise<ConvertResult> {
  const { minSparse, inFlight } = checkOptions(options);
  if (!target.truncate) throw new ImageError('INVALID_ARGUMENT', 'a raw target backend must support truncate');
  // Sized before the writes, so none extends the file (no size update per write).
  await target.truncate(0);
  await target.truncate(source.virtualSize);
  const writes = new WriteQueue(target);
  const apply = async (actions: Action[]): Promise<Applied> => {
    for (const action of actions) {
      if (action.kind !== 'data') continue;
      writes.write(action.guestOffset, action.bytes);
      await writes.backpressure();
    }
    return { bufferFree: writes.written() };
  };
  try {
    const dataBytes = await runPipeline({
      source, clusterBytes: 0, chunkBytes: convertChunkBytes(), inFlight,
      prepare: (start, length, buffer) => prepareBytes(source, start, length, buffer, minSparse, false), pooled: true,
      apply, onProgress: options.onProgress,
    });
    await writes.flush();
    return { virtualSize: source.virtualSize, dataBytes };
  } catch (error) {
    await writes.abandon();
    throw error;
  }
}

/**
 * Copies `source` into the existing, writable image `target` (qemu-img convert -n): data where the
 * source holds data, zeros written where it reads zeros (the target may hold anything), and with
 * `targetHasBacking` ranges the source's backing chain serves left alone. The target must be at
 * least as large as the source. Resolves after target.flush(); the target stays open.
 */
export async function convertInto(source: BlockImage, target: BlockImage, options: ConvertIntoOptions = {}): Promise<ConvertResult> {
  const { minSparse, inFlight } = checkOptions(options);
  if (target.readOnly) throw new ImageError('IMAGE_READ_ONLY', 'the target image is read-only');
  if (target.virtualSize < source.virtualSize) {
    throw new ImageError('INVALID_ARGUMENT', `the target's virtual size ${target.virtualSize} is below the source's ${source.virtualSize}`);
  }
  const apply = async (actions: Action[]): Promise<Applied> => {
    const data = actions.filter((a): a is Extract<Action, { kind: 'data' }> => a.kind === 'data');
    const zeros = actions.filter((a): a is Extract<Action, { kind: 'zero' }> => a.kind === 'zero');
    await Promise.all([
      ...target.multiwrite(data.map((a) => ({ offset: a.guestOffset, data: a.bytes }))),
      ...zeros.map((a) => target.writeZeroes(a.guestOffset, a.length)),
    ]);
    return APPLIED;
  };
  const dataBytes = await runPipeline({
    source, clusterBytes: 0, chunkBytes: convertChunkBytes(), inFlight,
    prepare: (start, length, buffer) => prepareBytes(source, start, length, buffer, minSparse, options.targetHasBacking === true),
    pooled: true,
    apply, onProgress: options.onProgress,
  });
  await target.flush();
  return { virtualSize: source.virtualSize, dataBytes };
}

/**
 * Streams `source` as a raw image (every byte, zeros included, in order) into `stream`, for
 * downloads: memory stays at a few chunks whatever the image size, and the stream's backpressure
 * is respected. Closes the stream when done; aborts it on failure and rethrows.
 */
export async function convertToRawStream(source: BlockImage, stream: WritableStream<Uint8Array>, options: ConvertOptions = {}): Promise<ConvertResult> {
  const { inFlight } = checkOptions(options);
  const writer = stream.getWriter();
  const zeros = new Uint8Array(convertChunkBytes());
  let position = 0;
  const apply = async (actions: Action[]): Promise<Applied> => {
    for (const action of actions) {
      if (action.guestOffset > position) await writer.write(zeros.subarray(0, action.guestOffset - position));
      if (action.kind === 'zero') await writer.write(zeros.subarray(0, action.length));
      else await writer.write(action.bytes);
      position = action.guestOffset + (action.kind === 'zero' ? action.length : action.bytes.byteLength);
    }
    return APPLIED;
  };
  try {
    const dataBytes = await runPipeline({
      source, clusterBytes: 0, chunkBytes: convertChunkBytes(), inFlight,
      // Zero and unallocated ranges go out from the shared zero buffer instead of being read.
      prepare: (start, length, buffer) => prepareBytes(source, start, length, buffer, DEFAULT_MIN_SPARSE, false), pooled: false,
      apply, onProgress: options.onProgress,
    });
    if (position < source.virtualSize) await writer.write(new Uint8Array(source.virtualSize - position));
    await writer.close();
    return { virtualSize: source.virtualSize, dataBytes };
  } catch (error) {
    await writer.abort(error).catch(() => {});
    throw error;
  }
}
