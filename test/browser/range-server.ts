// SPDX-License-Identifier: MIT
// A Vite plugin for the browser tests: an HTTP resource store on the test server's own origin
// with strict Range support, plus servers that get Range wrong on purpose.
//
//   PUT  /__range/NAME             stores the request body as resource NAME (204)
//   HEAD /__range/NAME[?quirk=Q,...]  200 with Content-Length and Accept-Ranges: bytes
//   GET  /__range/NAME[?quirk=Q,...]  a single `Range: bytes=FIRST-LAST` (or FIRST-) gives 206 with
//                                  Content-Range; unsatisfiable gives 416 `bytes */SIZE`; no
//                                  Range gives 200 and the whole resource
// Quirks: ignore-range (always 200 and the whole body), wrong-range (206 with the bytes and
// Content-Range of the range one byte later), wrong-total (206, total one more than the size),
// short-body (206 with the right Content-Range but one byte missing), no-head (HEAD answers 405),
// gzip (206 with the range's bytes gzip-compressed and Content-Encoding: gzip, as a server that
// compresses everything does).

import type { IncomingMessage, ServerResponse } from 'node:http';
import { gzipSync } from 'node:zlib';
import type { Plugin } from 'vite';

/** Resources are dropped oldest first once they hold more than this many bytes. */
const STORE_LIMIT_BYTES = 512 * 1024 * 1024;

/** The plugin; add it to the browser test project. */
export function rangeServer(): Plugin {
  const store = new Map<string, Uint8Array>();
  let storedBytes = 0;

  const put = (name: string, bytes: Uint8Array): void => {
    const old = store.get(name);
    if (old !== undefined) {
      storedBytes -= old.byteLength;
      store.delete(name);
    }
    store.set(name, bytes);
    storedBytes += bytes.byteLength;
    for (const [key, value] of store) {
      if (storedBytes <= STORE_LIMIT_BYTES || key === name) break;
      store.delete(key);
      storedBytes -= value.byteLength;
    }
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const name = decodeURIComponent(url.pathname.replace(/^\//, ''));
    const quirks = new Set((url.searchParams.get('quirk') ?? '').split(','));
    if (req.method === 'PUT') {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      put(name, new Uint8Array(Buffer.concat(chunks)));
      res.statusCode = 204;
      res.end();
      return;
    }
    const bytes = store.get(name);
    if (bytes === undefined) {
      res.statusCode = 404;
      res.end(`no resource ${name}`);
      return;
    }
    const size = bytes.byteLength;
    res.setHeader('Accept-Ranges', 'bytes');
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Content-Type', 'application/octet-stream');
    if (req.method === 'HEAD') {
      if (quirks.has('no-head')) {
        res.statusCode = 405;
        res.end();
        return;
      }
      res.setHeader('Content-Length', String(size));
      res.end();
      return;
    }
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range === null || quirks.has('ignore-range')) {
      res.setHeader('Content-Length', String(size));
      res.end(bytes);
      return;
    }
    const first = Number(range[1]);
    const last = Math.min(range[2] === '' ? size - 1 : Number(range[2]), size - 1);
    if (first >= size || last < first) {
      res.statusCode = 416;
      res.setHeader('Content-Range', `bytes */${size}`);
      res.end();
      return;
    }
    const shift = quirks.has('wrong-range') && last + 1 < size ? 1 : 0;
    let body = bytes.subarray(first + shift, last + 1 + shift);
    if (quirks.has('short-body')) body = body.subarray(0, body.byteLength - 1);
    if (quirks.has('gzip')) {
      body = new Uint8Array(gzipSync(body));
      res.setHeader('Content-Encoding', 'gzip');
    }
    const total = quirks.has('wrong-total') ? size + 1 : size;
    res.statusCode = 206;
    res.setHeader('Content-Range', `bytes ${first + shift}-${last + shift}/${total}`);
    res.setHeader('Content-Length', String(body.byteLength));
    res.end(body);
  };

  return {
    name: 'qcow2-wasm-range-server',
    configureServer(server) {
      server.middlewares.use('/__range', (req, res, next) => {
        handle(req, res).catch(next);
      });
    },
  };
}
