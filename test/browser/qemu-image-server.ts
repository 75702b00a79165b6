// SPDX-License-Identifier: MIT
// A Vite plugin for the browser tests: images made by qemu-img on the test server, so a test in
// any engine reads what QEMU writes and compares it with what qemu-img reads.
//
//   GET /__qemu-image/                    JSON { missing?: string, required: boolean }: `missing`
//                                         says what is not installed; `required` that CI is set
//                                         (a test then fails instead of skipping)
//   GET /__qemu-image/TYPE-CLUSTER.qcow2  a 4 MiB sample disk made by `qemu-img convert -c -O qcow2
//                                         -o compression_type=TYPE,cluster_size=CLUSTER` (TYPE zlib
//                                         or zstd, CLUSTER 512 to 2097152)
//   GET /__qemu-image/TYPE-CLUSTER.raw    that image as `qemu-img convert -O raw` reads it
// Images are made at the first request and kept until the server closes.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Plugin } from 'vite';
import { convertToRaw, hasQemuImg, qemuImg } from '../helpers/qemu.js';
import { isCi } from '../helpers/describe-requiring.js';
import { makePrng } from '../helpers/prng.js';

const SAMPLE_DISK_BYTES = 4 << 20;

/** 4 KiB blocks of text-like runs (compressed by qemu-img), pseudo-random bytes (stored plain) and holes. */
function sampleDisk(): Uint8Array {
  const disk = new Uint8Array(SAMPLE_DISK_BYTES);
  const prng = makePrng(0x5a7d);
  const words = ['qcow2 ', 'cluster ', 'guest ', 'kernel '].map((word) => new TextEncoder().encode(word));
  for (let at = 0; at < SAMPLE_DISK_BYTES; at += 4096) {
    const kind = prng.int(4);
    const block = disk.subarray(at, at + 4096);
    if (kind === 1) prng.fill(block);
    else if (kind > 1) for (let i = 0; i < block.length;) for (const byte of words[prng.int(words.length)]) if (i < block.length) block[i++] = byte;
  }
  return disk;
}

const IMAGE_NAME = /^(zlib|zstd)-(\d+)\.(qcow2|raw)$/;

/** The plugin; add it to the browser test project. */
export function qemuImageServer(): Plugin {
  let dir: string | undefined;
  const made = new Map<string, { qcow2: Uint8Array; raw: Uint8Array }>();

  // The image `type`-`clusterBytes` and qemu-img's reading of it, made once.
  const image = (type: string, clusterBytes: number): { qcow2: Uint8Array; raw: Uint8Array } => {
    const key = `${type}-${clusterBytes}`;
    let pair = made.get(key);
    if (pair === undefined) {
      dir ??= mkdtempSync(join(tmpdir(), 'qcow2-wasm-browser-images-'));
      const source = join(dir, 'sample.raw');
      writeFileSync(source, sampleDisk());
      const path = join(dir, `${key}.qcow2`);
      const result = qemuImg(['convert', '-c', '-O', 'qcow2', '-o', `compression_type=${type},cluster_size=${clusterBytes}`, source, path]);
      if (result.code !== 0) throw new Error(`qemu-img convert exited with ${result.code}: ${result.stderr.trim()}`);
      pair = { qcow2: new Uint8Array(readFileSync(path)), raw: convertToRaw(path) };
      made.set(key, pair);
    }
    return pair;
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const name = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname.replace(/^\//, ''));
    res.setHeader('Cache-Control', 'no-store');
    if (name === '') {
      res.setHeader('Content-Type', 'application/json');
      const missing = hasQemuImg() ? undefined : 'qemu-img/qemu-io not found on PATH (install qemu-utils)';
      res.end(JSON.stringify({ missing, required: isCi() }));
      return;
    }
    const match = IMAGE_NAME.exec(name);
    if (match === null) {
      res.statusCode = 404;
      res.end(`no image ${name} (names are TYPE-CLUSTER.qcow2 or .raw)`);
      return;
    }
    const pair = image(match[1], Number(match[2]));
    res.setHeader('Content-Type', 'application/octet-stream');
    res.end(match[3] === 'qcow2' ? pair.qcow2 : pair.raw);
  };

  return {
    name: 'qcow2-wasm-qemu-image-server',
    configureServer(server) {
      server.middlewares.use('/__qemu-image', (req, res, next) => {
        try {
          handle(req, res);
        } catch (error) {
          next(error);
        }
      });
      server.httpServer?.once('close', () => {
        if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
      });
    },
  };
}
