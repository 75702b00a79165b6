// SPDX-License-Identifier: MIT
// The multiwrite contract on RawImage over the memory backend: ordering, batching,
// read-after-submitted-write, per-request errors, statistics.

import { describe, it, expect } from 'vitest';
import { RawImage } from '../bindings/raw/raw-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import type { Backend } from '../bindings/backends/backend.js';
import { expectBytes, expectFilled } from './helpers/bytes.js';

const filled = (length: number, value: number) => new Uint8Array(length).fill(value);

async function image(size = 1 << 20, options: Parameters<typeof RawImage.open>[1] = {}, backend?: Backend) {
  return RawImage.open(backend ?? createMemoryBackend(size), options);
}

describe('multiwrite', () => {
  it('returns one promise per request, in order, each resolving once its bytes read back', async () => {
    const img = await image();
    const promises = img.multiwrite([{ offset: 0, data: filled(10, 1) }, { offset: 10, data: filled(10, 2) }]);
    expect(promises).toHaveLength(2);
    await Promise.all(promises);
    expectBytes(await img.read(0, 20), new Uint8Array([...filled(10, 1), ...filled(10, 2)]));
  });

  it('merges a batch of sequential unaligned requests into one host write', async () => {
    const img = await image();
    const requests = Array.from({ length: 32 }, (_, i) => ({ offset: 512 + i * 4096, data: filled(4096, i) }));
    await Promise.all(img.multiwrite(requests));
    const stats = img.stats();
    expect(stats.guestWriteRequests).toBe(32);
    expect(stats.hostWriteCalls).toBe(1);
    expect(stats.hostWriteBytes).toBe(32 * 4096);
    expect(stats.mergedRequests).toBe(32);
  });

  it("merge 'off' issues one host write per request", async () => {
    const img = await image(1 << 20, { merge: 'off' });
    await Promise.all(img.multiwrite(Array.from({ length: 8 }, (_, i) => ({ offset: i * 100, data: filled(100, i) }))));
    expect(img.stats().hostWriteCalls).toBe(8);
  });

  it('batches write() calls made in the same tick', async () => {
    const img = await image();
    await Promise.all(Array.from({ length: 16 }, (_, i) => img.write(i * 512, filled(512, i + 1))));
    expect(img.stats().hostWriteCalls).toBe(1);
    for (let i = 0; i < 16; i++) expectFilled(await img.read(i * 512, 512), i + 1);
  });

  it('a read submitted after a write sees it before the write has settled', async () => {
    const img = await image();
    const write = img.write(100, filled(50, 7));
    const read = img.read(90, 70);
    const bytes = await read;
    expectFilled(bytes.subarray(0, 10), 0);
    expectFilled(bytes.subarray(10, 60), 7);
    await write;
  });

  it('later submissions win across batches still in flight', async () => {
    const img = await image();
    const first = img.multiwrite([{ offset: 0, data: filled(1000, 1) }]);
    const second = img.multiwrite([{ offset: 500, data: filled(1000, 2) }, { offset: 200, data: filled(100, 3) }]);
    const single = img.write(900, filled(10, 4));
    await Promise.all([...first, ...second, single]);
    const expected = filled(1500, 1);
    expected.fill(2, 500, 1500);
    expected.fill(3, 200, 300);
    expected.fill(4, 900, 910);
    expectBytes(await img.read(0, 1500), expected);
  });

  it('iovec requests land in order, zero-length parts included', async () => {
    const img = await image();
    await Promise.all(img.multiwrite([{ offset: 3, data: [filled(2, 1), new Uint8Array(0), filled(3, 2)] }]));
    expectBytes(await img.read(0, 10), new Uint8Array([0, 0, 0, 1, 1, 2, 2, 2, 0, 0]));
  });

  it('rejects bad requests with typed errors while their siblings succeed', async () => {
    const img = await image(4096);
    const results = await Promise.allSettled(img.multiwrite([
      { offset: 0, data: filled(10, 1) },
      { offset: -1, data: filled(10, 1) },
      { offset: 4090, data: filled(10, 1) },
      { offset: 0.5, data: filled(1, 1) },
      { offset: 20, data: 'nope' as unknown as Uint8Array },
      { offset: 30, data: filled(10, 9) },
    ]));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'rejected', 'rejected', 'fulfilled']);
    const codes = results.map((r) => (r.status === 'rejected' ? (r.reason as { code: string }).code : 'ok'));
    expect(codes).toEqual(['ok', 'INVALID_ARGUMENT', 'IMAGE_OUT_OF_RANGE', 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'ok']);
    expectFilled(await img.read(30, 10), 9);
  });

  it('splits merged writes to respect the backend maxIov and maxTransfer', async () => {
    const inner = createMemoryBackend(1 << 20);
    const calls: { position: number; count: number; bytes: number }[] = [];
    const backend: Backend = {
      ...inner,
      kind: inner.kind, capabilities: inner.capabilities, getSize: () => inner.getSize(), preadv: (p, b) => inner.preadv(p, b),
      flush: () => inner.flush(), close: () => inner.close(),
      limits: { maxIov: 4, maxTransfer: 3000 },
      pwritev(position, buffers) {
        calls.push({ position, count: buffers.length, bytes: buffers.reduce((s, b) => s + b.byteLength, 0) });
        return inner.pwritev(position, buffers);
      },
    };
    const img = await image(0, {}, backend);
    // One request of many iovec parts, then ten adjacent 700-byte requests.
    const parts = Array.from({ length: 10 }, (_, i) => filled(100, i + 1));
    const requests = [{ offset: 0, data: parts }, ...Array.from({ length: 10 }, (_, i) => ({ offset: 1000 + i * 700, data: filled(700, 20 + i) }))];
    await Promise.all(img.multiwrite(requests));
    expect(calls.every((c) => c.count <= 4 && c.bytes <= 3000)).toBe(true);
    const expected = new Uint8Array(8000);
    parts.forEach((p, i) => expected.set(p, i * 100));
    for (let i = 0; i < 10; i++) expected.fill(20 + i, 1000 + i * 700, 1700 + i * 700);
    expectBytes(await img.read(0, 8000), expected);
  });

  it('keeps the core memory buffer the same object across a workload (memory never grows)', async () => {
    const img = await image(1 << 24);
    const core = (img as unknown as { dispatcher: { core: { extents: Float64Array } } }).dispatcher.core;
    const buffer = core.extents.buffer;
    for (let b = 0; b < 50; b++) {
      await Promise.all(img.multiwrite(Array.from({ length: 300 }, (_, i) => ({ offset: (b * 300 + i) * 512, data: filled(512, b) }))));
    }
    expect(core.extents.buffer).toBe(buffer);
    expect(core.extents.length).toBeGreaterThan(0);
  });

  it('handles batches larger than one wasm call takes', async () => {
    const img = await image(1 << 24);
    const requests = Array.from({ length: 10_000 }, (_, i) => ({ offset: i * 1000, data: filled(1000, i & 0xff) }));
    await Promise.all(img.multiwrite(requests));
    for (const i of [0, 4095, 4096, 9999]) expectFilled(await img.read(i * 1000, 1000), i & 0xff);
  });
});

describe('RawImage', () => {
  it('takes its virtual size from the backend and refuses ranges past it', async () => {
    const img = await image(5000);
    expect(img.virtualSize).toBe(5000);
    await expect(img.read(4999, 2)).rejects.toMatchObject({ code: 'IMAGE_OUT_OF_RANGE' });
    await expect(img.write(5000, filled(1, 1))).rejects.toMatchObject({ code: 'IMAGE_OUT_OF_RANGE' });
  });

  it('writeZeroes zeroes a range, ordered after earlier writes', async () => {
    const img = await image(4 << 20);
    const write = img.write(0, filled(3 << 20, 5));
    await img.writeZeroes(1000, (2 << 20) + 17);
    await write;
    const bytes = await img.read(0, 3 << 20);
    expectFilled(bytes.subarray(0, 1000), 5);
    expectFilled(bytes.subarray(1000, 1000 + (2 << 20) + 17), 0);
    expectFilled(bytes.subarray(1000 + (2 << 20) + 17), 5);
  });

  it('discard is accepted and ordered after writes', async () => {
    const img = await image(1 << 20);
    await img.write(0, filled(4096, 1));
    await img.discard(0, 4096);
    await expect(img.discard(0, 2 << 20)).rejects.toMatchObject({ code: 'IMAGE_OUT_OF_RANGE' });
  });

  it('read-only images refuse writes, zeroes and discards with IMAGE_READ_ONLY', async () => {
    const img = await image(4096, { readOnly: true });
    expect(img.readOnly).toBe(true);
    await expect(img.write(0, filled(1, 1))).rejects.toMatchObject({ code: 'IMAGE_READ_ONLY' });
    await expect(img.writeZeroes(0, 1)).rejects.toMatchObject({ code: 'IMAGE_READ_ONLY' });
    await expect(img.discard(0, 1)).rejects.toMatchObject({ code: 'IMAGE_READ_ONLY' });
    expectFilled(await img.read(0, 4096), 0);
  });

  it('flush waits for writes in flight; close is idempotent and later calls fail IMAGE_CLOSED', async () => {
    const backend = createMemoryBackend(4096);
    const img = await image(0, {}, backend);
    const write = img.write(0, filled(100, 3));
    await img.flush();
    const direct = new Uint8Array(100);
    await backend.preadv(0, [direct]);
    expectFilled(direct, 3);
    await write;
    await Promise.all([img.close(), img.close()]);
    await expect(img.read(0, 1)).rejects.toMatchObject({ code: 'IMAGE_CLOSED' });
    await expect(img.write(0, filled(1, 1))).rejects.toMatchObject({ code: 'IMAGE_CLOSED' });
    await expect(img.flush()).rejects.toMatchObject({ code: 'IMAGE_CLOSED' });
  });

  it('counts guest and host traffic in stats()', async () => {
    const img = await image(1 << 20);
    await Promise.all(img.multiwrite([{ offset: 0, data: filled(100, 1) }, { offset: 100, data: filled(100, 2) }]));
    await img.read(0, 200);
    expect(img.stats()).toMatchObject({
      guestWriteRequests: 2, guestWriteBytes: 200, guestReadRequests: 1, guestReadBytes: 200,
      hostWriteCalls: 1, hostWriteBytes: 200, hostReadCalls: 1, hostReadBytes: 200, extents: 1, mergedRequests: 2,
    });
  });
});
