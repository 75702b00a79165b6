// SPDX-License-Identifier: MIT
// The format-independent half of an image: argument checks, the multiwrite dispatcher, ordering
// of overlapping I/O in flight, flush and close sequencing, statistics. A format (RawImage,
// Qcow2Image) supplies how to read a range, write a merged extent, discard, flush and close.

import type { BlockImage, ImageStats, WriteRequest } from './image.js';
import { COMPLETED, type Backend, type BackendLimits } from '../backends/backend.js';
import { splitVector, zeroVector } from '../base/iovec.js';
import { allSettledOrThrow } from '../base/settle.js';
import { checkGuestRange, checkReadTarget, emptyStats, readIntoNewBuffer, requestLength } from './image.js';
import { InflightRanges } from './inflight.js';
import type { MergeCore, MergeMode } from '../core/merge-core.js';
import { Completion, WriteDispatcher, ioFailure, type GapRange, type QueuedWrite } from './multiwrite.js';
import { ImageError, Qcow2WasmError } from '../base/errors.js';

/** What a format tells the shared image machinery at construction. */
export interface DispatchedImageParts {
  virtualSize: number;
  readOnly: boolean;
  core: MergeCore;
  limits: BackendLimits;
  mergeMode: MergeMode;
}

/** Base class of the image formats: everything of BlockImage that is not format-specific. */
export abstract class DispatchedImage implements BlockImage {
  readonly virtualSize: number;
  readonly readOnly: boolean;
  /** Counters since open; formats add host traffic. */
  protected readonly counters: ImageStats = emptyStats();
  protected readonly inflight = new InflightRanges();
  private readonly dispatcher: WriteDispatcher;
  private closing: Promise<void> | undefined;
  /** Settles (never rejects) once every flush() called so far has settled. */
  private flushesSettled: Promise<void> = Promise.resolve();
  /** Set when the format can no longer trust its in-memory state: every request still to run rejects with it. */
  protected refusal: Qcow2WasmError | undefined;

  protected constructor(parts: DispatchedImageParts) {
    this.virtualSize = parts.virtualSize;
    this.readOnly = parts.readOnly;
    this.dispatcher = new WriteDispatcher(parts.core, {
      writeExtent: (guestOffset, length, buffers, gaps) => this.refusal ? Promise.reject(this.refusal) : this.writeExtent(guestOffset, length, buffers, gaps),
    }, this.inflight, parts.limits, this.counters, parts.mergeMode);
  }

  /** Reads host data for guest bytes [offset, offset + target.length) into target. */
  protected abstract readRange(offset: number, target: Uint8Array): Promise<void>;
  /**
   * Writes one merged extent (buffers tile [guestOffset, guestOffset + length)). `gaps` lists the
   * guest ranges no request covers (only for formats that set a gap policy); their buffers are
   * zero placeholders the format replaces with what the gap reads when the write runs.
   */
  protected abstract writeExtent(guestOffset: number, length: number, buffers: Uint8Array[], gaps: readonly GapRange[]): Promise<void>;
  /** Discards the guest range (ordered after overlapping writes in flight). */
  protected abstract discardRange(offset: number, length: number): Promise<void>;
  /** Makes completed writes durable (every write submitted before flush() has completed). */
  protected abstract flushFormat(): Promise<void>;
  /**
   * Ends the format's work and releases its backends: when writable, a final flushFormat; then
   * it waits for any background work of its own, and closes the backends last, even when the
   * flush failed. Called once, after every request submitted before close() has settled.
   */
  protected abstract closeFormat(): Promise<void>;

  /** The merge mode; may be switched between batches (benchmarks compare them). */
  get mergeMode(): MergeMode { return this.dispatcher.mode; }
  /** Switches the merge mode; it applies from the next batch the dispatcher merges. */
  set mergeMode(mode: MergeMode) { this.dispatcher.mode = mode; }

  /** Reads `length` bytes at guest `offset` into a new buffer. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    this.checkOpen();
    return readIntoNewBuffer(offset, length, this.virtualSize, (at, target) => this.readInto(at, target));
  }

  /**
   * Reads guest bytes at `offset` into `target`, after any overlapping write submitted earlier.
   * With no such write in flight the read starts at once; when the format finished it before
   * returning (COMPLETED: a synchronous host read) nothing is left in flight to track.
   */
  readInto(offset: number, target: Uint8Array): Promise<void> {
    try {
      this.checkOpen();
      checkReadTarget(offset, target, this.virtualSize);
    } catch (error) {
      return Promise.reject(error);
    }
    this.counters.guestReadRequests++;
    this.counters.guestReadBytes += target.byteLength;
    if (target.byteLength === 0) return COMPLETED;
    this.dispatcher.dispatchQueued();
    const end = offset + target.byteLength;
    if (this.inflight.mustWait(offset, end, false)) {
      return this.inflight.register(offset, end, false, (wait) => Promise.all(wait).then(() => this.startRead(offset, target)));
    }
    const started = this.startRead(offset, target);
    return started === COMPLETED ? started : this.inflight.track(offset, end, false, started);
  }

  // Starts readRange: COMPLETED when it finished already, else its promise with failures typed.
  private startRead(offset: number, target: Uint8Array): Promise<void> {
    if (this.refusal) return Promise.reject(this.refusal);
    let started: Promise<void>;
    try {
      started = this.readRange(offset, target);
    } catch (error) {
      started = Promise.reject(error);
    }
    return started === COMPLETED ? started : started.then(undefined, readFailure);
  }

  /** Writes `data` at guest `offset`; writes of the same tick are merged into one batch. */
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.enqueue([{ offset, data }], false)[0];
  }

  /**
   * Submits `requests` as one batch now; one promise per request, in order. It never throws: a
   * refused call (the image closed, `requests` not an array) rejects every request's promise,
   * and when there is no request to carry the refusal (an empty or non-array argument) the
   * result is one rejected promise.
   */
  multiwrite(requests: readonly WriteRequest[]): Promise<void>[] {
    if (this.closing) return Array.isArray(requests) && requests.length > 0 ? this.enqueue(requests, true) : [Promise.reject(closedError())];
    if (!Array.isArray(requests)) return [Promise.reject(new ImageError('INVALID_ARGUMENT', 'multiwrite takes an array of requests'))];
    return this.enqueue(requests, true);
  }

  /** Makes the guest range read as zeros, ordered like any write. */
  writeZeroes(offset: number, length: number): Promise<void> {
    try {
      this.checkOpen();
      this.checkWritable();
      checkGuestRange(offset, length, this.virtualSize);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.zeroRange(offset, length);
  }

  /** How a format zeroes a checked guest range; the default writes zeros through the dispatcher. */
  protected zeroRange(offset: number, length: number): Promise<void> {
    return this.writeZeroData(offset, length);
  }

  /** Writes zeros over a checked guest range as an ordinary (merged, ordered) write. */
  protected writeZeroData(offset: number, length: number): Promise<void> {
    return this.enqueue([{ offset, data: zeroVector(length) }], false)[0];
  }

  /**
   * Runs a metadata-only change of guest [start, end) ordered like a write: after every earlier
   * overlapping read or write, before any later one.
   */
  protected orderedUpdate<T>(start: number, end: number, run: () => Promise<T>): Promise<T> {
    return this.ordered(start, end, true, run);
  }

  /**
   * Runs `run`, a read of guest [start, end) other than readRange (metadata the format reads
   * itself), ordered like a read: after every earlier overlapping write or metadata change,
   * before any later one. Rejects with IMAGE_CLOSED after close().
   */
  protected async orderedRead<T>(start: number, end: number, run: () => Promise<T>): Promise<T> {
    this.checkOpen();
    return this.ordered(start, end, false, run);
  }

  private ordered<T>(start: number, end: number, isWrite: boolean, run: () => Promise<T>): Promise<T> {
    this.dispatcher.dispatchQueued();
    const guarded = () => (this.refusal ? Promise.reject(this.refusal) : run());
    return this.inflight.register(start, end, isWrite, (wait) => (wait.length === 0 ? guarded() : Promise.all(wait).then(guarded)));
  }

  /** Discards the guest range, ordered after overlapping writes in flight; contents become unspecified. */
  async discard(offset: number, length: number): Promise<void> {
    this.checkOpen();
    this.checkWritable();
    checkGuestRange(offset, length, this.virtualSize);
    if (length === 0) return;
    await this.orderedUpdate(offset, offset + length, () => this.discardRange(offset, length));
  }

  /**
   * Waits for every write submitted before the call, then makes them durable. Flushes resolve
   * in call order. A failure is the backend's or the format's typed error (an untyped one from a
   * custom backend becomes IMAGE_IO_ERROR, with it as cause).
   */
  flush(): Promise<void> {
    if (this.closing) return Promise.reject(closedError());
    const previous = this.flushesSettled;
    const own = (async () => {
      await this.drainWrites();
      if (this.refusal) throw this.refusal;
      await this.flushCompleted();
    })().catch((error: unknown) => { throw typedFailure('flush', error); });
    const ordered = own.then(() => previous, async (error: unknown) => {
      await previous;
      throw error;
    });
    this.flushesSettled = ordered.catch(() => undefined);
    return ordered;
  }

  /**
   * Makes the writes completed so far durable (nothing on a read-only image), for a caller that
   * has ordered itself after them; fails as flush() does.
   */
  protected flushCompleted(): Promise<void> {
    if (this.readOnly) return Promise.resolve();
    return this.flushFormat().catch((error: unknown) => { throw typedFailure('flush', error); });
  }

  /**
   * Closes the image; idempotent. Every request submitted before the call (reads, writes,
   * zeroing, discards, flushes) settles first; then the format's final write-back runs and its
   * backends are closed. Calls after close() reject with IMAGE_CLOSED.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.dispatcher.dispatchQueued();
      for (let inFlight = this.inflight.allInFlight(); inFlight.length > 0; inFlight = this.inflight.allInFlight()) {
        await Promise.all(inFlight);
      }
      await this.flushesSettled;
      await this.closeFormat();
    })().catch((error: unknown) => { throw typedFailure('close', error); });
    return this.closing;
  }

  /** Counters since open (a copy). */
  stats(): ImageStats {
    return { ...this.counters };
  }

  /**
   * Writes `buffers` at `position` of `backend` in as few calls as its limits allow, counting
   * the host calls and bytes; settles only after every call has.
   */
  protected writeToBackend(backend: Backend, position: number, buffers: Uint8Array[]): Promise<void> {
    const { maxIov, maxTransfer } = backend.limits;
    const runs = splitVector(buffers, maxIov, maxTransfer);
    this.counters.hostWriteCalls += runs.length;
    const calls = runs.map(([delta, run]) => {
      for (const b of run) this.counters.hostWriteBytes += b.byteLength;
      return backend.pwritev(position + delta, run);
    });
    return calls.length === 1 ? calls[0] : allSettledOrThrow(calls);
  }

  /** Guest [0, end) of the whole disk, one byte at least (to overlap every request). */
  protected get wholeDiskEnd(): number {
    return Math.max(1, this.virtualSize);
  }

  /**
   * From now on every read, write, zeroing, discard and flush not yet started rejects with
   * IMAGE_IO_ERROR saying `what` failed (with `cause`), as does close() after closing the
   * backends; returns that error.
   */
  protected refuseRequests(what: string, cause: unknown): Qcow2WasmError {
    this.refusal ??= new ImageError('IMAGE_IO_ERROR', `${what}, so this instance refuses every request: close it and open the image again`, { cause });
    return this.refusal;
  }

  /** Throws IMAGE_CLOSED after close(). */
  protected checkOpen(): void {
    if (this.closing) throw closedError();
  }

  /** Throws IMAGE_READ_ONLY on a read-only image. */
  protected checkWritable(): void {
    if (this.readOnly) throw new ImageError('IMAGE_READ_ONLY', 'the image is open read-only');
  }

  private async drainWrites(): Promise<void> {
    this.dispatcher.dispatchQueued();
    await Promise.all(this.inflight.writesInFlight());
  }

  private enqueue(requests: readonly WriteRequest[], now: boolean): Promise<void>[] {
    const promises: Promise<void>[] = [];
    const accepted: QueuedWrite[] = [];
    for (const request of requests) {
      const completion = new Completion();
      promises.push(completion.promise);
      try {
        this.checkOpen();
        this.checkWritable();
        if (request === null || typeof request !== 'object') throw new ImageError('INVALID_ARGUMENT', 'a write request must be an object');
        const length = requestLength(request.data);
        checkGuestRange(request.offset, length, this.virtualSize);
        accepted.push({ offset: request.offset, length, data: request.data, completion });
        this.counters.guestWriteRequests++;
        this.counters.guestWriteBytes += length;
      } catch (error) {
        completion.release(error as Error);
      }
    }
    if (accepted.length > 0) this.dispatcher.submit(accepted, now);
    return promises;
  }
}

// Flush and close report the backend's own typed errors (as they always have); anything else
// becomes IMAGE_IO_ERROR.
function typedFailure(operation: 'flush' | 'close', error: unknown): Error {
  return error instanceof Qcow2WasmError ? error : ioFailure(operation, error);
}

function readFailure(error: unknown): never {
  throw ioFailure('read', error);
}

function closedError(): ImageError {
  return new ImageError('IMAGE_CLOSED', 'the image is closed');
}
