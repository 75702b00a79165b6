// SPDX-License-Identifier: MIT
// The adapter that lets the v86 emulator use any BlockImage as a disk (hda, hdb, fda, fdb,
// cdrom), and the policy for flushing it, since v86 never asks to.

import type { BlockImage } from '../dispatch/image.js';
import { ImageError } from '../base/errors.js';
import type { ReadAheadCache } from '../backends/read-ahead.js';
import { guestReadCache, type V86ReadCacheOptions } from './v86-read-cache.js';

/** What the adapter was doing when a failure happened (see V86DiskOptions.onerror). */
export type V86DiskOperation = 'read' | 'write' | 'flush';

/** How toV86Disk behaves; every field is optional. */
export interface V86DiskOptions {
  /**
   * Flush once no write has arrived for this many milliseconds (default 1000). `Infinity`
   * turns the idle trigger off.
   */
  flushIdleMs?: number;
  /**
   * Flush at the latest this many milliseconds after the first write not yet flushed, even while
   * writes keep arriving (default 5000). `Infinity` turns the deadline off; with both triggers
   * off only flush() and close() flush.
   */
  flushMaxDelayMs?: number;
  /**
   * get_buffer hands v86 the whole disk as one ArrayBuffer when it is at most this many bytes
   * (default 16 MiB); for a larger disk it calls back with no argument, as v86's own
   * asynchronous disks do.
   */
  wholeBufferLimitBytes?: number;
  /**
   * Called with every failed read, write or scheduled flush (v86 itself has no way to hear of
   * one). Default: console.error. The failure is also kept in `lastError`.
   */
  onerror?: (error: Error, operation: V86DiskOperation) => void;
  /**
   * A cache of the disk's bytes as the guest reads them, so that v86 gets an answer at once
   * (from inside `get`) when the bytes are at hand, as v86's own disks answer, and only a miss
   * waits for the image: blocks of `blockBytes` (default 128 KiB) read through the image, with
   * the rest of their aligned `neighbourhoodBytes` (default 1 MiB) on a miss, read ahead while
   * the guest reads forward in a window growing to `maxAheadBytes` (default 2 MiB), `cacheBytes`
   * kept (default 32 MiB; least recently used go first). Writes update it at once.
   * `false`: no cache, every read goes to the image and answers later.
   */
  readCache?: false | V86ReadCacheOptions;
}

/**
 * What get_state saves for a disk: a tag, a layout version and the disk's size in bytes. The
 * image is the disk's persistent state, so no sector data goes into a v86 state file.
 */
export type V86DiskState = [tag: number, version: number, byteLength: number];

/** The progress event load() reports once, when the disk is ready. */
export interface V86DiskProgress {
  /** Bytes ready: the whole disk (its size in bytes), since the image reads on demand. */
  loaded: number;
  /** The disk's size in bytes. */
  total: number;
  /** Always true: the size is known. */
  lengthComputable: boolean;
}

const STATE_TAG = 0x71636f77; // "qcow"
const STATE_VERSION = 1;
const SECTOR_BYTES = 512;
const DEFAULT_FLUSH_IDLE_MS = 1000;
const DEFAULT_FLUSH_MAX_DELAY_MS = 5000;
const DEFAULT_WHOLE_BUFFER_LIMIT_BYTES = 16 << 20;

/** Runs `start`, turning a synchronous throw into a rejection. */
function attempt<T>(start: () => Promise<T>): Promise<T> {
  try {
    return start();
  } catch (error) {
    return Promise.reject(error);
  }
}

function checkDelay(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw new ImageError('INVALID_ARGUMENT', `${name} must be a non-negative number of milliseconds or Infinity, not ${String(value)}`);
  }
  return value;
}

/**
 * A BlockImage as the disk object v86 (0.5.462) accepts in place of `{buffer}` or `{url}` for
 * `hda`, `hdb`, `fda`, `fdb` and `cdrom`, passed to the V86 constructor. Create it with
 * toV86Disk.
 *
 * Contract (the members v86 calls, and what the adapter promises):
 * - `byteLength` is the image's virtual size. v86 derives the sector count from it (512-byte
 *   sectors for disks, 2048 for cdrom); floppies must have a standard floppy size.
 * - `load()` reads the first sector (so get_from_cache can answer v86's geometry probe; through
 *   the read cache, which reads the blocks around it as well), then
 *   calls `onprogress` (if set) and `onload` once; it never leaves v86 waiting, even when the read
 *   fails (the failure goes to onerror). It returns a promise that resolves after onload.
 * - `get(start, len, fn, {signal})` calls `fn(Uint8Array)` with exactly `len` bytes of the disk
 *   (a new buffer): before it returns when the read cache (V86DiskOptions.readCache) holds them
 *   all, as v86's own disks answer cached reads, otherwise once the image has read them. Any byte
 *   range inside the disk works (sector multiples of 512 or 2048 in practice). When `signal` is
 *   aborted before the data arrives, `fn` is not called (v86's own disks behave the same; v86
 *   drops late answers anyway).
 * - `set(start, data, fn)` copies `data` before it returns (v86 reuses that buffer at once) and
 *   submits the copy as an image write; a `get` issued after it returns the new bytes even while
 *   the write is in flight (the read cache takes the copy at once; a read of the image sees every
 *   write submitted before it). Writes
 *   made in one tick reach the image as one merged batch. `fn()` is called once the image has
 *   the write.
 * - `get_and_cache` is `get` that also keeps the first sector; `get_from_cache(0, n)` returns
 *   that sector (a copy, kept up to date by later writes) and `undefined` for anything else.
 * - `get_buffer(fn)` calls `fn(ArrayBuffer)` with the whole disk when it is at most
 *   `wholeBufferLimitBytes`, otherwise `fn()` with no argument.
 * - `get_state()` returns a V86DiskState (numbers only, which v86's state files can hold);
 *   `set_state(state)` throws INVALID_ARGUMENT unless the state came from a disk of the same
 *   size. Sector data is not saved: the image is the disk's state. A saved v86 state is only
 *   consistent with the image as it was when the state was saved, so keep the two together (for
 *   example `await disk.flush()` and copy or snapshot the image next to the state file).
 *
 * Failures: v86 gives a disk no way to report an error, so a failed read or write is passed to
 * `onerror` and kept in `lastError`, and its callback is never called: the guest's request
 * stays pending rather than completing with wrong data. A failed write also makes the next
 * flush() or close() reject, and the read cache drops what it held of the range.
 *
 * Flushing: v86 never forwards a flush (ATA FLUSH CACHE completes inside v86). The adapter
 * flushes the image by itself `flushIdleMs` after the last write, and at the latest
 * `flushMaxDelayMs` after the first unflushed write; flush() flushes now, and close() waits for
 * everything in flight, flushes and closes the image. In a browser, call flush() from a
 * `pagehide` or `visibilitychange` (hidden) listener: a closing tab does not wait for timers.
 */
export class V86Disk {
  /** The disk's size in bytes (the image's virtual size). */
  readonly byteLength: number;
  /** Set by v86 before it calls load(); called once the disk is usable. */
  onload: ((event: object) => void) | undefined = undefined;
  /** Called once by load(), before onload, with the whole disk as loaded. */
  onprogress: ((event: V86DiskProgress) => void) | undefined = undefined;
  /** The most recent failure of a read, write or scheduled flush, if any. */
  lastError: Error | undefined = undefined;

  /** The image behind the disk (saveState and restoreState snapshot it). */
  readonly image: BlockImage;
  private readonly flushIdleMs: number;
  private readonly flushMaxDelayMs: number;
  private readonly wholeBufferLimitBytes: number;
  private readonly onerror: (error: Error, operation: V86DiskOperation) => void;
  /** The guest's bytes as last read or written (undefined when readCache is false). */
  private readonly readCache: ReadAheadCache | undefined;
  /** Reads longer than this bypass the read cache. */
  private readonly cachedReadLimitBytes: number;
  private firstSector: Uint8Array | undefined = undefined;
  /** Bumped by every write that touches the first sector, so a slower read cannot undo it. */
  private firstSectorWrites = 0;
  private readonly inFlight = new Set<Promise<void>>();
  /** The first write failure since the last flush() or close() reported one. */
  private writeFailure: Error | undefined = undefined;
  private idleTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  private deadlineTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  /** The flushes in order: each image flush starts after the previous one settled. */
  private flushChain: Promise<void> = Promise.resolve();
  private closing: Promise<void> | undefined = undefined;

  constructor(image: BlockImage, options: V86DiskOptions = {}) {
    this.image = image;
    this.byteLength = image.virtualSize;
    this.flushIdleMs = checkDelay('flushIdleMs', options.flushIdleMs, DEFAULT_FLUSH_IDLE_MS);
    this.flushMaxDelayMs = checkDelay('flushMaxDelayMs', options.flushMaxDelayMs, DEFAULT_FLUSH_MAX_DELAY_MS);
    const limit = options.wholeBufferLimitBytes ?? DEFAULT_WHOLE_BUFFER_LIMIT_BYTES;
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new ImageError('INVALID_ARGUMENT', `wholeBufferLimitBytes must be a non-negative integer, not ${String(limit)}`);
    }
    this.wholeBufferLimitBytes = limit;
    this.onerror = options.onerror ?? ((error, operation) => console.error(`qcow2-wasm/v86: ${operation} failed:`, error));
    const cache = options.readCache === false ? undefined : guestReadCache(image, options.readCache);
    this.readCache = cache?.cache;
    this.cachedReadLimitBytes = cache?.longestReadBytes ?? 0;
  }

  /** Reads the first sector, then calls onprogress and onload (see the class contract). */
  async load(): Promise<void> {
    if (this.byteLength >= SECTOR_BYTES) {
      const writes = this.firstSectorWrites;
      try {
        const sector = await this.readFirstSector();
        if (writes === this.firstSectorWrites) this.firstSector = sector;
      } catch (error) {
        this.report(error, 'read');
      }
    }
    this.onprogress?.({ loaded: this.byteLength, total: this.byteLength, lengthComputable: true });
    this.onload?.(Object.create(null) as object);
  }

  /**
   * Reads again what the adapter caches (the first sector), after the image's content changed
   * other than through set(), e.g. when a snapshot was applied to it.
   */
  async refresh(): Promise<void> {
    this.readCache?.clear();
    const writes = ++this.firstSectorWrites;
    if (this.byteLength < SECTOR_BYTES) return;
    const sector = await this.readFirstSector();
    if (writes === this.firstSectorWrites) this.firstSector = sector;
  }

  /** The first sector, read through the read cache when there is one (which then reads its neighbourhood too: a guest starts there). */
  private async readFirstSector(): Promise<Uint8Array> {
    if (this.readCache === undefined) return this.image.read(0, SECTOR_BYTES);
    const sector = new Uint8Array(SECTOR_BYTES);
    await this.readCache.read(0, sector);
    return sector;
  }

  /**
   * Calls `fn` with the `len` bytes at `start`: at once when the read cache holds them, else
   * once they are read, unless `options.signal` aborts first.
   */
  get(start: number, len: number, fn: (data: Uint8Array) => void, options?: { signal?: AbortSignal }): void {
    const signal = options?.signal;
    if (signal?.aborted) return;
    if (this.refuseWhenClosed('read')) return;
    if (this.readCache !== undefined && this.inRange(start, len) && len <= this.cachedReadLimitBytes) {
      const data = new Uint8Array(len);
      if (this.readCache.readCached(start, data)) {
        fn(data);
        return;
      }
      this.track(this.readCache.read(start, data).then(
        () => { if (!signal?.aborted) fn(data); },
        (error: unknown) => { this.report(error, 'read'); }));
      return;
    }
    this.track(attempt(() => this.image.read(start, len)).then(
      (data) => { if (!signal?.aborted) fn(data); },
      (error: unknown) => { this.report(error, 'read'); }));
  }

  /** get() that also keeps the first sector for get_from_cache. */
  get_and_cache(start: number, len: number, fn: (data: Uint8Array) => void, options?: { signal?: AbortSignal }): void {
    const writes = this.firstSectorWrites;
    this.get(start, len, (data) => {
      if (start === 0 && len >= SECTOR_BYTES && writes === this.firstSectorWrites) this.firstSector = data.slice(0, SECTOR_BYTES);
      fn(data);
    }, options);
  }

  /** A copy of the kept first sector for ranges inside it; otherwise undefined. */
  get_from_cache(start: number, len: number): Uint8Array | undefined {
    if (!this.firstSector || start < 0 || start + len > SECTOR_BYTES) return undefined;
    return this.firstSector.slice(start, start + len);
  }

  /** Copies `data`, submits it as an image write at `start`, and calls `fn` once it is written. */
  set(start: number, data: Uint8Array, fn: () => void): void {
    if (this.refuseWhenClosed('write')) return;
    const copy = new Uint8Array(data);
    if (start < SECTOR_BYTES) {
      this.firstSectorWrites++;
      if (this.firstSector && start >= 0) this.firstSector.set(copy.subarray(0, SECTOR_BYTES - start), start);
    }
    const cached = this.inRange(start, copy.byteLength);
    if (cached) this.readCache?.overwrite(start, copy);
    this.scheduleFlush();
    this.track(attempt(() => this.image.write(start, copy)).then(
      () => fn(),
      (error: unknown) => {
        if (cached) this.readCache?.forget(start, copy.byteLength);
        const failure = this.report(error, 'write');
        this.writeFailure ??= failure;
      }));
  }

  /** Calls `fn` with the whole disk as an ArrayBuffer if it is small enough, else with nothing. */
  get_buffer(fn: (buffer?: ArrayBuffer) => void): void {
    if (this.byteLength > this.wholeBufferLimitBytes) {
      fn();
      return;
    }
    this.get(0, this.byteLength, (data) => {
      const whole = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer;
      fn(whole ? data.buffer as ArrayBuffer : data.slice().buffer);
    });
  }

  /** The disk's identity for a v86 state file (see V86DiskState). */
  get_state(): V86DiskState {
    return [STATE_TAG, STATE_VERSION, this.byteLength];
  }

  /** Accepts a state from get_state of a disk of the same size; throws INVALID_ARGUMENT otherwise. */
  set_state(state: unknown): void {
    const valid = Array.isArray(state) && state[0] === STATE_TAG && state[1] === STATE_VERSION;
    if (!valid) throw new ImageError('INVALID_ARGUMENT', 'this v86 state was not saved from a qcow2-wasm disk');
    if (state[2] !== this.byteLength) {
      throw new ImageError('INVALID_ARGUMENT', `this v86 state was saved with a disk of ${String(state[2])} bytes, not ${this.byteLength}`);
    }
  }

  /**
   * Waits for every write submitted so far and makes it durable (BlockImage.flush). Rejects with
   * the flush's failure, or else with the first write failure since the last flush() or close().
   */
  async flush(): Promise<void> {
    this.cancelTimers();
    await this.flushImage();
    this.throwWriteFailure();
  }

  /**
   * Stops accepting requests, waits for those in flight, flushes and closes the image
   * (idempotent). Rejects like flush(); the image is closed either way.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.cancelTimers();
      await Promise.allSettled([...this.inFlight]);
      await this.flushChain;
      await this.image.close();
      this.throwWriteFailure();
    })();
    return this.closing;
  }

  private track(request: Promise<void>): void {
    this.inFlight.add(request);
    const forget = () => { this.inFlight.delete(request); };
    request.then(forget, forget);
  }

  /** Whether [start, start + lengthBytes) is a non-empty range of whole bytes inside the disk. */
  private inRange(start: number, lengthBytes: number): boolean {
    return Number.isSafeInteger(start) && Number.isSafeInteger(lengthBytes) && start >= 0 && lengthBytes > 0 && start + lengthBytes <= this.byteLength;
  }

  private refuseWhenClosed(operation: V86DiskOperation): boolean {
    if (!this.closing) return false;
    this.report(new ImageError('IMAGE_CLOSED', 'the v86 disk is closed'), operation);
    return true;
  }

  private report(error: unknown, operation: V86DiskOperation): Error {
    const failure = error instanceof Error ? error : new Error(String(error));
    this.lastError = failure;
    this.onerror(failure, operation);
    return failure;
  }

  private throwWriteFailure(): void {
    const failure = this.writeFailure;
    this.writeFailure = undefined;
    if (failure) throw failure;
  }

  /** Queues one image flush after the previous one; its result is the returned promise. */
  private flushImage(): Promise<void> {
    const flushed = this.flushChain.then(() => this.image.flush());
    this.flushChain = flushed.catch(() => undefined);
    return flushed;
  }

  private scheduleFlush(): void {
    if (Number.isFinite(this.flushIdleMs)) {
      if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(() => this.scheduledFlush(), this.flushIdleMs);
    }
    if (this.deadlineTimer === undefined && Number.isFinite(this.flushMaxDelayMs)) {
      this.deadlineTimer = setTimeout(() => this.scheduledFlush(), this.flushMaxDelayMs);
    }
  }

  private scheduledFlush(): void {
    this.cancelTimers();
    if (this.closing) return;
    this.flushImage().catch((error: unknown) => this.report(error, 'flush'));
  }

  private cancelTimers(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer);
    this.idleTimer = undefined;
    this.deadlineTimer = undefined;
  }
}

/**
 * Wraps `image` (qcow2, raw, or any BlockImage) as a v86 disk object; see V86Disk for the
 * contract and the flush policy. The disk owns the image from then on: close it with
 * `disk.close()` after the emulator is destroyed.
 */
export function toV86Disk(image: BlockImage, options: V86DiskOptions = {}): V86Disk {
  return new V86Disk(image, options);
}
