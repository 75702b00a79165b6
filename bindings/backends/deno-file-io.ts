// SPDX-License-Identifier: MIT
// Moving bytes through a Deno file handle, which has a cursor and no positional or vectored I/O:
// one seek, then whole transfers (short ones looped), short buffers of a vectored call staged
// together so a many-buffer call costs few platform calls; asynchronous and synchronous forms.

import { totalLength } from './backend.js';
import { BackendError } from '../base/errors.js';

/**
 * The part of a Deno.FsFile this backend uses (declared here: bindings/ compiles without Deno's
 * types). Exported so tests can drive the backend with fake files.
 */
export interface DenoFileLike {
  /** Moves the cursor; `whence` 0 is Deno.SeekMode.Start. Resolves with the new position. */
  seek(offset: number, whence: 0): Promise<number>;
  /** Reads at the cursor into `target`; null at end-of-file, else the bytes read (may be short). */
  read(target: Uint8Array): Promise<number | null>;
  /** Writes `source` at the cursor; resolves with the bytes written (may be short). */
  write(source: Uint8Array): Promise<number>;
  /** Sets the file size. */
  truncate(size: number): Promise<void>;
  /** fdatasync. */
  syncData(): Promise<void>;
  /** Size, whether it is a regular file and, on Unix, the device and inode numbers (null elsewhere). */
  stat(): Promise<{ size: number; isFile?: boolean; dev: number | null; ino: number | null }>;
  /** Synchronous seek (Deno.FsFile.seekSync); the synchronous path needs all three. */
  seekSync?(offset: number, whence: 0): number;
  /** Synchronous read at the cursor (Deno.FsFile.readSync); null at end-of-file. */
  readSync?(target: Uint8Array): number | null;
  /** Synchronous write at the cursor (Deno.FsFile.writeSync). */
  writeSync?(source: Uint8Array): number;
  /** Takes an advisory lock (flock) without waiting; false when another open file holds a conflicting one. */
  tryLock(exclusive: boolean): Promise<boolean>;
  close(): void;
}

/** Buffers at least this long are moved directly; shorter neighbours are staged together. */
const DIRECT_BYTES = 64 * 1024;
/** Most bytes one staged platform call moves. */
export const STAGING_BYTES = 1024 * 1024;
/** Linux moves at most this many bytes per read/write syscall (2 GiB less one page). */
export const MAX_TRANSFER = 0x7ffff000;
/** Deno.SeekMode.Start. */
const SEEK_START = 0;

/** One handle with its staging buffer (grown on demand, up to STAGING_BYTES). */
export interface Slot {
  readonly file: DenoFileLike;
  staging: Uint8Array;
}

/**
 * A run of a call's buffers that one platform call moves: a single buffer moved in place, or
 * several short ones staged together (`buffers.length > 1`).
 */
function* runsOf(buffers: readonly Uint8Array[]): Generator<Uint8Array[]> {
  let run: Uint8Array[] = [];
  let runBytes = 0;
  for (const buffer of buffers) {
    const length = buffer.byteLength;
    if (length === 0) continue;
    if (length >= DIRECT_BYTES || runBytes + length > STAGING_BYTES) {
      if (run.length > 0) yield run;
      run = [];
      runBytes = 0;
      if (length >= DIRECT_BYTES) {
        yield [buffer];
        continue;
      }
    }
    run.push(buffer);
    runBytes += length;
  }
  if (run.length > 0) yield run;
}

/** The slot's staging buffer, at least `length` bytes long. */
function stagingOf(slot: Slot, length: number): Uint8Array {
  if (slot.staging.byteLength < length) slot.staging = new Uint8Array(Math.max(length, Math.min(STAGING_BYTES, 2 * slot.staging.byteLength)));
  return slot.staging.subarray(0, length);
}

/** Writes all of `source` at the cursor, looping over short writes (at most MAX_TRANSFER a call). */
async function writeAll(file: DenoFileLike, source: Uint8Array, at: number): Promise<void> {
  let done = 0;
  while (done < source.byteLength) {
    const end = Math.min(source.byteLength, done + MAX_TRANSFER);
    const moved = await file.write(done === 0 && end === source.byteLength ? source : source.subarray(done, end));
    if (!(Number.isInteger(moved) && moved > 0 && moved <= end - done)) {
      const cause = Object.assign(new Error(`write moved ${moved} of ${end - done} bytes`), { code: 'EIO' });
      throw new BackendError('BACKEND_IO_ERROR', `pwritev at ${at + done}: the write made no progress`, { cause });
    }
    done += moved;
  }
}

/**
 * Reads `target` full from the cursor, looping over short reads (at most MAX_TRANSFER a call).
 * At end-of-file the rest of `target` is zero-filled and false returned.
 */
async function readAll(file: DenoFileLike, target: Uint8Array, at: number): Promise<boolean> {
  let done = 0;
  while (done < target.byteLength) {
    const end = Math.min(target.byteLength, done + MAX_TRANSFER);
    const moved = await file.read(target.subarray(done, end));
    if (moved === null || moved === 0) {
      target.fill(0, done);
      return false;
    }
    if (!(Number.isInteger(moved) && moved > 0 && moved <= end - done)) {
      throw new BackendError('BACKEND_IO_ERROR', `preadv at ${at + done}: the platform reported ${moved} bytes read of ${end - done}`);
    }
    done += moved;
  }
  return true;
}

/** Gathers `buffers` at `position` through the slot's file: one seek, then one write per run. */
export async function writeRuns(slot: Slot, position: number, buffers: readonly Uint8Array[]): Promise<void> {
  await slot.file.seek(position, SEEK_START);
  let at = position;
  for (const run of runsOf(buffers)) {
    let source = run[0]!;
    if (run.length > 1) {
      source = stagingOf(slot, totalLength(run));
      let offset = 0;
      for (const buffer of run) {
        source.set(buffer, offset);
        offset += buffer.byteLength;
      }
    }
    await writeAll(slot.file, source, at);
    at += source.byteLength;
  }
}

/** Scatters the range at `position` into `buffers`: one seek, one read per run, zeros past EOF. */
export async function readRuns(slot: Slot, position: number, buffers: readonly Uint8Array[]): Promise<void> {
  await slot.file.seek(position, SEEK_START);
  let at = position;
  let atEof = false;
  for (const run of runsOf(buffers)) {
    if (atEof) {
      for (const buffer of run) buffer.fill(0);
      continue;
    }
    if (run.length === 1) {
      atEof = !(await readAll(slot.file, run[0]!, at));
      at += run[0]!.byteLength;
      continue;
    }
    const staged = stagingOf(slot, totalLength(run));
    atEof = !(await readAll(slot.file, staged, at));
    let offset = 0;
    for (const buffer of run) {
      buffer.set(staged.subarray(offset, offset + buffer.byteLength));
      offset += buffer.byteLength;
    }
    at += staged.byteLength;
  }
}

/** Moves `buffers` at `position` through the slot's file synchronously (staged when several). */
export function transferSync(slot: Slot, mode: 'read' | 'write', position: number, buffers: readonly Uint8Array[], length: number): void {
  const file = slot.file;
  const staged = buffers.length === 1 ? buffers[0]! : stagingOf(slot, length);
  file.seekSync!(position, SEEK_START);
  if (mode === 'write') {
    if (staged !== buffers[0]) {
      let offset = 0;
      for (const buffer of buffers) {
        staged.set(buffer, offset);
        offset += buffer.byteLength;
      }
    }
    for (let done = 0; done < length;) {
      const moved = file.writeSync!(done === 0 ? staged : staged.subarray(done));
      if (!(Number.isInteger(moved) && moved > 0 && moved <= length - done)) {
        const cause = Object.assign(new Error(`write moved ${moved} of ${length - done} bytes`), { code: 'EIO' });
        throw new BackendError('BACKEND_IO_ERROR', `pwritev at ${position + done}: the write made no progress`, { cause });
      }
      done += moved;
    }
    return;
  }
  for (let done = 0; done < length;) {
    const moved = file.readSync!(done === 0 ? staged : staged.subarray(done));
    if (moved === null || moved === 0) {
      staged.fill(0, done);
      break;
    }
    if (!(Number.isInteger(moved) && moved > 0 && moved <= length - done)) {
      throw new BackendError('BACKEND_IO_ERROR', `preadv at ${position + done}: the platform reported ${moved} bytes read of ${length - done}`);
    }
    done += moved;
  }
  if (staged !== buffers[0]) {
    let offset = 0;
    for (const buffer of buffers) {
      buffer.set(staged.subarray(offset, offset + buffer.byteLength));
      offset += buffer.byteLength;
    }
  }
}
