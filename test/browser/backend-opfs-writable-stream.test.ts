// SPDX-License-Identifier: MIT
// createWritableStreamBackend over an OPFS file's writable stream (the same stream a file picked
// with showSaveFilePicker gives): a qcow2 image converted into it reads back equal to its source;
// the file holds the writes only after close(), abort() leaves it as it was, and what the backend
// cannot do is refused with typed errors.

import { afterAll, describe, expect, it } from 'vitest';
import {
  BackendError, Qcow2Image, convertToQcow2, createMemoryBackend, createWritableStreamBackend,
} from '../../bindings/browser.js';
import { expectBytes } from '../helpers/bytes.js';
import { removeOpfsEntry, uniqueName } from './helpers.js';

const DIRECTORY = uniqueName('qcow2-wasm-test-writable-stream');
const CLUSTER = 64 * 1024;

async function opfsFile(): Promise<FileSystemFileHandle> {
  const directory = await (await navigator.storage.getDirectory()).getDirectoryHandle(DIRECTORY, { create: true });
  return directory.getFileHandle(`${uniqueName('file')}.qcow2`, { create: true });
}

const fileBytes = async (file: FileSystemFileHandle): Promise<Uint8Array> => new Uint8Array(await (await file.getFile()).arrayBuffer());

async function rejection(promise: Promise<unknown>): Promise<BackendError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err, 'expected a rejection').toBeInstanceOf(BackendError);
  return err as BackendError;
}

afterAll(() => removeOpfsEntry(DIRECTORY));

describe('createWritableStreamBackend', () => {
  it('takes a qcow2 image from convertToQcow2 that reads back equal to its source, committed at close', async () => {
    const source = await Qcow2Image.create(createMemoryBackend(), { virtualSize: 64 * CLUSTER });
    for (const cluster of [0, 1, 7, 30, 63]) await source.write(cluster * CLUSTER + 100, new Uint8Array(CLUSTER - 200).fill(cluster + 1));
    const file = await opfsFile();
    const backend = createWritableStreamBackend(await file.createWritable(), file.name);
    expect(backend.kind).toBe('writable-stream');
    const result = await convertToQcow2(source, backend);
    expect(await backend.getSize()).toBe(result.qcow2!.fileBytes);
    await backend.close();

    const written = await fileBytes(file);
    expect(written.byteLength).toBe(result.qcow2!.fileBytes);
    const copy = await Qcow2Image.open(createMemoryBackend(written), { readOnly: true });
    expectBytes(await copy.read(0, source.virtualSize), await source.read(0, source.virtualSize));
    await Promise.all([copy.close(), source.close()]);
  });

  it('leaves the file as it was when aborted', async () => {
    const file = await opfsFile();
    const first = createWritableStreamBackend(await file.createWritable(), file.name);
    await first.pwritev(0, [Uint8Array.of(1, 2, 3)]);
    await first.close();
    const second = createWritableStreamBackend(await file.createWritable(), file.name);
    await second.pwritev(0, [Uint8Array.of(9, 9, 9, 9, 9)]);
    await second.truncate(2);
    expect(await second.getSize()).toBe(2);
    await second.abort(new Error('export failed'));
    expectBytes(await fileBytes(file), Uint8Array.of(1, 2, 3));
  });

  it('refuses reads, bad ranges and calls after close with typed errors', async () => {
    const file = await opfsFile();
    const backend = createWritableStreamBackend(await file.createWritable(), file.name);
    expect((await rejection(backend.preadv(0, [new Uint8Array(1)]))).code).toBe('BACKEND_NOT_SUPPORTED');
    expect((await rejection(backend.pwritev(-1, [new Uint8Array(1)]))).code).toBe('INVALID_ARGUMENT');
    await backend.pwritev(4, [Uint8Array.of(7)]); // a bad call does not spoil the stream
    await backend.flush();
    await backend.close();
    expect((await rejection(backend.pwritev(0, [new Uint8Array(1)]))).code).toBe('BACKEND_CLOSED');
    expectBytes(await fileBytes(file), Uint8Array.of(0, 0, 0, 0, 7));
  });
});
