// SPDX-License-Identifier: MIT
// The read-only split-image backend: an image stored as numbered parts plus a manifest
// (split-manifest.ts), fetched with plain GETs (no Range requests), decoded, cached and read
// ahead.

import { decompress } from 'fzstd';
import { checkRange, totalLength, type Backend, type BackendCapabilities, type BackendLimits } from './backend.js';
import { BackendError } from '../base/errors.js';
import { SPLIT_MANIFEST_NAME, splitPartBytes, splitPartName, validateSplitManifest, type SplitManifest } from './split-manifest.js';
import { ReadAheadCache } from './read-ahead.js';
import { RoundTripEstimate } from './round-trip-estimate.js';
import { defaultRemoteFetch } from './remote-fetch.js';

/** Options of openSplitBackend. */
export interface SplitBackendOptions {
  /** Extra request headers sent with every request. */
  headers?: HeadersInit;
  /** The fetch to use (default: the global fetch; with qcow2-wasm/browser, one that runs on a dedicated worker). */
  fetch?: typeof fetch;
  /** Most decoded bytes kept in the part cache (default 64 MiB; at least a few parts are kept). */
  cacheBytes?: number;
  /** The widest read-ahead window, and the largest run of parts a miss fetches, in bytes (default 8 MiB, rounded up to whole parts; 0: none). */
  maxReadAheadBytes?: number;
}

const CAPABILITIES: BackendCapabilities = Object.freeze({ writable: false, truncate: false, discard: false, durableFlush: false });
/** Most part requests in flight at once. */
const MAX_CONCURRENT_FETCHES = 8;
const LIMITS: BackendLimits = Object.freeze({ maxIov: 1024, maxTransfer: 64 * 1024 * 1024 });

/** What openSplitBackend returns: a Backend that also tells what it fetched. */
export interface SplitBackend extends Backend {
  /** The validated manifest. */
  readonly manifest: SplitManifest;
  /** Parts fetched so far (read-ahead included) and their bytes as sent (compressed or not). */
  fetchStats(): {
    /** Part files fetched. */
    parts: number;
    /** Bytes received for them, as sent (compressed or not). */
    bytes: number;
  };
}

/**
 * Opens the split image whose manifest is at `manifestUrl` (a URL ending in the manifest's name,
 * or the directory URL ending in '/') as a read-only Backend (kind "split-parts").
 *
 * The manifest is fetched and validated (validateSplitManifest). Parts are fetched whole with
 * plain GET requests (at most 8 at a time) from the manifest's directory, zstd frames decoded (fzstd), and each must
 * decode to exactly the length the manifest gives it; they are cached (LRU, `cacheBytes`) and,
 * while reads go forward, read ahead in a window that doubles up to `maxReadAheadBytes`. A miss
 * also fetches the aligned run of parts around it that one round trip is worth (the bytes a
 * response body brings in the time a request waits for its headers, as measured on this link;
 * up to `maxReadAheadBytes`): on a link with a long wait and a fast body, scattered reads cost
 * few round trips.
 *
 * Failures reject with BACKEND_IO_ERROR whose message names the part and what was wrong: a
 * status other than 200 (e.g. a missing part: 404), a network failure, a part that does not
 * decode, or one whose length differs from the manifest's (a manifest that lies about sizes).
 * Nothing is cached from a failed fetch. Capabilities: read-only, durableFlush false; pwritev
 * rejects with BACKEND_READ_ONLY. close() lets running reads finish; later calls reject with
 * BACKEND_CLOSED.
 */
export async function openSplitBackend(manifestUrl: string | URL, options: SplitBackendOptions = {}): Promise<SplitBackend> {
  const fetchFn = options.fetch ?? defaultRemoteFetch();
  const base = new URL(String(manifestUrl), typeof location === 'undefined' ? undefined : location.href);
  const manifestHref = base.pathname.endsWith('/') ? new URL(SPLIT_MANIFEST_NAME, base).href : base.href;
  const failure = (message: string, cause?: unknown) =>
    new BackendError('BACKEND_IO_ERROR', `split image ${manifestHref}: ${message}`, cause === undefined ? undefined : { cause });

  const roundTrips = new RoundTripEstimate();
  const get = async (href: string, what: string): Promise<Uint8Array> => {
    let response: Response;
    const sentAt = performance.now();
    try {
      response = await fetchFn(href, { headers: options.headers });
    } catch (err) {
      throw failure(`fetching ${what} failed: ${err instanceof Error ? err.message : String(err)}`, err);
    }
    if (response.status !== 200) {
      await response.body?.cancel();
      throw failure(`${what} (${href}): expected 200, got ${response.status}${response.status === 404 ? ' (the file is missing)' : ''}`);
    }
    const headersAt = performance.now();
    try {
      const body = new Uint8Array(await response.arrayBuffer());
      roundTrips.record(headersAt - sentAt, body.byteLength, performance.now() - headersAt);
      return body;
    } catch (err) {
      throw failure(`reading ${what} (${href}) failed: ${err instanceof Error ? err.message : String(err)}`, err);
    }
  };

  let manifestJson: unknown;
  const manifestBytes = await get(manifestHref, 'the manifest');
  try {
    manifestJson = JSON.parse(new TextDecoder().decode(manifestBytes));
  } catch (err) {
    throw failure(`the manifest is not JSON: ${err instanceof Error ? err.message : String(err)}`, err);
  }
  const manifest = validateSplitManifest(manifestJson, manifestHref);
  const maxAheadBytes = options.maxReadAheadBytes ?? 8 * 1024 * 1024;
  const cacheBytes = options.cacheBytes ?? 64 * 1024 * 1024;
  let fetchedBytes = 0;

  // Browsers fail requests beyond a few hundred at once: part fetches queue for one of a few slots.
  let active = 0;
  const waiting: Array<() => void> = [];
  const slot = async <T>(op: () => Promise<T>): Promise<T> => {
    if (active >= MAX_CONCURRENT_FETCHES) await new Promise<void>((resolve) => waiting.push(resolve));
    active++;
    try {
      return await op();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };

  const fetchPart = async (index: number): Promise<Uint8Array> => {
    const name = splitPartName(index, manifest.compression);
    const stored = await slot(() => get(new URL(name, manifestHref).href, `part ${index}`));
    fetchedBytes += stored.byteLength;
    // The run of parts a miss fetches (side by side) is what one round trip is worth.
    const runBytes = roundTrips.bytesPerRoundTrip();
    if (runBytes !== undefined) cache.setNeighbourhoodBytes(runBytes);
    let bytes = stored;
    if (manifest.compression === 'zstd') {
      try {
        bytes = decompress(stored);
      } catch (err) {
        throw failure(`part ${index} (${name}) is not a valid zstd frame: ${err instanceof Error ? err.message : String(err)}`, err);
      }
    }
    const expected = splitPartBytes(manifest, index);
    if (bytes.byteLength !== expected) {
      throw failure(`part ${index} (${name}) holds ${bytes.byteLength} bytes, the manifest says ${expected}; the manifest and the parts do not match`);
    }
    return bytes;
  };
  const cache = new ReadAheadCache(manifest.partBytes, manifest.totalBytes, fetchPart, {
    cacheBlocks: Math.max(4, Math.floor(cacheBytes / manifest.partBytes)),
    maxAheadBlocks: Math.ceil(maxAheadBytes / manifest.partBytes),
  });

  let closed = false;
  const inFlight = new Set<Promise<unknown>>();
  const closedError = (what: string) => new BackendError('BACKEND_CLOSED', `split image ${manifestHref}: ${what}: backend is closed`);

  return {
    kind: 'split-parts',
    capabilities: CAPABILITIES,
    limits: LIMITS,
    manifest,
    fetchStats: () => ({ parts: cache.fetchedBlocks, bytes: fetchedBytes }),

    async getSize() {
      if (closed) throw closedError('getSize');
      return manifest.totalBytes;
    },

    async preadv(position, buffers) {
      if (closed) throw closedError('preadv');
      const length = totalLength(buffers);
      checkRange(position, length);
      const data = buffers.length === 1 ? buffers[0]! : new Uint8Array(length);
      const read = cache.read(position, data);
      inFlight.add(read);
      try {
        await read;
      } finally {
        inFlight.delete(read);
      }
      if (data !== buffers[0]) {
        let at = 0;
        for (const target of buffers) {
          target.set(data.subarray(at, at + target.byteLength));
          at += target.byteLength;
        }
      }
    },

    async pwritev() {
      if (closed) throw closedError('pwritev');
      throw new BackendError('BACKEND_READ_ONLY', `split image ${manifestHref}: pwritev: backend is read-only`);
    },

    async flush() {
      if (closed) throw closedError('flush');
    },

    async close() {
      closed = true;
      await Promise.allSettled([...inFlight]);
    },
  };
}
