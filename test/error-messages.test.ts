// SPDX-License-Identifier: MIT
// Error messages say each thing once, print 64-bit values exactly and use the words the user
// used: platform file errors without the code and path repeated, offsets and sizes in full
// decimal, create options refused in qemu-img's words with the refused value.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileIoError } from '../bindings/backends/backend.js';
import { openImageFile, openNodeBackend } from '../bindings/node.js';
import { Qcow2Image, RawImage, createMemoryBackend } from '../bindings/index.js';
import { exactNumber } from '../bindings/base/errors.js';

const failure = async (promise: Promise<unknown>): Promise<{ code?: string; message: string }> =>
  promise.then(() => { throw new Error('expected a rejection'); }, (error: { code?: string; message: string }) => error);

/** A fresh qcow2 image's bytes with the 64-bit header field at `fieldOffset` set to `value`. */
async function imageWithHeaderField(fieldOffset: number, value: bigint): Promise<Uint8Array> {
  const backend = createMemoryBackend();
  const image = await Qcow2Image.create(backend, { virtualSize: 1 << 20 });
  await image.flush();
  const bytes = new Uint8Array(await backend.getSize());
  await backend.preadv(0, [bytes]);
  await image.close();
  new DataView(bytes.buffer).setBigUint64(fieldOffset, value);
  return bytes;
}

describe('file errors say each thing once', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-messages-'));
  const missing = join(dir, 'missing.qcow2');

  it('a missing file: what, the path, the errno code and the description, once each', async () => {
    for (const open of [() => openNodeBackend(missing), () => openImageFile(missing)]) {
      const error = await failure(open());
      expect(error.code).toBe('BACKEND_IO_ERROR');
      expect(error.message).toBe(`open ${missing}: ENOENT: no such file or directory`);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('a Deno-style platform error loses its repeated call and path, keeps its description', () => {
    const denoError = Object.assign(new Error("No such file or directory (os error 2): open '/images/a.qcow2'"), { code: 'ENOENT' });
    expect(fileIoError('open', '/images/a.qcow2', denoError).message)
      .toBe('open /images/a.qcow2: ENOENT: No such file or directory (os error 2)');
    const otherPath = Object.assign(new Error("Permission denied (os error 13): open '/elsewhere'"), { code: 'EACCES' });
    expect(fileIoError('open', '/images/a.qcow2', otherPath).message)
      .toBe("open /images/a.qcow2: EACCES: Permission denied (os error 13): open '/elsewhere'");
    expect(fileIoError('read', '/x', 'plain text').message).toBe('read /x: plain text');
  });
});

describe('numbers print exactly', () => {
  it('exactNumber prints integers beyond 2^53 in full', () => {
    expect(exactNumber(2 ** 63)).toBe('9223372036854775808');
    expect(exactNumber(1.5)).toBe('1.5');
    expect(exactNumber(Number.NaN)).toBe('NaN');
  });

  it('a guest offset past 2^53', async () => {
    const image = await RawImage.open(createMemoryBackend(1 << 20));
    const error = await failure(image.read(2 ** 63, 10));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain('offset 9223372036854775808, length 10');
    await image.close();
  });

  it('a header table offset past 2^53 (L1 table at 0x7fffffffffff0000)', async () => {
    const bytes = await imageWithHeaderField(40, 0x7fffffffffff0000n);
    const error = await failure(Qcow2Image.open(createMemoryBackend(bytes)));
    expect(error.message).toContain('host offset 9223372036854710272 ');
  });

  it('a virtual size of 2^63 given to create', async () => {
    const error = await failure(Qcow2Image.create(createMemoryBackend(), { virtualSize: 2 ** 63 }));
    expect(error.message).toBe('Invalid virtual size 9223372036854775808: must be an integer number of bytes from 0 to 2^53');
  });
});

describe('create options are refused in qemu-img\'s words', () => {
  it.each([
    [{ clusterSize: 3000 }, 'Cluster size must be a power of two between 512 and 2048k'],
    [{ refcountBits: 3 }, 'Refcount width must be a power of two and may not exceed 64 bits'],
    [{ extendedL2: true, clusterSize: 4096 }, 'Extended L2 entries are only supported with cluster sizes of at least 16384 bytes, not 4096'],
    [{ compat: '0.10', lazyRefcounts: true }, 'Lazy refcounts only supported with compatibility level 1.1 and above'],
    [{ compat: '0.10', refcountBits: 8 }, 'Different refcount widths than 16 bits require compatibility level 1.1 or above'],
  ] as const)('%o', async (options, message) => {
    const error = await failure(Qcow2Image.create(createMemoryBackend(), { virtualSize: 1 << 20, ...options }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe(message);
  });
});
