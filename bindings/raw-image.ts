// SPDX-License-Identifier: MIT
// RawImage: a flat disk image, guest offset == host position. Writes go through the multiwrite
// dispatcher (merged in wasm); reads and discards are ordered against overlapping writes in
// flight. Raw never merges across gaps: it cannot know what a gap holds without reading it.

import type { Backend } from './backend.js';
import type { BlockImage, ImageStats, OpenOptions, WriteRequest } from './image.js';
import { checkGuestRange, emptyStats, requestLength } from './image.js';
import { InflightRanges } from './inflight.js';
import { MergeCore } from './merge-core.js';
import { Completion, WriteDispatcher, ioFailure, type QueuedWrite } from './multiwrite.js';
import { splitVector } from './iovec.js';
import { allSettledOrThrow } from './settle.js';
import { ImageError } from './errors.js';
import { instantiateCore } from './wasm.js';

// Shared read-only source of zeros for writeZeroes; never handed to callers.
const ZERO_CHUNK = new Uint8Array(1 << 20);

/** A raw (flat) image over any backend. Create with RawImage.open. */
export class RawImage implements BlockImage {
  readonly virtualSize: number;
  readonly readOnly: boolean;
  private readonly backend: Backend;
  private readonly inflight = new InflightRanges();
  private readonly dispatcher: WriteDispatcher;
  private readonly counters = emptyStats();
  private closing: Promise<void> | undefined;

  private constructor(backend: Backend, virtualSize: number, readOnly: boolean, core: MergeCore, options: OpenOptions) {
    this.backend = backend;
    this.virtualSize = virtualSize;
    this.readOnly = readOnly;
    this.dispatcher = new WriteDispatcher(core, {
      writeExtent: (guestOffset, _length, buffers) => this.writeHost(guestOffset, buffers),
      gapFill: () => { throw new ImageError('WASM_INTERNAL', 'raw images never merge across gaps'); },
    }, this.inflight, backend.limits, this.counters, options.merge ?? 'full');
  }

  /**
   * Opens `backend` as a raw image whose virtual size is the backend's current size. Read-only
   * when `options.readOnly` or the backend is not writable. `options.merge` picks the merge mode.
   */
  static async open(backend: Backend, options: OpenOptions = {}): Promise<RawImage> {
    if (options.merge !== undefined && !['off', 'adjacent', 'full'].includes(options.merge)) {
      throw new ImageError('INVALID_ARGUMENT', `merge must be 'off', 'adjacent' or 'full', not ${String(options.merge)}`);
    }
    const core = new MergeCore(await instantiateCore());
    const size = await backend.getSize();
    const readOnly = options.readOnly === true || !backend.capabilities.writable;
    return new RawImage(backend, size, readOnly, core, options);
  }

  /** The merge mode; may be switched between batches (benchmarks compare them). */
  get mergeMode() { return this.dispatcher.mode; }
  set mergeMode(mode) { this.dispatcher.mode = mode; }

  /** Reads `length` bytes at guest `offset` into a new buffer. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    checkGuestRange(offset, length, this.virtualSize);
    const target = new Uint8Array(length);
    await this.readInto(offset, target);
    return target;
  }

  /** Reads guest bytes at `offset` into `target`, after any overlapping write submitted earlier. */
  async readInto(offset: number, target: Uint8Array): Promise<void> {
    this.checkOpen();
    if (!(target instanceof Uint8Array)) throw new ImageError('INVALID_ARGUMENT', 'readInto target must be a Uint8Array');
    checkGuestRange(offset, target.byteLength, this.virtualSize);
    this.counters.guestReadRequests++;
    this.counters.guestReadBytes += target.byteLength;
    if (target.byteLength === 0) return;
    this.dispatcher.dispatchQueued();
    const read = () => this.readHost(offset, target).catch((error: unknown) => { throw ioFailure('read', error); });
    await this.inflight.register(offset, offset + target.byteLength, false,
      (wait) => (wait.length === 0 ? read() : Promise.all(wait).then(read)));
  }

  /** Writes `data` at guest `offset`; writes of the same tick are merged into one batch. */
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.enqueue([{ offset, data }], false)[0];
  }

  /** Submits `requests` as one batch now; one promise per request, in order. */
  multiwrite(requests: readonly WriteRequest[]): Promise<void>[] {
    if (!Array.isArray(requests)) throw new ImageError('INVALID_ARGUMENT', 'multiwrite takes an array of requests');
    return this.enqueue(requests, true);
  }

  /** Writes zeros over the guest range (raw has no cheaper way that reads back as zeros). */
  writeZeroes(offset: number, length: number): Promise<void> {
    try {
      checkGuestRange(offset, length, this.virtualSize);
    } catch (error) {
      return Promise.reject(error);
    }
    const data: Uint8Array[] = [];
    for (let done = 0; done < length; done += ZERO_CHUNK.byteLength) {
      data.push(ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.byteLength, length - done)));
    }
    return this.enqueue([{ offset, data }], false)[0];
  }

  /**
   * Passes the discard to the backend when it supports discard (ordered after overlapping writes
   * in flight); otherwise does nothing. Either way the range's contents are unspecified afterwards.
   */
  async discard(offset: number, length: number): Promise<void> {
    this.checkOpen();
    this.checkWritable();
    checkGuestRange(offset, length, this.virtualSize);
    const discard = this.backend.discard;
    if (length === 0 || !this.backend.capabilities.discard || !discard) return;
    this.dispatcher.dispatchQueued();
    const run = () => discard.call(this.backend, offset, length);
    await this.inflight.register(offset, offset + length, true,
      (wait) => (wait.length === 0 ? run() : Promise.all(wait).then(run)));
  }

  /** Waits for every write submitted before the call, then flushes the backend. */
  async flush(): Promise<void> {
    this.checkOpen();
    await this.drainWrites();
    if (!this.readOnly) await this.backend.flush();
  }

  /** Flushes (when writable) and closes the backend; idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.drainWrites();
      try {
        if (!this.readOnly) await this.backend.flush();
      } finally {
        await this.backend.close();
      }
    })();
    return this.closing;
  }

  /** Counters since open (a copy). */
  stats(): ImageStats {
    return { ...this.counters };
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

  private async writeHost(position: number, buffers: Uint8Array[]): Promise<void> {
    const { maxIov, maxTransfer } = this.backend.limits;
    const runs = splitVector(buffers, maxIov, maxTransfer);
    this.counters.hostWriteCalls += runs.length;
    await allSettledOrThrow(runs.map(([delta, run]) => {
      for (const b of run) this.counters.hostWriteBytes += b.byteLength;
      return this.backend.pwritev(position + delta, run);
    }));
  }

  private async readHost(position: number, target: Uint8Array): Promise<void> {
    const { maxTransfer } = this.backend.limits;
    const chunks: Promise<void>[] = [];
    for (let done = 0; done < target.byteLength; done += maxTransfer) {
      const piece = target.subarray(done, Math.min(target.byteLength, done + maxTransfer));
      chunks.push(this.backend.preadv(position + done, [piece]));
    }
    this.counters.hostReadCalls += chunks.length;
    this.counters.hostReadBytes += target.byteLength;
    await allSettledOrThrow(chunks);
  }

  private checkOpen(): void {
    if (this.closing) throw new ImageError('IMAGE_CLOSED', 'the image is closed');
  }

  private checkWritable(): void {
    if (this.readOnly) throw new ImageError('IMAGE_READ_ONLY', 'the image is open read-only');
  }
}
