// SPDX-License-Identifier: MIT
// The v86 boot benchmark's local server (bench/v86-boot.ts): the boot's files with single-range
// GET support, counts of the disk bytes and requests it sent, an optional link of a set rate for
// the disk's bytes, and the pages' results.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Plugin } from 'vite';
import type { BootOutcome } from './browser/v86-boot-page.js';

/** The bench's local server: the boot files, the disk counts and the boots' results. */
export interface BootServer {
  plugin: Plugin;
  /** The disk bytes and requests served since the last call. */
  takeStats(): { diskBytes: number; diskRequests: number };
  /** The next outcome a page POSTs to /__v86boot/result. */
  nextOutcome(): Promise<BootOutcome>;
}

/** Sends response bodies at `bytesPerSecond` in all, taking turns a chunk at a time. */
function sharedLink(bytesPerSecond: number): (res: ServerResponse, body: Uint8Array) => void {
  const CHUNK_BYTES = 16 * 1024;
  const sending: { res: ServerResponse; body: Uint8Array; sentBytes: number }[] = [];
  let nextChunkAtMs = 0;
  let timer: NodeJS.Timeout | undefined;
  const sendNextChunk = (): void => {
    timer = undefined;
    const stream = sending.shift();
    if (stream === undefined) return;
    const chunk = stream.body.subarray(stream.sentBytes, stream.sentBytes + CHUNK_BYTES);
    stream.sentBytes += chunk.byteLength;
    if (stream.res.destroyed) {
      // The client went away: the rest of this body never goes out.
    } else if (stream.sentBytes === stream.body.byteLength) {
      stream.res.end(chunk);
    } else {
      stream.res.write(chunk);
      sending.push(stream);
    }
    nextChunkAtMs += (chunk.byteLength / bytesPerSecond) * 1000;
    timer = setTimeout(sendNextChunk, Math.max(0, nextChunkAtMs - performance.now()));
  };
  return (res, body) => {
    sending.push({ res, body, sentBytes: 0 });
    if (timer === undefined) {
      nextChunkAtMs = performance.now();
      sendNextChunk();
    }
  };
}

/** Where the memory layout's disk is served: before a boot's clock starts, so never over the shared link. */
export const PRELOAD_PATH = 'disk/preload/disk.raw';

/**
 * Serves the files in `files` (URL path below /__v86boot/ → bytes) with HEAD and single-range GET
 * support, counts what it sends for paths under disk/, and takes the pages' POSTs to
 * /__v86boot/result. With `linkBytesPerSecond`, the bodies of disk/ paths (but PRELOAD_PATH's) go
 * out over one link of that rate, shared by the responses in flight.
 */
export function bootFileServer(files: Map<string, Uint8Array>, linkBytesPerSecond: number | undefined): BootServer {
  const link = linkBytesPerSecond === undefined ? undefined : sharedLink(linkBytesPerSecond);
  let diskBytes = 0;
  let diskRequests = 0;
  let outcomeWaiter: ((outcome: BootOutcome) => void) | undefined;
  const takeResult = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      res.end();
      const outcome = JSON.parse(Buffer.concat(chunks).toString('utf8')) as BootOutcome;
      const waiter = outcomeWaiter;
      outcomeWaiter = undefined;
      waiter?.(outcome);
    });
  };
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname.replace(/^\//, ''));
    if (path === 'result' && req.method === 'POST') {
      takeResult(req, res);
      return;
    }
    const bytes = files.get(path);
    if (bytes === undefined) {
      res.statusCode = 404;
      res.end(`no file ${path}`);
      return;
    }
    res.setHeader('Accept-Ranges', 'bytes');
    res.setHeader('Cache-Control', 'no-store');
    let body = bytes;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range !== null) {
      const first = Number(range[1]);
      const last = range[2] === '' ? bytes.byteLength - 1 : Math.min(Number(range[2]), bytes.byteLength - 1);
      if (first > last) {
        res.statusCode = 416;
        res.setHeader('Content-Range', `bytes */${bytes.byteLength}`);
        res.end();
        return;
      }
      body = bytes.subarray(first, last + 1);
      res.statusCode = 206;
      res.setHeader('Content-Range', `bytes ${first}-${last}/${bytes.byteLength}`);
    }
    res.setHeader('Content-Length', String(body.byteLength));
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    if (path.startsWith('disk/')) {
      diskBytes += body.byteLength;
      diskRequests++;
    }
    if (link !== undefined && path.startsWith('disk/') && path !== PRELOAD_PATH && body.byteLength > 0) link(res, body);
    else res.end(body);
  };
  return {
    plugin: {
      name: 'v86-boot-files',
      configureServer(server) {
        server.middlewares.use('/__v86boot', (req, res) => handle(req, res));
      },
    },
    takeStats() {
      const stats = { diskBytes, diskRequests };
      diskBytes = 0;
      diskRequests = 0;
      return stats;
    },
    nextOutcome: () => new Promise((resolve) => { outcomeWaiter = resolve; }),
  };
}
