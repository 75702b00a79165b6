// SPDX-License-Identifier: MIT
// The read-only HTTP backend: byte ranges of one URL fetched with strictly checked Range
// requests; reads issued together that touch or overlap go out as one request, and each
// response body is copied into the reads' buffers as it arrives.

import { checkRange, totalLength, type Backend, type BackendCapabilities, type BackendLimits } from './backend.js';
import { BackendError } from '../base/errors.js';
import { ReadAheadCache } from './read-ahead.js';
import { readBodyInto, ScratchPool } from './response-body.js';
import { RoundTripEstimate } from './round-trip-estimate.js';
import { defaultRemoteFetch } from './remote-fetch.js';

/** Options of openHttpBackend. */
export interface HttpBackendOptions {
  /** Extra request headers sent with every request (e.g. Authorization). */
  headers?: HeadersInit;
  /** The fetch to use (default: the global fetch; with qcow2-wasm/browser, one that runs on a dedicated worker). */
  fetch?: typeof fetch;
  /**
   * Most bytes one coalesced request may span (default 8 MiB). A single read longer than this is
   * still one request; only the joining of reads stops at this size.
   */
  maxCoalesceBytes?: number;
  /**
   * Reads are served from a block cache that reads ahead while reads go forward, like a page
   * cache (see ReadAheadCache): blocks of `blockBytes` (default 256 KiB), a window growing to
   * `maxBytes` (default 4 MiB), `cacheBytes` kept (default 16 MiB). A miss also fetches the
   * aligned run of blocks around it that one round trip is worth: the bytes a response body
   * brings in the time a request waits for its headers, as measured on this link's responses
   * (up to `maxBytes`), so a link with a long wait and a fast body (a busy server, a distant one
   * with a wide pipe) answers scattered reads with few requests, and a slow one fetches little
   * more than asked. The blocks a read, its read-ahead and its run need go out as one coalesced
   * request. `false`: no cache, every read is its own exact range (fewer bytes for scattered
   * small reads, one request each).
   */
  readAhead?: false | {
    /** Bytes per cached block, the unit of every request (default 256 KiB). */
    blockBytes?: number;
    /** Largest read-ahead window, and largest run a miss fetches, in bytes (default 4 MiB). */
    maxBytes?: number;
    /** Bytes of blocks kept in the cache (default 16 MiB). */
    cacheBytes?: number;
  };
}

const DEFAULT_COALESCE_BYTES = 8 * 1024 * 1024;
const LIMITS: BackendLimits = Object.freeze({ maxIov: 1024, maxTransfer: 64 * 1024 * 1024 });
const CAPABILITIES: BackendCapabilities = Object.freeze({ writable: false, truncate: false, discard: false, durableFlush: false });

/** One read waiting for its request: the clamped byte range [start, end) and its buffers (settling it again does nothing). */
interface PendingRead {
  start: number;
  end: number;
  buffers: readonly Uint8Array[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** Parses `Content-Range: bytes FIRST-LAST/TOTAL` (or the unsatisfied form with an asterisk); undefined when malformed. */
function parseContentRange(value: string | null): { first?: number; last?: number; total?: number } | undefined {
  if (value === null) return undefined;
  const match = /^\s*bytes\s+(?:(\d+)-(\d+)|\*)\/(\d+|\*)\s*$/i.exec(value);
  if (match === null) return undefined;
  const number = (text: string | undefined): number | undefined => (text === undefined || text === '*' ? undefined : Number(text));
  return { first: number(match[1]), last: number(match[2]), total: number(match[3]) };
}

/**
 * Opens `url` as a read-only Backend (kind "http-range") whose bytes come from HTTP Range
 * requests, e.g. the base image under a writable overlay kept in OPFS or memory.
 *
 * The size is learned once: from HEAD's Content-Length (when the response is not
 * content-encoded), else from the total in the Content-Range of a `Range: bytes=0-0` GET.
 * Every read sends `Range: bytes=FIRST-LAST` and accepts only status 206 with a Content-Range
 * naming exactly that range and the known total, and a body of exactly that length; anything
 * else (a 200 with the whole body from a server that ignores Range, another range, a changed
 * total, a short body, a content-encoded (e.g. gzip) body, a network failure) rejects with
 * BACKEND_IO_ERROR whose message says what was wrong. Bytes past the size read as zeros without
 * a request.
 *
 * Reads issued in the same tick whose ranges overlap or touch are served by one request spanning
 * them (up to `maxCoalesceBytes`), so a burst of neighbouring cluster reads costs one round trip;
 * each read resolves as soon as its own bytes have arrived (a read at the front of a long request
 * does not wait for the rest of it), and only the reads still waiting reject when the rest fails.
 *
 * Capabilities: { writable: false, truncate: false, discard: false, durableFlush: false };
 * pwritev rejects with BACKEND_READ_ONLY, flush() resolves. close() lets reads already issued
 * finish; later calls reject with BACKEND_CLOSED.
 */
export async function openHttpBackend(url: string | URL, options: HttpBackendOptions = {}): Promise<Backend> {
  const fetchFn = options.fetch ?? defaultRemoteFetch();
  const href = String(url);
  const maxCoalesceBytes = options.maxCoalesceBytes ?? DEFAULT_COALESCE_BYTES;
  if (!Number.isSafeInteger(maxCoalesceBytes) || maxCoalesceBytes < 1) {
    throw new BackendError('INVALID_ARGUMENT', `http backend ${href}: maxCoalesceBytes must be a positive integer, got ${maxCoalesceBytes}`);
  }

  const failure = (what: string, message: string, cause?: unknown): BackendError =>
    new BackendError('BACKEND_IO_ERROR', `http backend: ${what} ${href}: ${message}`, cause === undefined ? undefined : { cause });

  const request = async (what: string, method: string, range?: string): Promise<Response> => {
    const headers = new Headers(options.headers);
    if (range !== undefined) headers.set('Range', range);
    try {
      return await fetchFn(href, { method, headers });
    } catch (err) {
      throw failure(what, `the request failed: ${err instanceof Error ? err.message : String(err)}`, err);
    }
  };

  const learnSize = async (): Promise<number> => {
    const head = await request('HEAD', 'HEAD');
    const length = head.headers.get('Content-Length');
    const encoding = head.headers.get('Content-Encoding');
    if (head.ok && length !== null && /^\d+$/.test(length.trim()) && (encoding === null || encoding === 'identity')) {
      return Number(length.trim());
    }
    const probe = await request('size probe', 'GET', 'bytes=0-0');
    const range = parseContentRange(probe.headers.get('Content-Range'));
    await probe.body?.cancel();
    if (probe.status === 416 && range?.total === 0) return 0; // an empty resource has no byte 0
    if (probe.status !== 206 || range?.first !== 0 || range.last !== 0 || range.total === undefined) {
      throw failure('size probe', `expected 206 Partial Content with Content-Range bytes 0-0/SIZE, got ${probe.status} with Content-Range ${JSON.stringify(probe.headers.get('Content-Range'))} (does the server support Range requests?)`);
    }
    return range.total;
  };

  const size = await learnSize();
  let closed = false;
  let queue: PendingRead[] = [];
  const inFlight = new Set<Promise<unknown>>();
  const scratch = new ScratchPool();
  const roundTrips = new RoundTripEstimate();

  /**
   * Fetches [start, end) with one strictly checked Range request, its body copied piece by piece
   * into the buffers of `members` (the reads it serves) as it arrives: no response is held whole.
   */
  const fetchRange = async (start: number, end: number, members: readonly PendingRead[]): Promise<void> => {
    const wanted = `bytes ${start}-${end - 1}/${size}`;
    const sentAt = performance.now();
    const response = await request('read', 'GET', `bytes=${start}-${end - 1}`);
    const headersAt = performance.now();
    if (response.status !== 206) {
      await response.body?.cancel();
      const hint = response.status === 200 ? ' (the server ignored the Range header and sent the whole resource)' : '';
      throw failure('read', `expected 206 Partial Content for ${wanted}, got ${response.status}${hint}`);
    }
    const encoding = response.headers.get('Content-Encoding');
    if (encoding !== null && encoding.trim().toLowerCase() !== 'identity') {
      await response.body?.cancel();
      throw failure('read', `the server sent ${wanted} with Content-Encoding: ${encoding}; byte ranges of an encoded response are not image bytes (serve the image uncompressed, or as split parts)`);
    }
    const contentRange = response.headers.get('Content-Range');
    const range = parseContentRange(contentRange);
    if (range === undefined || range.first !== start || range.last !== end - 1 || range.total !== size) {
      await response.body?.cancel();
      throw failure('read', `expected Content-Range ${JSON.stringify(wanted)}, got ${JSON.stringify(contentRange)}`);
    }
    let bodyBytes: number;
    try {
      bodyBytes = await readBodyInto(response.body, end - start, scratch, (piece, bodyOffset) => {
        const arrivedEnd = start + bodyOffset + piece.byteLength;
        for (const read of members) {
          deliver(read, piece, start + bodyOffset);
          if (read.end <= arrivedEnd) read.resolve();
        }
      });
    } catch (err) {
      throw failure('read', `reading the body of ${wanted} failed: ${err instanceof Error ? err.message : String(err)}`, err);
    }
    if (bodyBytes !== end - start) {
      throw failure('read', `the body of ${wanted} has ${bodyBytes > end - start ? 'more than ' : ''}${bodyBytes} bytes, expected ${end - start}`);
    }
    roundTrips.record(headersAt - sentAt, bodyBytes, performance.now() - headersAt);
    const runBytes = roundTrips.bytesPerRoundTrip();
    if (runBytes !== undefined) cache?.setNeighbourhoodBytes(runBytes);
  };

  /**
   * Copies what `read` wants of `piece` (the bytes of [pieceStart, ...)) into its buffers; once the
   * read's last byte arrived, zeros past the size fill the rest of its buffers.
   */
  const deliver = (read: PendingRead, piece: Uint8Array, pieceStart: number): void => {
    const from = Math.max(read.start, pieceStart);
    const to = Math.min(read.end, pieceStart + piece.byteLength);
    if (from >= to) return;
    let bufferStart = read.start; // byte offset of the buffer being looked at
    for (const target of read.buffers) {
      const bufferEnd = bufferStart + target.byteLength;
      const copyFrom = Math.max(from, bufferStart);
      const copyTo = Math.min(to, bufferEnd);
      if (copyFrom < copyTo) target.set(piece.subarray(copyFrom - pieceStart, copyTo - pieceStart), copyFrom - bufferStart);
      if (to === read.end && bufferEnd > read.end) target.fill(0, Math.max(0, read.end - bufferStart)); // past the size
      bufferStart = bufferEnd;
    }
  };

  /** Sends the queued reads: sorted, joined where they overlap or touch, one request per group. */
  const drain = (): void => {
    const reads = queue.sort((a, b) => a.start - b.start);
    queue = [];
    let group: PendingRead[] = [];
    let groupStart = 0;
    let groupEnd = 0;
    const send = (members: PendingRead[], start: number, end: number): void => {
      const promise = fetchRange(start, end, members).then(
        () => {
          for (const read of members) read.resolve();
        },
        (err: unknown) => {
          for (const read of members) read.reject(err);
        },
      );
      inFlight.add(promise);
      void promise.finally(() => inFlight.delete(promise));
    };
    for (const read of reads) {
      const joined = Math.max(groupEnd, read.end) - groupStart;
      if (group.length > 0 && read.start <= groupEnd && joined <= maxCoalesceBytes) {
        group.push(read);
        groupEnd = Math.max(groupEnd, read.end);
        continue;
      }
      if (group.length > 0) send(group, groupStart, groupEnd);
      group = [read];
      groupStart = read.start;
      groupEnd = read.end;
    }
    if (group.length > 0) send(group, groupStart, groupEnd);
  };

  /** Queues the read of [start, end) (end clamped to the size) into `buffers`. */
  const queueRead = (start: number, end: number, buffers: readonly Uint8Array[]): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      if (queue.length === 0) queueMicrotask(drain);
      queue.push({ start, end, buffers: buffers.slice(), resolve, reject });
    });

  let cache: ReadAheadCache | undefined;
  if (options.readAhead !== false) {
    const readAhead = options.readAhead ?? {};
    const blockBytes = readAhead.blockBytes ?? 256 * 1024;
    const maxBytes = readAhead.maxBytes ?? 4 * 1024 * 1024;
    const cacheBytes = readAhead.cacheBytes ?? 16 * 1024 * 1024;
    if (![blockBytes, maxBytes, cacheBytes].every((n) => Number.isSafeInteger(n) && n >= 0) || blockBytes === 0) {
      throw new BackendError('INVALID_ARGUMENT', `http backend ${href}: readAhead sizes must be non-negative integers and blockBytes positive`);
    }
    cache = new ReadAheadCache(blockBytes, size, async (index) => {
      const start = index * blockBytes;
      const block = new Uint8Array(Math.min(size, start + blockBytes) - start);
      await queueRead(start, start + block.byteLength, [block]);
      return block;
    }, { cacheBlocks: Math.max(4, Math.floor(cacheBytes / blockBytes)), maxAheadBlocks: Math.ceil(maxBytes / blockBytes) });
  }

  const closedError = (what: string): BackendError => new BackendError('BACKEND_CLOSED', `http backend: ${what} ${href}: backend is closed`);

  return {
    kind: 'http-range',
    capabilities: CAPABILITIES,
    limits: LIMITS,

    async getSize(): Promise<number> {
      if (closed) throw closedError('getSize');
      return size;
    },

    async preadv(position: number, buffers: readonly Uint8Array[]): Promise<void> {
      if (closed) throw closedError('preadv');
      const length = totalLength(buffers);
      checkRange(position, length);
      const end = Math.min(position + length, size);
      if (end <= position) {
        for (const target of buffers) target.fill(0);
        return;
      }
      if (cache === undefined) {
        await queueRead(position, end, buffers);
        return;
      }
      const data = new Uint8Array(length);
      const read = cache.read(position, data);
      inFlight.add(read);
      try {
        await read;
      } finally {
        inFlight.delete(read);
      }
      let at = 0;
      for (const target of buffers) {
        target.set(data.subarray(at, at + target.byteLength));
        at += target.byteLength;
      }
    },

    async pwritev(): Promise<void> {
      if (closed) throw closedError('pwritev');
      throw new BackendError('BACKEND_READ_ONLY', `http backend: pwritev ${href}: backend is read-only`);
    },

    async flush(): Promise<void> {
      if (closed) throw closedError('flush');
    },

    async close(): Promise<void> {
      closed = true;
      // Reads queued but not yet sent are sent by the pending drain; wait for them too.
      await Promise.resolve();
      await Promise.allSettled([...inFlight]);
    },
  };
}
