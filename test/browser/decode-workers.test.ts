// SPDX-License-Identifier: MIT
// The browser's cluster decoding workers: a zlib batch decodes on a worker exactly as on the page
// (a cluster that does not decode is left to the page, which reports it as QCOW2_CORRUPT; in an
// engine whose DecompressionStream cannot decode qcow2's clusters the workers decline zlib, and the
// page decodes those), and a worker that cannot start, stops answering or dies never leaves a read
// waiting: its clusters decode on the page. zstd batches: decode-workers-zstd.test.ts.

import { afterAll, describe, expect, it } from 'vitest';
import { deflateSync } from 'fflate';
import '../../bindings/browser.js';
import { setClusterBatchDecoder } from '../../bindings/qcow2/decompress.js';
import { createBrowserWorkerClusterDecoder } from '../../bindings/qcow2/decode-workers-browser.js';
import { decodeWorkerSource } from '../../bindings/qcow2/decode-worker-source-browser.js';
import { ImageError } from '../../bindings/base/errors.js';
import { CLUSTER_BYTES, patterned } from '../helpers/compressed-clusters.js';
import { ENGINE } from './helpers.js';
import { blobWorker, countingPool, EVERY_BATCH, decodeAll, packed, repliesTo } from './decode-workers-helpers.js';

/** A worker's answer to any batch: every piece left to the page. */
const DECLINE_ALL = `({ id, pieces, clusterBytes }) => postMessage({ id, output: new ArrayBuffer(pieces.length / 2 * clusterBytes), decoded: new Uint8Array(pieces.length / 2) })`;

const VALID = deflateSync(patterned(CLUSTER_BYTES), { level: 6 });
const ZEROS = deflateSync(new Uint8Array(CLUSTER_BYTES));
const CORRUPT = new Uint8Array(600).fill(0xff);

/** `streams` packed back to back, each followed by 300 bytes of the next, as in a qcow2 file. */
const batch = (...streams: Uint8Array[]) => packed(300, ...streams);

afterAll(() => {
  setClusterBatchDecoder(createBrowserWorkerClusterDecoder());
});

describe('decoding clusters on workers', () => {
  // WebKit's DecompressionStream drops a stream's output when bytes follow its end (as the
  // standard says): there the workers decline and the page decodes.
  const decodesOnWorkers = ENGINE !== 'webkit';

  it(`${decodesOnWorkers ? 'decodes zlib clusters on a worker and leaves one that does not decode to the page' : 'declines in this engine'} (${ENGINE})`, async () => {
    const pool = createBrowserWorkerClusterDecoder(EVERY_BATCH)!;
    const { input, pieces, targets } = batch(VALID, CORRUPT, ZEROS);
    const decoded = await pool.decodeClusters('zlib', input, pieces, targets);
    expect(input.byteLength).toBeGreaterThan(0); // the caller's input is not transferred away
    if (!decodesOnWorkers) {
      expect([...decoded]).toEqual([0, 0, 0]);
      expect(pool.runningWorkers()).toBe(0);
      return;
    }
    expect([...decoded]).toEqual([1, 0, 1]);
    expect(targets[0]).toEqual(patterned(CLUSTER_BYTES));
    expect(targets[2]).toEqual(new Uint8Array(CLUSTER_BYTES));
    expect(pool.runningWorkers()).toBeGreaterThan(0);
    pool.end!();
  });

  it(`leaves a batch of at most 128 KiB of clusters to the page by default without starting a worker, and ${decodesOnWorkers ? 'decodes' : 'declines'} a larger one (${ENGINE})`, async () => {
    const pool = createBrowserWorkerClusterDecoder()!;
    const small = batch(VALID, ZEROS); // two 64 KiB clusters
    expect([...await pool.decodeClusters('zlib', small.input, small.pieces, small.targets)]).toEqual([0, 0]);
    expect(pool.runningWorkers()).toBe(0);
    const large = batch(VALID, ZEROS, VALID);
    expect([...await pool.decodeClusters('zlib', large.input, large.pieces, large.targets)]).toEqual(decodesOnWorkers ? [1, 1, 1] : [0, 0, 0]);
    expect(pool.decodedOnWorkers('zlib')).toBe(decodesOnWorkers ? 3 : 0);
    if (decodesOnWorkers) expect(large.targets[2]).toEqual(patterned(CLUSTER_BYTES));
    pool.end!();
  });

  // Where the workers decline (WebKit) no batch reaches them, so there is no order to keep: the
  // first test asserts the declining there instead.
  if (decodesOnWorkers) it('answers a worker\'s batches in the order they came (a read\'s own blocks go before its read-ahead)', async () => {
    const pool = createBrowserWorkerClusterDecoder({ ...EVERY_BATCH, workerCount: 1 })!;
    // A cluster that does not decode makes the worker wait a task for the stream's verdict.
    const large = batch(...Array.from({ length: 7 }, () => VALID), CORRUPT);
    const small = batch(ZEROS);
    const order: string[] = [];
    await Promise.all([
      pool.decodeClusters('zlib', large.input, large.pieces, large.targets).then(() => order.push('large')),
      pool.decodeClusters('zlib', small.input, small.pieces, small.targets).then(() => order.push('small')),
    ]);
    expect(order).toEqual(['large', 'small']);
    expect(large.targets[6]).toEqual(patterned(CLUSTER_BYTES));
    pool.end!();
  });

  it('answers a batch that fails as a whole (no memory for its output) with no cluster decoded, and goes on', async () => {
    const worker = blobWorker(decodeWorkerSource());
    const { input, pieces } = batch(VALID);
    const replies = await repliesTo(worker, [
      { type: 'zlib', input: input.slice().buffer, pieces, clusterBytes: 2 ** 40 }, // an output no engine allocates
      { type: 'zlib', input: input.slice().buffer, pieces, clusterBytes: CLUSTER_BYTES },
    ]);
    worker.terminate();
    expect(replies.map((reply) => [reply.id, [...reply.decoded]])).toEqual([[1, [0]], [2, [decodesOnWorkers ? 1 : 0]]]);
    if (decodesOnWorkers) expect(new Uint8Array(replies[1].output)).toEqual(patterned(CLUSTER_BYTES));
  });

  it('declines zlib once a worker declined it', async () => {
    const { pool, started } = countingPool(() => blobWorker(`onmessage = ({ data }) => postMessage({ id: data.id, output: new ArrayBuffer(0), decoded: new Uint8Array(data.pieces.length / 2), declined: true })`));
    const { input, pieces, targets } = batch(VALID);
    expect([...await pool.decodeClusters('zlib', input, pieces, targets)]).toEqual([0]);
    expect(pool.runningWorkers()).toBe(0);
    expect([...await pool.decodeClusters('zlib', input, pieces, targets)]).toEqual([0]);
    expect(started()).toBe(1);
  });

  it('reports a cluster that does not decode as QCOW2_CORRUPT, with the workers installed', async () => {
    setClusterBatchDecoder(createBrowserWorkerClusterDecoder(EVERY_BATCH));
    const good = batch(VALID, ZEROS);
    expect(await decodeAll('zlib', good.input, good.pieces)).toEqual([patterned(CLUSTER_BYTES), new Uint8Array(CLUSTER_BYTES)]);
    const bad = batch(VALID, CORRUPT);
    const error = await decodeAll('zlib', bad.input, bad.pieces).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ImageError);
    expect((error as ImageError).code).toBe('QCOW2_CORRUPT');
    expect((error as ImageError).message).toContain('host offset 8192');
  });

  it('ends its workers after end() and starts them again at the next batch', async () => {
    const { pool, started } = countingPool(() => blobWorker(`onmessage = (event) => (${DECLINE_ALL})(event.data)`));
    const { input, pieces, targets } = batch(VALID);
    await pool.decodeClusters('zlib', input, pieces, targets);
    pool.end!();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(pool.runningWorkers()).toBe(0);
    await pool.decodeClusters('zlib', input, pieces, targets);
    expect(started()).toBe(2);
    pool.end!();
  });
});

describe('workers that fail', () => {
  const cannotStart: [string, () => Worker][] = [
    ['a worker script that does not parse', () => blobWorker('this is not javascript (')],
    ['a worker script that is not there', () => new Worker('/no-such-decode-worker.js')],
  ];
  for (const [name, start] of cannotStart) {
    it(`gives up on ${name}: the page decodes every cluster`, async () => {
      const { pool, started } = countingPool(start);
      const { input, pieces, targets } = batch(VALID);
      await expect(pool.decodeClusters('zlib', input, pieces, targets)).rejects.toThrow(/decoding worker failed/);
      expect([...await pool.decodeClusters('zlib', input, pieces, targets)]).toEqual([0]);
      expect(started()).toBe(1);
      setClusterBatchDecoder(pool);
      expect(await decodeAll('zlib', input, pieces)).toEqual([patterned(CLUSTER_BYTES)]);
    });
  }

  it('gives up when starting a worker throws', async () => {
    const { pool } = countingPool(() => { throw new DOMException('blocked by the content security policy', 'SecurityError'); });
    const { input, pieces, targets } = batch(VALID);
    expect([...await pool.decodeClusters('zlib', input, pieces, targets)]).toEqual([0]);
    setClusterBatchDecoder(pool);
    expect(await decodeAll('zlib', input, pieces)).toEqual([patterned(CLUSTER_BYTES)]);
  });

  it('fails a batch a worker never answers, and the page decodes it', async () => {
    const { pool, started } = countingPool(() => blobWorker('onmessage = () => {}'), 200);
    setClusterBatchDecoder(pool);
    const { input, pieces } = batch(VALID, ZEROS);
    expect(await decodeAll('zlib', input, pieces)).toEqual([patterned(CLUSTER_BYTES), new Uint8Array(CLUSTER_BYTES)]);
    expect(pool.runningWorkers()).toBe(0);
    expect(await decodeAll('zlib', input, pieces)).toEqual([patterned(CLUSTER_BYTES), new Uint8Array(CLUSTER_BYTES)]);
    expect(started()).toBe(1); // it never answered: the pool gave up
  });

  it('replaces a worker that dies after answering', async () => {
    // Answers its first batch, then ends itself without a word at the second.
    const { pool, started } = countingPool(() => blobWorker(`let batches = 0;
      onmessage = (event) => { if (batches++ > 0) close(); else (${DECLINE_ALL})(event.data); };`), 1000); // a loaded machine took over 200 ms to start a worker
    const { input, pieces, targets } = batch(VALID);
    expect([...await pool.decodeClusters('zlib', input, pieces, targets)]).toEqual([0]);
    await expect(pool.decodeClusters('zlib', input, pieces, targets)).rejects.toThrow(/no answer within 1000 ms/);
    expect([...await pool.decodeClusters('zlib', input, pieces, targets)]).toEqual([0]);
    expect(started()).toBe(2);
    pool.end!();
  });
});
