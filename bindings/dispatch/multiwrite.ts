// SPDX-License-Identifier: MIT
// The multiwrite dispatcher: gathers write requests into batches, has the wasm core
// merge them, issues one host write per merged extent in guest order behind any overlapping I/O
// still in flight, and settles each request exactly once when every extent over its bytes has.

import type { ImageStats } from './image.js';
import { COMPLETED, type BackendLimits } from '../backends/backend.js';
import type { InflightRanges } from './inflight.js';
import type { MergeCore, MergeMode } from '../core/merge-core.js';
import { appendSlices, zeroVector } from '../base/iovec.js';
import { ImageError, Qcow2WasmError } from '../base/errors.js';

/** A guest byte range [start, end) inside a merged extent that no request of the batch covers. */
export interface GapRange { start: number; end: number }

/** Where merged extents go: the format behind the image. */
export interface ExtentSink {
  /**
   * Writes guest bytes [guestOffset, guestOffset + length), given as `buffers` that tile the range
   * in order. `gaps` (in guest order, usually empty) are ranges the merge bridged: their buffers
   * are zero placeholders, and the sink writes there what those bytes read when the write runs
   * (it is ordered behind every earlier overlapping write by then). Resolves when the image reads
   * the new bytes back; rejects with the failure.
   */
  writeExtent(guestOffset: number, length: number, buffers: Uint8Array[], gaps: readonly GapRange[]): Promise<void>;
}

/** A validated write waiting for its batch. */
export interface QueuedWrite {
  offset: number;
  length: number;
  data: Uint8Array | readonly Uint8Array[];
  completion: Completion;
}

/**
 * Settles one request exactly once. It starts with one reference held by the submission (QEMU's
 * dummy request), takes one per extent over its bytes, and settles when the count reaches zero:
 * rejected with the first failure if any part failed, resolved otherwise.
 */
export class Completion {
  readonly promise: Promise<void>;
  private remaining = 1;
  private failure: Error | undefined;
  private resolve!: () => void;
  private reject!: (error: Error) => void;

  constructor() {
    this.promise = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  /** Takes `count` more references. */
  hold(count: number): void {
    this.remaining += count;
  }

  /** Drops one reference, recording `failure` if it is the first. */
  release(failure?: Error): void {
    if (failure && !this.failure) this.failure = failure;
    if (--this.remaining === 0) {
      if (this.failure) this.reject(this.failure);
      else this.resolve();
    }
  }
}

/**
 * The error a guest request rejects with when host I/O for it failed: image-level errors pass
 * through; backend and unknown errors become IMAGE_IO_ERROR with the original as `cause`.
 */
export function ioFailure(operation: 'read' | 'write' | 'flush' | 'close', error: unknown): Error {
  if (error instanceof Qcow2WasmError && !error.code.startsWith('BACKEND_')) return error;
  const detail = error instanceof Error ? error.message : String(error);
  return new ImageError('IMAGE_IO_ERROR', `${operation} failed: ${detail}`, { cause: error });
}

/** The gaps of an extent without any, and the carriers of a batch's only request (both never changed). */
const NO_GAPS: readonly GapRange[] = [];
const LONE_REQUEST: readonly number[] = [0];

/** Batches, merges and issues writes for one image. */
export class WriteDispatcher {
  /** Merge switch; may be changed between batches. */
  mode: MergeMode;
  private queued: QueuedWrite[] = [];
  private scheduled = false;
  private readonly core: MergeCore;
  private readonly sink: ExtentSink;
  private readonly inflight: InflightRanges;
  private readonly limits: BackendLimits;
  private readonly counters: ImageStats;

  constructor(core: MergeCore, sink: ExtentSink, inflight: InflightRanges, limits: BackendLimits,
              counters: ImageStats, mode: MergeMode) {
    this.core = core;
    this.sink = sink;
    this.inflight = inflight;
    this.limits = limits;
    this.counters = counters;
    this.mode = mode;
  }

  /**
   * Queues validated writes. With `now` they are dispatched at once together with anything queued
   * before them; otherwise at the end of the current tick, so writes of one tick share a batch.
   */
  submit(writes: QueuedWrite[], now: boolean): void {
    for (const write of writes) this.queued.push(write);
    if (now) this.dispatchQueued();
    else if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(() => {
        this.scheduled = false;
        this.dispatchQueued();
      });
    }
  }

  /** Dispatches everything queued; later reads and flushes then see it as in flight. */
  dispatchQueued(): void {
    const batch = this.queued;
    if (batch.length === 0) return;
    this.queued = [];
    if (batch.length === 1 && this.isOneExtent(batch[0])) {
      this.issueAlone(batch);
      return;
    }
    const offsets = batch.map((write) => write.offset);
    const lengths = batch.map((write) => write.length);
    const max = this.core.maxBatchRequests;
    for (let first = 0; first < batch.length; first += max) {
      this.dispatchChunk(batch, offsets, lengths, first, Math.min(max, batch.length - first));
    }
  }

  // 1. Merge the chunk in wasm (halving it if the output regions overflow).
  // 2. Give every request one reference per extent over its range.
  // 3. Issue each extent behind overlapping I/O in flight; release its requests when it settles.
  // 4. Drop the submission's own reference of every request.
  private dispatchChunk(batch: QueuedWrite[], offsets: number[], lengths: number[], first: number, count: number): void {
    const extentCount = this.core.merge(offsets, lengths, first, count, this.mode, this.limits.maxIov, this.limits.maxTransfer);
    if (extentCount === 'output-full') {
      if (count === 1) {
        batch[first].completion.release(new ImageError('INVALID_ARGUMENT',
          `a write of ${lengths[first]} bytes needs more extents than one batch holds; raise the backend's maxTransfer`));
        return;
      }
      const half = count >> 1;
      this.dispatchChunk(batch, offsets, lengths, first, half);
      this.dispatchChunk(batch, offsets, lengths, first + half, count - half);
      return;
    }
    const { extents, pieces, requestMap } = this.core;
    const carriers: number[][] = new Array(extentCount);
    for (let r = 0; r < count; r++) {
      const firstExtent = requestMap[2 * r];
      const extentsOfRequest = requestMap[2 * r + 1];
      batch[first + r].completion.hold(extentsOfRequest);
      for (let e = firstExtent; e < firstExtent + extentsOfRequest; e++) (carriers[e] ??= []).push(first + r);
    }
    let merged = 0;
    for (let e = 0; e < extentCount; e++) {
      const guestOffset = extents[4 * e];
      const length = extents[4 * e + 1];
      const firstPiece = extents[4 * e + 2];
      const pieceCount = extents[4 * e + 3];
      const buffers: Uint8Array[] = [];
      const gaps: GapRange[] = [];
      let position = guestOffset;
      for (let p = firstPiece; p < firstPiece + pieceCount; p++) {
        const request = pieces[3 * p];
        const pieceLength = pieces[3 * p + 2];
        if (request === this.core.gapRequest) {
          buffers.push(...zeroVector(pieceLength));
          gaps.push({ start: position, end: position + pieceLength });
        } else {
          appendSlices(batch[first + request].data, pieces[3 * p + 1], pieceLength, buffers);
        }
        position += pieceLength;
      }
      const requests = carriers[e];
      if (requests.length > 1) merged += requests.length;
      this.issue(guestOffset, length, buffers, gaps, requests, batch);
    }
    this.counters.extents += extentCount;
    this.counters.mergedRequests += merged;
    for (let r = 0; r < count; r++) batch[first + r].completion.release();
  }

  // Whether a lone write is one extent as it is (the merge would return it unchanged).
  private isOneExtent(write: QueuedWrite): boolean {
    const pieces = write.data instanceof Uint8Array ? 1 : write.data.length;
    return write.length > 0 && write.length <= this.limits.maxTransfer && pieces <= this.limits.maxIov;
  }

  // Issues the batch's one write as its own extent, without the merge.
  private issueAlone(batch: QueuedWrite[]): void {
    const write = batch[0];
    const buffers: Uint8Array[] = [];
    appendSlices(write.data, 0, write.length, buffers);
    write.completion.hold(1);
    this.counters.extents++;
    this.issue(write.offset, write.length, buffers, NO_GAPS, LONE_REQUEST, batch);
    write.completion.release();
  }

  // Writes the extent behind overlapping I/O in flight, or at once when there is none; an extent
  // the sink finished before returning (COMPLETED) releases its requests at once and leaves
  // nothing in flight.
  private issue(guestOffset: number, length: number, buffers: Uint8Array[], gaps: readonly GapRange[], requests: readonly number[], batch: QueuedWrite[]): void {
    const end = guestOffset + length;
    let written: Promise<void>;
    if (this.inflight.mustWait(guestOffset, end, true)) {
      written = this.inflight.register(guestOffset, end, true, (wait) => Promise.all(wait).then(() => this.sink.writeExtent(guestOffset, length, buffers, gaps)));
    } else {
      try {
        written = this.sink.writeExtent(guestOffset, length, buffers, gaps);
      } catch (error) {
        written = Promise.reject(error);
      }
      if (written === COMPLETED) {
        for (const r of requests) batch[r].completion.release();
        return;
      }
      this.inflight.track(guestOffset, end, true, written);
    }
    written.then(
      () => { for (const r of requests) batch[r].completion.release(); },
      (error: unknown) => {
        for (const r of requests) batch[r].completion.release(ioFailure('write', error));
      });
  }
}
