// SPDX-License-Identifier: MIT
// The OPFS benchmark's worker: the seed workload (sequential 4 KiB writes from byte 512 into a
// fresh 1 GiB qcow2 image with 64 KiB clusters, 32 requests per multiwrite batch) on the
// sync-access OPFS backend, one run per message; plus the plain OPFS write cost of 4 KiB against
// 1 MiB writes, the reason merging matters here.

import { openOpfsBackend, Qcow2Image, type MergeMode, type WriteRequest } from '../../bindings/browser.js';

const KIB = 1024;
const MIB = 1024 * KIB;
const IMAGE_BYTES = 1024 * MIB;
const CLUSTER_BYTES = 64 * KIB;
const REQUEST_BYTES = 4 * KIB;
const UNALIGNED_START = 512;
const BATCH_REQUESTS = 32;
const DIRECTORY = 'qcow2-wasm-bench';

/** A request from opfs-page.ts. */
export type BenchRequest =
  | { task: 'qcow2'; merge: MergeMode; totalBytes: number }
  | { task: 'plain'; writeBytes: number; totalBytes: number };

/** One qcow2 run's figures. */
export interface Qcow2Run {
  seconds: number;
  guestWriteRequests: number;
  hostWriteCalls: number;
  hostWriteBytes: number;
  cowBytes: number;
  verified: boolean;
}

/** Word k of the data stream: a hash of k, so a misplaced block is caught on read-back. */
function fillStream(target: Uint8Array, streamOffsetBytes: number): void {
  const words = new Uint32Array(target.buffer, target.byteOffset, target.byteLength / 4);
  const first = streamOffsetBytes / 4;
  for (let i = 0; i < words.length; i++) {
    let x = (first + i + 0x5eed) | 0;
    x = Math.imul(x ^ (x >>> 16), 0x45d9f3b);
    x = Math.imul(x ^ (x >>> 16), 0x45d9f3b);
    words[i] = x ^ (x >>> 16);
  }
}

let requests: WriteRequest[] = [];

/** The workload's requests, made once per size and reused by every run (not timed). */
function workload(totalBytes: number): WriteRequest[] {
  if (requests.length !== totalBytes / REQUEST_BYTES) {
    requests = [];
    for (let stream = 0; stream < totalBytes; stream += REQUEST_BYTES) {
      const data = new Uint8Array(REQUEST_BYTES);
      fillStream(data, stream);
      requests.push({ offset: UNALIGNED_START + stream, data });
    }
  }
  return requests;
}

async function removeFile(name: string): Promise<void> {
  const root = await navigator.storage.getDirectory();
  const directory = await root.getDirectoryHandle(DIRECTORY, { create: true });
  await directory.removeEntry(name).catch(() => undefined);
}

async function runQcow2(merge: MergeMode, totalBytes: number): Promise<Qcow2Run> {
  const name = `seed-${merge}.qcow2`;
  await removeFile(name);
  const all = workload(totalBytes);
  const backend = await openOpfsBackend(`${DIRECTORY}/${name}`, { create: true, writable: true, mode: 'sync-access' });
  const image = await Qcow2Image.create(backend, { virtualSize: IMAGE_BYTES, clusterSize: CLUSTER_BYTES, merge });
  const started = performance.now();
  for (let first = 0; first < all.length; first += BATCH_REQUESTS) {
    await Promise.all(image.multiwrite(all.slice(first, first + BATCH_REQUESTS)));
  }
  await image.flush();
  const seconds = (performance.now() - started) / 1000;
  const stats = image.stats();
  // Read everything back (not timed) and compare with the stream.
  let verified = true;
  const expected = new Uint8Array(4 * MIB);
  for (let stream = 0; stream < totalBytes && verified; stream += expected.byteLength) {
    const length = Math.min(expected.byteLength, totalBytes - stream);
    const got = await image.read(UNALIGNED_START + stream, length);
    fillStream(expected.subarray(0, length), stream);
    for (let i = 0; i < length; i++) {
      if (got[i] !== expected[i]) {
        verified = false;
        break;
      }
    }
  }
  await image.close();
  await removeFile(name);
  return { seconds, guestWriteRequests: stats.guestWriteRequests, hostWriteCalls: stats.hostWriteCalls,
    hostWriteBytes: stats.hostWriteBytes, cowBytes: stats.cowBytes, verified };
}

/** Plain sequential writes of `writeBytes` each, one at a time, then a flush; returns seconds. */
async function runPlain(writeBytes: number, totalBytes: number): Promise<number> {
  const name = `plain-${writeBytes}.bin`;
  await removeFile(name);
  const backend = await openOpfsBackend(`${DIRECTORY}/${name}`, { create: true, writable: true, mode: 'sync-access' });
  const data = new Uint8Array(writeBytes);
  fillStream(data, 0);
  const started = performance.now();
  for (let at = 0; at < totalBytes; at += writeBytes) await backend.pwritev(at, [data]);
  await backend.flush();
  const seconds = (performance.now() - started) / 1000;
  await backend.close();
  await removeFile(name);
  return seconds;
}

const scope = self as unknown as { onmessage: ((event: MessageEvent<BenchRequest>) => void) | null; postMessage(message: unknown): void };
scope.onmessage = (event) => {
  const request = event.data;
  const work = request.task === 'qcow2' ? runQcow2(request.merge, request.totalBytes) : runPlain(request.writeBytes, request.totalBytes);
  work.then(
    (result) => scope.postMessage({ ok: true, result }),
    (err: unknown) => scope.postMessage({ ok: false, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) }),
  );
};
