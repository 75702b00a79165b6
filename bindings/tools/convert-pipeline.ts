// SPDX-License-Identifier: MIT
// The convert pipeline, whatever the target: chunks of the source are read (and planned into
// actions: data, compressed data, zeros) several at once, and their actions applied to the target
// strictly in guest order, each chunk's buffer reused once the target is done with it. Also the
// byte-granular planning that raw, stream and existing-image targets share.

import type { BlockImage } from '../dispatch/image.js';
import { classifySource, sparseRuns, SourceStatus } from './convert-plan.js';
import { allocateChunkBuffer } from './convert-chunk-size.js';

/** One thing to do to the target, in guest order. */
export type Action =
  | { kind: 'data'; guestOffset: number; bytes: Uint8Array }
  | { kind: 'compressed'; guestOffset: number; bytes: Uint8Array }
  | { kind: 'zero'; guestOffset: number; length: number };

/** What applying a chunk's actions leaves running: settles once the target is done with the chunk's buffer. */
export interface Applied {
  /** Resolves (never rejects; failures surface through the target's next call) when the buffer may be reused. */
  bufferFree: Promise<void>;
}

/** Applied for a target that is done with a chunk's buffer once its actions are issued. */
export const APPLIED: Applied = { bufferFree: Promise.resolve() };

/** A convert run: its source, chunking, how a chunk is prepared and how its actions are applied. */
export interface Pipeline {
  source: BlockImage;
  /** Guest bytes a compressed action stands for. */
  clusterBytes: number;
  chunkBytes: number;
  inFlight: number;
  /**
   * Reads and plans one chunk into `buffer` (chunkBytes long, contents unspecified). Its actions
   * may refer to `buffer` until the Applied of `apply` says it is free.
   */
  prepare: (start: number, length: number, buffer: Uint8Array) => Promise<Action[]>;
  /** Reuse chunk buffers once free (at most inFlight + 2 exist at once); otherwise one per chunk. */
  pooled: boolean;
  /**
   * Makes a zero-filled chunk buffer (default: the platform's, allocateChunkBuffer, for pooled
   * buffers; a plain Uint8Array for the others, which leave with the target's data, may be
   * transferred by its consumer, and are never reused).
   */
  allocate?: (byteLength: number) => Uint8Array;
  /** Hands `actions` to the target in guest order; resolves once they are issued. */
  apply: (actions: Action[]) => Promise<Applied>;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/**
 * Prepares up to `inFlight` chunks at once and applies their actions strictly in guest order;
 * returns the guest bytes written as data. Applying only issues the writes: the next chunk is
 * applied while the previous one's writes run, and a chunk's buffer returns to the pool when its
 * writes are done.
 */
export async function runPipeline(p: Pipeline): Promise<number> {
  const total = p.source.virtualSize;
  const queue: { actions: Promise<Action[]>; buffer: Uint8Array }[] = [];
  const spare: Uint8Array[] = [];
  const busy = new Set<Promise<void>>();
  const maxBuffers = p.inFlight + 2;
  let bufferCount = 0;
  let nextStart = 0;
  let done = 0;
  let dataBytes = 0;
  const fill = (): void => {
    while (queue.length < p.inFlight && nextStart < total) {
      let buffer = spare.pop();
      if (!buffer && (!p.pooled || bufferCount < maxBuffers)) {
        buffer = p.allocate ? p.allocate(p.chunkBytes) : p.pooled ? allocateChunkBuffer(p.chunkBytes) : new Uint8Array(p.chunkBytes);
        bufferCount++;
      }
      if (!buffer) return;
      const length = Math.min(p.chunkBytes, total - nextStart);
      const actions = p.prepare(nextStart, length, buffer);
      actions.catch(() => {}); // awaited in order below
      queue.push({ actions, buffer });
      nextStart += length;
    }
  };
  try {
    p.onProgress?.(0, total);
    fill();
    while (queue.length > 0 || nextStart < total) {
      if (queue.length === 0) {
        await Promise.race(busy);
        fill();
        continue;
      }
      const { actions: prepared, buffer } = queue[0];
      const actions = await prepared;
      queue.shift();
      fill();
      const { bufferFree } = await p.apply(actions);
      if (p.pooled) {
        const release: Promise<void> = bufferFree.then(() => {
          busy.delete(release);
          spare.push(buffer);
        });
        busy.add(release);
      }
      for (const action of actions) if (action.kind !== 'zero') dataBytes += Math.max(action.bytes.byteLength, action.kind === 'compressed' ? p.clusterBytes : 0);
      done = Math.min(total, done + p.chunkBytes);
      p.onProgress?.(done, total);
    }
    await Promise.all(busy);
  } finally {
    await Promise.allSettled([...queue.map((entry) => entry.actions), ...busy]);
  }
  return dataBytes;
}

/** Reads guest [start, end) ranges of `source` into `target` (which starts at guest `base`). */
export async function readRanges(source: BlockImage, base: number, target: Uint8Array, ranges: readonly [number, number][]): Promise<void> {
  await Promise.all(ranges.map(([start, end]) => source.readInto(start, target.subarray(start - base, end - base))));
}

/** Byte-granular actions for raw, stream and existing-image targets. */
export async function prepareBytes(source: BlockImage, start: number, length: number, buffer: Uint8Array, minSparse: number,
  targetHasBacking: boolean): Promise<Action[]> {
  const segments = await classifySource(source, start, length, targetHasBacking, minSparse === 0);
  const dataRanges = segments.filter((s) => s.status === SourceStatus.DATA).map((s): [number, number] => [s.start, s.start + s.length]);
  await readRanges(source, start, buffer, dataRanges);
  const actions: Action[] = [];
  for (const segment of segments) {
    if (segment.status === SourceStatus.ZERO) actions.push({ kind: 'zero', guestOffset: segment.start, length: segment.length });
    else if (segment.status === SourceStatus.DATA) {
      const bytes = buffer.subarray(segment.start - start, segment.start - start + segment.length);
      sparseRuns(segment.start, bytes, minSparse, (guestOffset, runLength, data) => {
        actions.push(data
          ? { kind: 'data', guestOffset, bytes: bytes.subarray(guestOffset - segment.start, guestOffset - segment.start + runLength) }
          : { kind: 'zero', guestOffset, length: runLength });
      });
    }
  }
  return actions;
}
