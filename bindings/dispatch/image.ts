// SPDX-License-Identifier: MIT
// The public image interface every format implements, its option and statistics
// types, and argument checks shared by the formats.

import type { Backend } from '../backends/backend.js';
import type { MergeMode } from '../core/merge-core.js';
import { ImageError, exactNumber } from '../base/errors.js';

/** One guest write: `data` (one buffer or an iovec list) lands at guest byte `offset`. */
export interface WriteRequest {
  /** Guest byte offset where the data starts: any alignment, a safe integer, at most the virtual size minus the data's length. */
  offset: number;
  /**
   * The bytes to write: one buffer, or an iovec list whose buffers are written one after another.
   * Not copied: leave the buffers unchanged until the request's promise settles.
   */
  data: Uint8Array | readonly Uint8Array[];
}

/** Counters since open (all in requests, calls or bytes). */
export interface ImageStats {
  /** Guest write requests accepted (write, multiwrite, writeZeroes). */
  guestWriteRequests: number;
  /** Guest bytes those write requests covered. */
  guestWriteBytes: number;
  /** Guest read requests accepted (read, readInto). */
  guestReadRequests: number;
  /** Guest bytes those read requests covered. */
  guestReadBytes: number;
  /** Backend pwritev calls made for this image (data and metadata). */
  hostWriteCalls: number;
  /** Bytes those pwritev calls carried. */
  hostWriteBytes: number;
  /** Backend preadv calls made for this image (data and metadata, backing files excluded). */
  hostReadCalls: number;
  /** Bytes those preadv calls carried. */
  hostReadBytes: number;
  /** Bytes written only to preserve data the guest did not write (copy-on-write fill). */
  cowBytes: number;
  /** Bytes of gaps between a batch's requests that merged writes filled (qcow2: inside new clusters). */
  gapBytes: number;
  /** Merged extents issued: the host writes of guest data that merging produced. */
  extents: number;
  /**
   * Requests that shared an extent with another request (a request spread over several shared
   * extents counts once per extent).
   */
  mergedRequests: number;
}

/** A virtual disk: byte-addressed, any alignment. */
export interface BlockImage {
  /** Guest-visible size in bytes. */
  readonly virtualSize: number;
  /** True when writes are refused with IMAGE_READ_ONLY. */
  readonly readOnly: boolean;
  /** Reads `length` guest bytes at `offset` into a new buffer. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Reads guest bytes at `offset` into `target` (fills it whole). */
  readInto(offset: number, target: Uint8Array): Promise<void>;
  /**
   * Writes `data` at guest `offset`. The data is not copied: leave it unchanged until the promise
   * settles. Writes made in the same tick are batched and merged.
   */
  write(offset: number, data: Uint8Array): Promise<void>;
  /**
   * Submits a batch; one promise per request, in the same order. Never throws: a bad request
   * rejects its own promise; a refused call (the image closed, `requests` not an array) rejects
   * every request's promise, or, with no request to carry it (empty or not an array), returns
   * one rejected promise.
   */
  multiwrite(requests: readonly WriteRequest[]): Promise<void>[];
  /** Makes the guest range read as zeros. */
  writeZeroes(offset: number, length: number): Promise<void>;
  /** Tells the image the guest no longer needs the range; its contents become unspecified. */
  discard(offset: number, length: number): Promise<void>;
  /** Durability barrier for every write that completed before the call; flushes resolve in call order. */
  flush(): Promise<void>;
  /**
   * Lets every request submitted before it settle (reads too), flushes, and releases the
   * backend; idempotent. Every later call rejects with IMAGE_CLOSED, before any argument check.
   */
  close(): Promise<void>;
  /** Counters since open. */
  stats(): ImageStats;
}

/** Knobs of deferred copy-on-write (OpenOptions.deferredCow). */
export interface DeferredCowOptions {
  /** Most clusters pending at once; more forces the oldest (default 64). */
  maxPending?: number;
  /** Longest a cluster stays pending, in milliseconds (default 50). */
  delayMs?: number;
}

/** Options of every format's open(). */
export interface OpenOptions {
  /** Open without writing anything: writes reject with IMAGE_READ_ONLY. Default false (writable when the backend is). */
  readOnly?: boolean;
  /** Metadata cache size in bytes (qcow2). */
  cacheBytes?: number;
  /** How writes are merged: 'full' (default), 'adjacent' (strictly sequential only), 'off'. */
  merge?: MergeMode;
  /**
   * Opens a backing file by the name the image records; no implicit file opens happen. `namedBy`
   * lists the backing names followed from the opened image down to the image that records
   * `name` (empty when the opened image records it), so relative names can be resolved next to
   * the image that names them.
   */
  openBacking?: (name: string, format: string | undefined, namedBy?: readonly string[]) => Promise<Backend>;
  /** Opens an external data file by the name the image records (`namedBy` as for openBacking). */
  openDataFile?: (name: string, namedBy?: readonly string[]) => Promise<Backend>;
  /**
   * qcow2: deferred copy-on-write. A new cluster that a write
   * fills from its start but not to its end, whose rest would have to be copied (from a backing
   * file), waits up to `delayMs` for the next write to fill it before the copy is made; at most
   * `maxPending` clusters wait. Reads, flush() and close() complete waiting clusters first.
   * Default true (64 clusters, 50 ms); false copies at once, as QEMU does.
   */
  deferredCow?: boolean | DeferredCowOptions;
  /**
   * qcow2, writable: the loss window. Metadata that completed writes changed (L2 entries,
   * refcounts, new tables, clusters pending deferred copy-on-write) is written back in the safe
   * order at most this many milliseconds after the first such write completes, without waiting
   * for flush(). A process that is killed (or a tab that is closed) without close() then loses
   * at most the writes of the last window, and the image stays consistent. flush() remains the
   * barrier against power loss (it makes the data durable, fdatasync); this window does not.
   * The pending timer keeps a Node or Deno process alive until it fires. Default 1000;
   * false or 0 writes metadata back only at flush(), close() and when the cache is full.
   */
  writebackDelayMs?: number | false;
}

/** Options of Qcow2Image.create (qemu-img create -f qcow2 equivalents). */
export interface CreateOptions {
  /** Guest-visible size in bytes, a multiple of 512 (qemu-img's `size`). */
  virtualSize: number;
  /** Cluster size in bytes: a power of two from 512 to 2097152 (2 MiB). Default 65536. */
  clusterSize?: number;
  /** `'1.1'` (qcow2 version 3, the default) or `'0.10'` (version 2: no extended L2, lazy refcounts or zstd, 16-bit refcounts only). */
  compat?: '0.10' | '1.1';
  /** Extended L2 entries with 32 subclusters per cluster (`extended_l2=on`); clusters of at least 16 KiB. Default false. */
  extendedL2?: boolean;
  /** Bits per refcount: a power of two from 1 to 64. Default 16. */
  refcountBits?: number;
  /** Lazy refcounts (`lazy_refcounts=on`): refcounts may be stale after a crash and are rebuilt on the next writable open. Default false. */
  lazyRefcounts?: boolean;
  /** Compression of compressed clusters: `'zlib'` (default) or `'zstd'` (version 3 only). */
  compressionType?: 'zlib' | 'zstd';
  /** Backing file name recorded in the header, as given; never opened by create. Default none. */
  backingFile?: string;
  /** Format of the backing file, recorded with it (only together with `backingFile`). */
  backingFormat?: 'qcow2' | 'raw';
  /** 'metadata': allocate every L2 table and data cluster up front (qemu-img's preallocation=metadata). */
  preallocation?: 'off' | 'metadata';
}

/** A zeroed ImageStats. */
export function emptyStats(): ImageStats {
  return {
    guestWriteRequests: 0, guestWriteBytes: 0, guestReadRequests: 0, guestReadBytes: 0,
    hostWriteCalls: 0, hostWriteBytes: 0, hostReadCalls: 0, hostReadBytes: 0,
    cowBytes: 0, gapBytes: 0, extents: 0, mergedRequests: 0,
  };
}

/**
 * Checks a guest range against an image of `virtualSize` bytes. Throws INVALID_ARGUMENT for
 * non-integer or negative values, IMAGE_OUT_OF_RANGE past the end.
 */
export function checkGuestRange(offset: number, length: number, virtualSize: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new ImageError('INVALID_ARGUMENT',
      `invalid guest range: offset ${exactNumber(offset)}, length ${exactNumber(length)} (both must be integers from 0 to 2^53)`);
  }
  if (offset + length > virtualSize) {
    throw new ImageError('IMAGE_OUT_OF_RANGE',
      `guest range [${offset}, ${offset + length}) reaches past the virtual size ${virtualSize}`);
  }
}

/**
 * BlockImage.read in terms of readInto: checks the range (as checkGuestRange), then reads into a
 * new buffer. The image checks that it is open first.
 */
export async function readIntoNewBuffer(offset: number, length: number, virtualSize: number,
  readInto: (offset: number, target: Uint8Array) => Promise<void>): Promise<Uint8Array> {
  checkGuestRange(offset, length, virtualSize);
  const target = new Uint8Array(length);
  await readInto(offset, target);
  return target;
}

/** Checks readInto's arguments: INVALID_ARGUMENT unless `target` is a Uint8Array, then as checkGuestRange. */
export function checkReadTarget(offset: number, target: unknown, virtualSize: number): asserts target is Uint8Array {
  if (!(target instanceof Uint8Array)) throw new ImageError('INVALID_ARGUMENT', 'readInto target must be a Uint8Array');
  checkGuestRange(offset, target.byteLength, virtualSize);
}

/** Byte length of a request's data (one buffer or an iovec list); throws INVALID_ARGUMENT. */
export function requestLength(data: unknown): number {
  if (data instanceof Uint8Array) return data.byteLength;
  if (Array.isArray(data)) {
    let total = 0;
    for (const part of data) {
      if (!(part instanceof Uint8Array)) throw new ImageError('INVALID_ARGUMENT', 'iovec entries must be Uint8Array');
      total += part.byteLength;
    }
    return total;
  }
  throw new ImageError('INVALID_ARGUMENT', 'write data must be a Uint8Array or an array of them');
}
