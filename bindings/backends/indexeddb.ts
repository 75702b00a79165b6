// SPDX-License-Identifier: MIT
// The IndexedDB backend: one image kept as fixed-size records of one database, for browsers
// where OPFS is missing or unusable (some private windows, older engines).

import { OperationGate, checkRange, totalLength, type Backend, type BackendCapabilities, type BackendLimits } from './backend.js';
import { BackendError } from '../base/errors.js';
import { acquireImageLock, type LockedPolicy } from './image-lock.js';
import { gatherInto, scatterFrom } from './vector-copy.js';

/** Options of openIndexedDbBackend. */
export interface IndexedDbBackendOptions {
  /** Create the database if it is missing (requires `writable`). */
  create?: boolean;
  /** Open for writing. Default false: every write rejects with BACKEND_READ_ONLY. */
  writable?: boolean;
  /**
   * Bytes per record for a database being created (default 64 KiB; a power of two from 4 KiB to
   * 16 MiB). An existing database keeps the size it was created with.
   */
  recordBytes?: number;
  /**
   * What a writable open does when another tab or worker holds the image open for writing:
   * 'fail' (default) rejects with IMAGE_LOCKED; 'read-only' opens it read-only instead.
   */
  whenLocked?: LockedPolicy;
}

const RECORDS = 'records';
const META = 'meta';
const META_KEY = 'image';
const DEFAULT_RECORD_BYTES = 64 * 1024;
const LIMITS: BackendLimits = Object.freeze({ maxIov: 1024, maxTransfer: 16 * 1024 * 1024 });

/** The meta record: the image's size and the record size it is stored with. */
interface ImageMeta {
  sizeBytes: number;
  recordBytes: number;
}

/** The database name of the image `name` (each image is one database). */
export const indexedDbName = (name: string): string => `qcow2-wasm:${name}`;

const describeError = (err: unknown): string => (err instanceof Error || err instanceof DOMException ? `${err.name}: ${err.message}` : String(err));

/** Settles with the result of one IDBRequest. */
function requestResult<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** Settles when `transaction` commits; rejects with its error (or an AbortError) when it aborts. */
function completion(transaction: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onabort = () => reject(transaction.error ?? new DOMException('the transaction was aborted', 'AbortError'));
    transaction.onerror = (event) => event.preventDefault(); // the abort reports it
  });
}

/** A read-write transaction over both stores; `durability` where the engine knows the hint. */
function writeTransaction(db: IDBDatabase, durability: 'relaxed' | 'strict'): IDBTransaction {
  return db.transaction([RECORDS, META], 'readwrite', { durability });
}

async function openDatabase(name: string, create: boolean, recordBytes: number): Promise<{ db: IDBDatabase; meta: ImageMeta }> {
  if (typeof indexedDB === 'undefined') {
    throw new BackendError('BACKEND_NOT_SUPPORTED', `open indexeddb:${name}: this platform has no IndexedDB`);
  }
  let db: IDBDatabase;
  try {
    const request = indexedDB.open(indexedDbName(name));
    request.onupgradeneeded = () => {
      if (!create) {
        request.transaction!.abort();
        return;
      }
      const upgrading = request.result;
      upgrading.createObjectStore(RECORDS);
      upgrading.createObjectStore(META).put({ sizeBytes: 0, recordBytes } satisfies ImageMeta, META_KEY);
    };
    db = await requestResult(request);
  } catch (err) {
    if (!create && err instanceof DOMException && err.name === 'AbortError') {
      throw new BackendError('BACKEND_IO_ERROR', `open indexeddb:${name}: NotFoundError: no such image (open it with create to make one)`, { cause: err });
    }
    throw new BackendError('BACKEND_IO_ERROR', `open indexeddb:${name}: ${describeError(err)}`, { cause: err });
  }
  try {
    const meta = await requestResult(db.transaction(META, 'readonly').objectStore(META).get(META_KEY) as IDBRequest<ImageMeta | undefined>);
    if (meta === undefined || !Number.isSafeInteger(meta.sizeBytes) || !Number.isSafeInteger(meta.recordBytes) || meta.recordBytes <= 0) {
      throw new BackendError('BACKEND_IO_ERROR', `open indexeddb:${name}: the database holds no valid image record (not made by openIndexedDbBackend?)`);
    }
    return { db, meta };
  } catch (err) {
    db.close();
    if (err instanceof BackendError) throw err;
    throw new BackendError('BACKEND_IO_ERROR', `open indexeddb:${name}: ${describeError(err)}`, { cause: err });
  }
}

/** One pwritev waiting for its batch's transaction. */
interface PendingWrite {
  position: number;
  data: Uint8Array;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Opens the image `name` kept in IndexedDB (database "qcow2-wasm:NAME") as a Backend (kind
 * "indexeddb").
 *
 * The image is stored as records of `recordBytes` (key: record index) plus one meta record
 * holding the size; records never written read as zeros. The pwritev calls issued in the same
 * tick form one batch written by one read-write transaction (partially covered records are read
 * and merged inside it), so a batch lands whole or not at all. Write transactions use the
 * 'relaxed' durability hint; flush() commits a 'strict' transaction, which makes every earlier
 * commit durable (the engines keep one ordered log per database), so durableFlush is true.
 *
 * A writable open takes the image's Web Lock (see acquireImageLock): while another tab or
 * worker holds it, the open rejects with IMAGE_LOCKED, or opens read-only when `whenLocked` is
 * 'read-only'. close() releases it.
 *
 * Failures: INVALID_ARGUMENT (create without writable, a bad recordBytes), BACKEND_NOT_SUPPORTED
 * without IndexedDB, BACKEND_IO_ERROR with the platform error as `cause` (a missing image without
 * create, a QuotaExceededError: the batch that hit it is not stored, the image stays as before).
 */
export async function openIndexedDbBackend(name: string, options: IndexedDbBackendOptions = {}): Promise<Backend> {
  const create = options.create ?? false;
  const recordBytesWanted = options.recordBytes ?? DEFAULT_RECORD_BYTES;
  if (create && options.writable !== true) throw new BackendError('INVALID_ARGUMENT', `open indexeddb:${name}: create requires writable`);
  if (name === '') throw new BackendError('INVALID_ARGUMENT', 'open indexeddb: the image name is empty');
  if (!Number.isSafeInteger(recordBytesWanted) || recordBytesWanted < 4096 || recordBytesWanted > 16 * 1024 * 1024 ||
      (recordBytesWanted & (recordBytesWanted - 1)) !== 0) {
    throw new BackendError('INVALID_ARGUMENT', `open indexeddb:${name}: recordBytes must be a power of two from 4096 to 16777216, got ${recordBytesWanted}`);
  }
  const lock = await acquireImageLock(`indexeddb:${name}`, options.writable ?? false, options.whenLocked ?? 'fail');
  let opened: { db: IDBDatabase; meta: ImageMeta };
  try {
    opened = await openDatabase(name, create, recordBytesWanted);
  } catch (err) {
    await lock.release();
    throw err;
  }
  const { db } = opened;
  const writable = lock.writable;
  const recordBytes = opened.meta.recordBytes;
  let sizeBytes = opened.meta.sizeBytes;
  let batch: PendingWrite[] = [];
  const capabilities: BackendCapabilities = Object.freeze({ writable, truncate: writable, discard: false, durableFlush: true });

  /** Runs operations until close, which waits for them; platform failures become BACKEND_IO_ERROR. */
  const gate = new OperationGate(`indexeddb:${name}`, (what, path, err) => {
    if (err instanceof BackendError) return err;
    const quota = err instanceof DOMException && err.name === 'QuotaExceededError' ? ' (the origin\'s storage quota is used up; nothing of this call was stored)' : '';
    return new BackendError('BACKEND_IO_ERROR', `${what} ${path}: ${describeError(err)}${quota}`, { cause: err });
  });
  const readOnly = (what: string) => new BackendError('BACKEND_READ_ONLY', `${what} indexeddb:${name}: backend is read-only`);

  /** Fetches the records [first, last] in one transaction; missing ones are undefined. */
  const getRecords = (store: IDBObjectStore, first: number, last: number): Promise<Array<ArrayBuffer | undefined>> =>
    Promise.all(Array.from({ length: last - first + 1 }, (_, i) => requestResult(store.get(first + i) as IDBRequest<ArrayBuffer | undefined>)));

  /** Writes one batch in one transaction: read the partially covered records, merge, put. */
  const writeBatch = async (writes: PendingWrite[]): Promise<void> => {
    const transaction = writeTransaction(db, 'relaxed');
    const done = completion(transaction);
    let newSize: number;
    try {
      newSize = await fillBatch(transaction, writes);
    } catch (err) {
      // A failed put (e.g. QuotaExceededError) must not let the rest of the batch commit.
      try { transaction.abort(); } catch { /* already finished */ }
      await done.catch(() => undefined);
      throw err;
    }
    await done;
    // Transactions complete in order, so the last batch to complete holds the current size.
    sizeBytes = newSize;
  };

  /** Puts the batch's records (and the new size) in `transaction` and commits it; resolves with the new size. */
  const fillBatch = async (transaction: IDBTransaction, writes: PendingWrite[]): Promise<number> => {
    const records = transaction.objectStore(RECORDS);
    const meta = transaction.objectStore(META);
    const partial = new Set<number>();
    let writtenEnd = 0;
    for (const write of writes) {
      const end = write.position + write.data.byteLength;
      writtenEnd = Math.max(writtenEnd, end);
      for (let index = Math.floor(write.position / recordBytes); index * recordBytes < end; index++) {
        const recordStart = index * recordBytes;
        if (write.position > recordStart || end < recordStart + recordBytes) partial.add(index);
      }
    }
    // Inside the transaction, after every earlier one: the size as committed so far, and the
    // partially covered records, whose other bytes stay (the callbacks keep it active).
    const partialIndexes = [...partial];
    const [stored, ...existing] = await Promise.all([
      requestResult(meta.get(META_KEY) as IDBRequest<ImageMeta>),
      ...partialIndexes.map((index) => requestResult(records.get(index) as IDBRequest<ArrayBuffer | undefined>)),
    ]);
    const oldSize = (stored as ImageMeta).sizeBytes;
    const newSize = Math.max(oldSize, writtenEnd);
    const merged = new Map<number, Uint8Array>();
    partialIndexes.forEach((index, i) => {
      const record = new Uint8Array(recordBytes);
      const old = existing[i] as ArrayBuffer | undefined;
      // Bytes at or past the old size read as zeros, whatever a record still holds there.
      if (old !== undefined) record.set(new Uint8Array(old).subarray(0, Math.max(0, Math.min(recordBytes, oldSize - index * recordBytes))));
      merged.set(index, record);
    });
    for (const write of writes) {
      const end = write.position + write.data.byteLength;
      for (let index = Math.floor(write.position / recordBytes); index * recordBytes < end; index++) {
        const recordStart = index * recordBytes;
        let record = merged.get(index);
        if (record === undefined) {
          record = new Uint8Array(recordBytes);
          merged.set(index, record);
        }
        const from = Math.max(write.position, recordStart);
        const to = Math.min(end, recordStart + recordBytes);
        record.set(write.data.subarray(from - write.position, to - write.position), from - recordStart);
      }
    }
    for (const [index, record] of merged) records.put(record.buffer, index);
    if (newSize !== oldSize) meta.put({ sizeBytes: newSize, recordBytes } satisfies ImageMeta, META_KEY);
    transaction.commit?.();
    return newSize;
  };

  /** Sends the batch gathered in this tick; its pwritev calls (which close waits for) settle with it. */
  const drain = (): void => {
    const writes = batch;
    batch = [];
    writeBatch(writes).then(
      () => { for (const write of writes) write.resolve(); },
      (err: unknown) => { for (const write of writes) write.reject(err); },
    );
  };

  return {
    kind: 'indexeddb',
    capabilities,
    limits: LIMITS,

    getSize: () => gate.run('getSize', async () => sizeBytes),

    preadv: (position, buffers) => gate.run('preadv', async () => {
      const length = totalLength(buffers);
      checkRange(position, length);
      const end = Math.min(position + length, sizeBytes);
      const data = new Uint8Array(length);
      if (end > position) {
        const first = Math.floor(position / recordBytes);
        const last = Math.floor((end - 1) / recordBytes);
        const transaction = db.transaction(RECORDS, 'readonly');
        const records = await getRecords(transaction.objectStore(RECORDS), first, last);
        records.forEach((record, i) => {
          if (record === undefined) return;
          const recordStart = (first + i) * recordBytes;
          const from = Math.max(position, recordStart);
          const to = Math.min(end, recordStart + recordBytes);
          data.set(new Uint8Array(record, from - recordStart, to - from), from - position);
        });
      }
      scatterFrom(data, buffers);
    }),

    pwritev: (position, buffers) => gate.run('pwritev', async () => {
      if (!writable) throw readOnly('pwritev');
      const length = totalLength(buffers);
      checkRange(position, length);
      if (length === 0) return;
      const data = new Uint8Array(length);
      gatherInto(buffers, data);
      await new Promise<void>((resolve, reject) => {
        if (batch.length === 0) queueMicrotask(drain);
        batch.push({ position, data, resolve, reject });
      });
    }),

    flush: () => gate.run('flush', async () => {
      if (!writable) return;
      // Transactions commit in order: this one follows every batch already sent.
      const transaction = writeTransaction(db, 'strict');
      const done = completion(transaction);
      const meta = transaction.objectStore(META);
      meta.put(await requestResult(meta.get(META_KEY) as IDBRequest<ImageMeta>), META_KEY);
      transaction.commit?.();
      await done;
    }),

    truncate: (size) => gate.run('truncate', async () => {
      if (!writable) throw readOnly('truncate');
      checkRange(size, 0);
      const transaction = writeTransaction(db, 'relaxed');
      const done = completion(transaction);
      const records = transaction.objectStore(RECORDS);
      const keep = Math.ceil(size / recordBytes);
      records.delete(IDBKeyRange.lowerBound(keep));
      const tail = size % recordBytes;
      const oldSize = (await requestResult(transaction.objectStore(META).get(META_KEY) as IDBRequest<ImageMeta>)).sizeBytes;
      if (tail !== 0 && size < oldSize) {
        // The last kept record's bytes past the new size must read as zeros if the image grows.
        const old = await requestResult(records.get(keep - 1) as IDBRequest<ArrayBuffer | undefined>);
        if (old !== undefined) {
          const record = new Uint8Array(recordBytes);
          record.set(new Uint8Array(old).subarray(0, tail));
          records.put(record.buffer, keep - 1);
        }
      }
      transaction.objectStore(META).put({ sizeBytes: size, recordBytes } satisfies ImageMeta, META_KEY);
      transaction.commit?.();
      await done;
      sizeBytes = size;
    }),

    close: () => gate.close(async () => {
      db.close();
      await lock.release();
    }),
  };
}

/**
 * Deletes the image `name` from IndexedDB (its whole database). Resolves when it is gone, also
 * when it never existed; rejects with BACKEND_IO_ERROR while it is open elsewhere and the
 * deletion is blocked.
 */
export async function deleteIndexedDbImage(name: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const request = indexedDB.deleteDatabase(indexedDbName(name));
    request.onsuccess = () => resolve();
    request.onerror = () => reject(new BackendError('BACKEND_IO_ERROR', `delete indexeddb:${name}: ${describeError(request.error)}`, { cause: request.error }));
    request.onblocked = () => reject(new BackendError('BACKEND_IO_ERROR', `delete indexeddb:${name}: the image is open in another tab or worker; close it first`));
  });
}
