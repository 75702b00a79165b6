// SPDX-License-Identifier: MIT
// The read-only Blob backend: the conformance suite (as a backend that cannot write) and Files.

import { describe, expect, it } from 'vitest';
import { BackendError, createBlobBackend } from '../../bindings/browser.js';
import { backendConformanceSuite } from '../backend-suite.js';
import { expectBytes } from '../helpers/bytes.js';
import { makePrng } from '../helpers/prng.js';

backendConformanceSuite(
  'blob',
  async (initial) => createBlobBackend(new Blob([(initial ?? new Uint8Array(0)) as Uint8Array<ArrayBuffer>])),
  { kind: 'blob', writable: false },
);

describe('blob backend specifics', () => {
  it('reads a File made of several parts and describes itself as documented', async () => {
    const data = makePrng(21).fill(new Uint8Array(300_000));
    const file = new File([data.subarray(0, 1000), new Blob([data.subarray(1000)])], 'disk.img');
    const b = createBlobBackend(file);
    expect(b.kind).toBe('blob');
    expect(b.capabilities).toEqual({ writable: false, truncate: false, discard: false, durableFlush: false });
    expect(b.truncate).toBeUndefined();
    expect(b.discard).toBeUndefined();
    expect(await b.getSize()).toBe(300_000);
    const head = new Uint8Array(999);
    const rest = new Uint8Array(299_001 + 50);
    await b.preadv(1, [head, rest]);
    expectBytes(head, data.subarray(1, 1000), 'head');
    expectBytes(rest.subarray(0, 299_000), data.subarray(1000), 'rest');
    expect(rest.subarray(299_000).every((byte) => byte === 0), 'past the end').toBe(true);
    const err = await b.pwritev(0, [Uint8Array.of(1)]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendError);
    expect((err as BackendError).code).toBe('BACKEND_READ_ONLY');
    await b.close();
  });
});
