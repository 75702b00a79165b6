// SPDX-License-Identifier: MIT
// The v86 adapter (bindings/v86.ts): unit tests of its contract without v86, then the real v86
// emulator booting SeaBIOS from images through toV86Disk, with a guest program
// (test/fixtures/v86-guest) that reads and writes sectors through int 13h and checks them itself.
// Afterwards qemu-img check must be clean and the image must hold what the guest wrote, read
// both through qemu-img and through the library.

import { describe, it, expect, vi, afterEach, beforeAll, afterAll } from 'vitest';
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BlockImage } from '../bindings/dispatch/image.js';
import { toV86Disk, V86Disk, type V86DiskOperation } from '../bindings/v86.js';
import { createImageFile, openImageFile } from '../bindings/node.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { RawImage } from '../bindings/raw/raw-image.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { ImageError } from '../bindings/base/errors.js';
import { wrapFaultyBackend, type FaultCallInfo } from './helpers/faulty-backend.js';
import { convertToRaw, hasQemuImg, qemuCheck, qemuImg } from './helpers/qemu.js';
import { describeRequiring } from './helpers/describe-requiring.js';

const KiB = 1024;
const MiB = 1024 * 1024;
const SECTOR = 512;

/** Calls collected from one adapter callback. */
function collector<T>() {
  const calls: T[] = [];
  return { calls, fn: (value: T) => { calls.push(value); } };
}

/** Lets queued microtasks and I/O callbacks run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** An image over a memory backend: qcow2 (fresh) or raw. */
async function memoryImage(kind: 'qcow2' | 'raw', size = 1 * MiB): Promise<BlockImage> {
  return kind === 'qcow2'
    ? Qcow2Image.create(createMemoryBackend(0), { virtualSize: size })
    : RawImage.open(createMemoryBackend(size));
}

/** Reads through the adapter's get, as v86 does, and resolves with what fn received. */
function getVia(disk: V86Disk, start: number, len: number): Promise<Uint8Array> {
  return new Promise((resolve) => disk.get(start, len, resolve));
}

const filled = (length: number, byte: number) => new Uint8Array(length).fill(byte);
const quietErrors = () => ({ onerror: vi.fn<(error: Error, operation: V86DiskOperation) => void>() });

// ---------------------------------------------------------------------------------------------
// The adapter's contract, without v86.
// ---------------------------------------------------------------------------------------------

describe('toV86Disk contract', () => {
  afterEach(() => { vi.useRealTimers(); });

  for (const kind of ['qcow2', 'raw'] as const) {
    it(`${kind}: byteLength, load(), set then get round trip at 512 and 2048 granularity`, async () => {
      const image = await memoryImage(kind);
      const disk = toV86Disk(image);
      expect(disk.byteLength).toBe(1 * MiB);
      const events: string[] = [];
      disk.onprogress = (event) => events.push(`progress ${event.loaded}/${event.total}`);
      disk.onload = () => events.push('load');
      await disk.load();
      expect(events).toEqual([`progress ${MiB}/${MiB}`, 'load']);

      const done = collector<void>();
      disk.set(3 * 2048, filled(2048, 0x5a), done.fn);
      disk.set(7 * SECTOR, filled(SECTOR, 0xa5), done.fn);
      expect(await getVia(disk, 3 * 2048, 2048)).toEqual(filled(2048, 0x5a));
      expect(await getVia(disk, 7 * SECTOR, SECTOR)).toEqual(filled(SECTOR, 0xa5));
      await disk.flush();
      expect(done.calls.length).toBe(2);
      expect(await image.read(3 * 2048, 2048)).toEqual(filled(2048, 0x5a));
      await disk.close();
    });
  }

  it('set copies data before returning (v86 reuses its buffer at once)', async () => {
    const disk = toV86Disk(await memoryImage('qcow2'));
    const ideBuffer = new Uint8Array(64 * KiB);
    ideBuffer.fill(0x11, 0, 2 * SECTOR);
    disk.set(10 * SECTOR, ideBuffer.subarray(0, 2 * SECTOR), () => {});
    ideBuffer.fill(0x99); // the next IDE command overwrites the view before the write ran
    expect(await getVia(disk, 10 * SECTOR, 2 * SECTOR)).toEqual(filled(2 * SECTOR, 0x11));
    await disk.close();
  });

  it('a get issued right after a set sees the new data while the write is still held in the backend', async () => {
    let holdWrites = true;
    const backend = wrapFaultyBackend(createMemoryBackend(1 * MiB), {
      decide: (call: FaultCallInfo) => (call.op === 'pwritev' && holdWrites ? { hold: true } : undefined),
    });
    const disk = toV86Disk(await RawImage.open(backend));
    const setDone = collector<void>();
    const got = collector<Uint8Array>();
    disk.set(4 * SECTOR, filled(SECTOR, 0x42), setDone.fn);
    disk.get(4 * SECTOR, SECTOR, got.fn);
    await backend.whenHeld(1);
    expect(setDone.calls.length).toBe(0);
    holdWrites = false;
    backend.releaseAll();
    await vi.waitFor(() => expect(got.calls.length).toBe(1));
    expect(got.calls[0]).toEqual(filled(SECTOR, 0x42));
    await disk.close();
  });

  it('writes of one tick reach the image as one merged batch', async () => {
    const image = await memoryImage('raw');
    const disk = toV86Disk(image);
    for (let i = 0; i < 8; i++) disk.set(i * SECTOR, filled(SECTOR, i + 1), () => {});
    await disk.flush();
    const stats = image.stats();
    expect(stats.guestWriteRequests).toBe(8);
    expect(stats.hostWriteCalls).toBe(1);
    await disk.close();
  });

  it('get honours an abort signal: no callback after abort, no read at all when aborted before', async () => {
    const image = await memoryImage('qcow2');
    const disk = toV86Disk(image);
    const aborted = new AbortController();
    aborted.abort();
    const got = collector<Uint8Array>();
    const readsBefore = image.stats().guestReadRequests;
    disk.get(0, SECTOR, got.fn, { signal: aborted.signal });
    expect(image.stats().guestReadRequests).toBe(readsBefore);

    const late = new AbortController();
    disk.get(SECTOR, SECTOR, got.fn, { signal: late.signal });
    late.abort(); // v86 aborts on IDE reset while the read is in flight
    const live = new AbortController();
    const liveGot = collector<Uint8Array>();
    disk.get(2 * SECTOR, SECTOR, liveGot.fn, { signal: live.signal });
    await disk.flush();
    await settle();
    expect(got.calls.length).toBe(0);
    expect(liveGot.calls.length).toBe(1);
    await disk.close();
  });

  it('get_and_cache keeps the first sector; get_from_cache answers only inside it and follows writes', async () => {
    const image = await memoryImage('qcow2');
    await image.write(0, filled(SECTOR, 0x33));
    const disk = toV86Disk(image);
    expect(disk.get_from_cache(0, SECTOR)).toBeUndefined();
    await new Promise<void>((resolve) => disk.get_and_cache(0, SECTOR, () => resolve()));
    expect(disk.get_from_cache(0, SECTOR)).toEqual(filled(SECTOR, 0x33));
    expect(disk.get_from_cache(SECTOR, SECTOR)).toBeUndefined();
    disk.set(256, filled(512, 0x44), () => {});
    const expected = filled(SECTOR, 0x33).fill(0x44, 256);
    expect(disk.get_from_cache(0, SECTOR)).toEqual(expected);
    const copy = disk.get_from_cache(0, SECTOR)!;
    copy.fill(0);
    expect(disk.get_from_cache(0, SECTOR)).toEqual(expected);
    await disk.close();
  });

  it('load() prefetches the first sector for get_from_cache', async () => {
    const image = await memoryImage('raw');
    await image.write(510, Uint8Array.of(0x55, 0xaa));
    const disk = toV86Disk(image);
    disk.onload = () => {};
    await disk.load();
    expect(disk.get_from_cache(0, SECTOR)!.subarray(510)).toEqual(Uint8Array.of(0x55, 0xaa));
    await disk.close();
  });

  it('get_buffer: the whole disk as an exact ArrayBuffer when small, fn() with no argument when large', async () => {
    const image = await memoryImage('qcow2', 64 * KiB);
    await image.write(100, filled(10, 7));
    const small = toV86Disk(image);
    const buffer = await new Promise<ArrayBuffer | undefined>((resolve) => small.get_buffer(resolve));
    expect(buffer).toBeInstanceOf(ArrayBuffer);
    expect(buffer!.byteLength).toBe(64 * KiB);
    expect(new Uint8Array(buffer!, 100, 10)).toEqual(filled(10, 7));

    const large = toV86Disk(image, { wholeBufferLimitBytes: 64 * KiB - 1 });
    const args = await new Promise<unknown[]>((resolve) => large.get_buffer((...a: unknown[]) => resolve(a)));
    expect(args).toEqual([]);
    await small.close();
  });

  it('get_state holds only plain numbers and set_state accepts it back; other states are refused', async () => {
    const disk = toV86Disk(await memoryImage('qcow2'));
    const state = disk.get_state();
    for (const value of state) expect(typeof value).toBe('number');
    const restored = JSON.parse(JSON.stringify(state)) as unknown;
    expect(() => disk.set_state(restored)).not.toThrow();

    const other = toV86Disk(await memoryImage('qcow2', 2 * MiB));
    expect(() => other.set_state(state)).toThrow(ImageError);
    expect(() => other.set_state(state)).toThrow(/1048576 bytes, not 2097152/);
    expect(() => disk.set_state([1, 2, 3])).toThrow(ImageError);
    expect(() => disk.set_state(undefined)).toThrow(ImageError);
    await disk.close();
    await other.close();
  });

  it('flushes after flushIdleMs without writes, and not again while nothing new was written', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const image = await memoryImage('qcow2');
    const flush = vi.spyOn(image, 'flush');
    const disk = toV86Disk(image, { flushIdleMs: 100, flushMaxDelayMs: Infinity });
    disk.set(0, filled(SECTOR, 1), () => {});
    await vi.advanceTimersByTimeAsync(60);
    disk.set(SECTOR, filled(SECTOR, 2), () => {}); // restarts the idle clock
    await vi.advanceTimersByTimeAsync(99);
    expect(flush).toHaveBeenCalledTimes(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(flush).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(flush).toHaveBeenCalledTimes(1);
    await disk.close();
  });

  it('flushes at flushMaxDelayMs while writes keep coming, then again when they stop', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const image = await memoryImage('qcow2');
    const flush = vi.spyOn(image, 'flush');
    const disk = toV86Disk(image, { flushIdleMs: 100, flushMaxDelayMs: 250 });
    for (let t = 0; t < 400; t += 50) {
      disk.set(t * SECTOR, filled(SECTOR, 3), () => {});
      await vi.advanceTimersByTimeAsync(50);
      expect(flush).toHaveBeenCalledTimes(t + 50 < 250 ? 0 : 1);
    }
    await vi.advanceTimersByTimeAsync(100);
    expect(flush).toHaveBeenCalledTimes(2);
    await disk.close();
  });

  it('with both triggers off only flush() and close() flush', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const image = await memoryImage('raw');
    const flush = vi.spyOn(image, 'flush');
    const close = vi.spyOn(image, 'close');
    const disk = toV86Disk(image, { flushIdleMs: Infinity, flushMaxDelayMs: Infinity });
    disk.set(0, filled(SECTOR, 4), () => {});
    await vi.advanceTimersByTimeAsync(3_600_000);
    expect(flush).toHaveBeenCalledTimes(0);
    await disk.flush();
    expect(flush).toHaveBeenCalledTimes(1);
    await disk.close();
    expect(close).toHaveBeenCalledTimes(1);
  });

  it('refuses invalid options', async () => {
    const image = await memoryImage('raw');
    expect(() => toV86Disk(image, { flushIdleMs: -1 })).toThrow(ImageError);
    expect(() => toV86Disk(image, { flushMaxDelayMs: Number.NaN })).toThrow(ImageError);
    expect(() => toV86Disk(image, { wholeBufferLimitBytes: 1.5 })).toThrow(ImageError);
  });

  it('a failed write goes to onerror and lastError, its callback never runs, and flush() rejects once', async () => {
    let failWrites = true;
    const backend = wrapFaultyBackend(createMemoryBackend(1 * MiB), {
      decide: (call: FaultCallInfo) => (call.op === 'pwritev' && failWrites ? { fail: true } : undefined),
    });
    const options = quietErrors();
    const disk = toV86Disk(await RawImage.open(backend), options);
    const done = collector<void>();
    disk.set(0, filled(SECTOR, 1), done.fn);
    await expect(disk.flush()).rejects.toMatchObject({ code: 'IMAGE_IO_ERROR' });
    expect(done.calls.length).toBe(0);
    expect(options.onerror).toHaveBeenCalledTimes(1);
    expect(options.onerror.mock.calls[0]![1]).toBe('write');
    expect(disk.lastError).toBe(options.onerror.mock.calls[0]![0]);
    await expect(disk.flush()).resolves.toBeUndefined();
    failWrites = false;
    disk.set(0, filled(SECTOR, 2), done.fn);
    await disk.close();
    expect(done.calls.length).toBe(1);
  });

  it('a failed read goes to onerror (default: console.error) and its callback never runs', async () => {
    const backend = wrapFaultyBackend(createMemoryBackend(1 * MiB), {
      decide: (call: FaultCallInfo) => (call.op === 'preadv' ? { fail: true } : undefined),
    });
    const consoleError = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      const disk = toV86Disk(await RawImage.open(backend));
      const got = collector<Uint8Array>();
      disk.get(0, SECTOR, got.fn);
      await vi.waitFor(() => expect(consoleError).toHaveBeenCalledTimes(1));
      expect(got.calls.length).toBe(0);
      expect(disk.lastError).toMatchObject({ code: 'IMAGE_IO_ERROR' });
      // load() still calls onload (v86 would hang silently otherwise) and reports the failure.
      const loaded = collector<object>();
      disk.onload = loaded.fn;
      await disk.load();
      expect(loaded.calls.length).toBe(1);
      expect(consoleError).toHaveBeenCalledTimes(2);
      await disk.close();
    } finally {
      consoleError.mockRestore();
    }
  });

  it('a failed scheduled flush goes to onerror as "flush"', async () => {
    const backend = wrapFaultyBackend(createMemoryBackend(1 * MiB), {
      decide: (call: FaultCallInfo) => (call.op === 'flush' ? { fail: true } : undefined),
    });
    const options = quietErrors();
    const disk = toV86Disk(await RawImage.open(backend), { ...options, flushIdleMs: 1 });
    disk.set(0, filled(SECTOR, 1), () => {});
    await vi.waitFor(() => expect(options.onerror).toHaveBeenCalledTimes(1));
    expect(options.onerror.mock.calls[0]![1]).toBe('flush');
    await expect(disk.close()).rejects.toMatchObject({ code: 'BACKEND_IO_ERROR' });
  });

  it('close() waits for writes in flight, closes the image, and later requests are refused', async () => {
    const image = await memoryImage('qcow2');
    const options = quietErrors();
    const disk = toV86Disk(image, options);
    const done = collector<void>();
    disk.set(0, filled(4 * KiB, 9), done.fn);
    await disk.close();
    await disk.close();
    expect(done.calls.length).toBe(1);
    await expect(image.read(0, 1)).rejects.toMatchObject({ code: 'IMAGE_CLOSED' });
    const got = collector<Uint8Array>();
    disk.get(0, SECTOR, got.fn);
    disk.set(0, filled(SECTOR, 1), done.fn);
    expect(options.onerror.mock.calls.map(([error, op]) => [(error as ImageError).code, op]))
      .toEqual([['IMAGE_CLOSED', 'read'], ['IMAGE_CLOSED', 'write']]);
    await settle();
    expect(got.calls.length).toBe(0);
    expect(done.calls.length).toBe(1);
  });
});

// ---------------------------------------------------------------------------------------------
// The real v86 booting from images through the adapter.
// ---------------------------------------------------------------------------------------------

const BIOS_PATH = process.env.SEABIOS_PATH ?? '/usr/share/seabios/bios.bin';
const FIXTURES = fileURLToPath(new URL('fixtures/v86-guest/', import.meta.url));
const DISK_BYTES = 8 * MiB;
const BOOT_TIMEOUT_MS = 45_000; // below the test timeout, so a hang reports the serial output so far

/** What the v86 tests need and is missing on this machine, if anything. */
function missingForV86(): string | undefined {
  if (!existsSync(BIOS_PATH)) return `${BIOS_PATH} not found (install Debian's seabios package)`;
  if (!hasQemuImg()) return 'qemu-img/qemu-io not found on PATH (install qemu-utils)';
  return undefined;
}

/** One 512-byte sector of the guest's pattern: 32 records of tag (8 ASCII bytes), LBA, index. */
function sectorPattern(tag: string, lba: number): Uint8Array {
  const sector = new Uint8Array(SECTOR);
  const view = new DataView(sector.buffer);
  for (let record = 0; record < SECTOR / 16; record++) {
    for (let i = 0; i < 8; i++) sector[record * 16 + i] = tag.charCodeAt(i);
    view.setUint32(record * 16 + 8, lba, true);
    view.setUint32(record * 16 + 12, record, true);
  }
  return sector;
}

/** Writes the pattern for LBAs [first, first + count) into a flat disk model. */
function putPattern(model: Uint8Array, tag: string, first: number, count: number): void {
  for (let lba = first; lba < first + count; lba++) model.set(sectorPattern(tag, lba), lba * SECTOR);
}

/** What the guest writes, applied to `model` in the guest's order. */
function applyGuestWrites(model: Uint8Array): Uint8Array {
  const out = model.slice();
  putPattern(out, 'QW-CHS-W', 5, 2);
  putPattern(out, 'QW-LBA-W', 120, 16);
  putPattern(out, 'QW-HIGH-', 12288, 4);
  putPattern(out, 'QW-OVER-', 127, 2);
  putPattern(out, 'QW-PAIRA', 200, 4);
  putPattern(out, 'QW-PAIRB', 300, 4);
  return out;
}

/** The sector the guest expects to read at LBA 4 of the drive under test. */
const SEED_LBA = 4;

/** The serial output of a passing run testing BIOS drive `drive`. */
const expectedSerial = (drive: string, bootDrive = '80') =>
  [`BOOT dl=${bootDrive}`, 'LOAD ok', `DRV ${drive}`, 'EXT ok', 'CHSR ok', 'CHSW ok', 'LBAR ok', 'LBAW ok', 'HIGH ok', 'OVER ok', 'PAIR ok', 'DONE'];

interface BootOutcome {
  serial: string[];
  /** From the V86 constructor to DONE/FAIL. */
  elapsedMs: number;
  /** The emulator's state saved after the guest finished, restored again (v86 serialised the disks). */
  stateBytes: number;
}

/** Boots v86 with the given disks until the guest prints DONE or FAIL; destroys the emulator. */
async function bootV86(disks: { hda: unknown; hdb?: unknown; fda?: unknown }): Promise<BootOutcome> {
  const { V86 } = await import('v86');
  const v86Build = dirname(createRequire(import.meta.url).resolve('v86'));
  const started = performance.now();
  const emulator = new V86({
    wasm_path: join(v86Build, 'v86.wasm'),
    bios: { buffer: new Uint8Array(readFileSync(BIOS_PATH)).buffer },
    memory_size: 32 * MiB,
    vga_memory_size: 2 * MiB,
    autostart: true,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
    ...disks,
  } as ConstructorParameters<typeof V86>[0]);
  let serial = '';
  try {
    const finished = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), BOOT_TIMEOUT_MS);
      emulator.add_listener('serial0-output-byte', (byte: number) => {
        serial += String.fromCharCode(byte);
        if (/DONE\r\n|FAIL[^\n]*\n/.test(serial)) {
          clearTimeout(timer);
          resolve(true);
        }
      });
    });
    const elapsedMs = performance.now() - started;
    if (!finished) throw new Error(`v86 guest did not finish within ${BOOT_TIMEOUT_MS} ms; serial so far: ${JSON.stringify(serial)}`);
    const state = await emulator.save_state();
    await emulator.restore_state(state);
    return { serial: serial.trim().split('\r\n'), elapsedMs, stateBytes: state.byteLength };
  } finally {
    await emulator.destroy();
  }
}

/** The first differing sector of two flat disks, for readable failures; undefined when equal. */
function firstDifference(actual: Uint8Array, expected: Uint8Array): string | undefined {
  if (actual.byteLength !== expected.byteLength) return `length ${actual.byteLength} != ${expected.byteLength}`;
  if (Buffer.compare(actual, expected) === 0) return undefined;
  for (let lba = 0; lba * SECTOR < actual.byteLength; lba++) {
    const a = actual.subarray(lba * SECTOR, (lba + 1) * SECTOR);
    if (Buffer.compare(a, expected.subarray(lba * SECTOR, (lba + 1) * SECTOR)) !== 0) {
      return `LBA ${lba} differs; starts with ${JSON.stringify(Buffer.from(a.subarray(0, 16)).toString('latin1'))}`;
    }
  }
  return 'differs';
}

/** The flat content of the backing file the overlay cases boot from. */
function backingModel(withBootProgram: Uint8Array | undefined): Uint8Array {
  const model = new Uint8Array(DISK_BYTES);
  putPattern(model, 'QW-BACK-', 0, 512); // 256 KiB over the first four 64 KiB clusters
  if (withBootProgram) model.set(withBootProgram, 0);
  model.set(sectorPattern('QW-SEED-', SEED_LBA), SEED_LBA * SECTOR);
  return model;
}

describeRequiring('v86 boots SeaBIOS from qcow2 images through toV86Disk', missingForV86(), () => {
  const guestHda = new Uint8Array(readFileSync(join(FIXTURES, 'guest-hda.bin')));
  const guestHdb = new Uint8Array(readFileSync(join(FIXTURES, 'guest-hdb.bin')));
  let dir = '';

  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'qcow2-v86-')); });
  afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

  /** A plain v86 boot disk holding the hdb guest (BIOS boots it as drive 0x80). */
  const bootDisk = () => {
    const bytes = new Uint8Array(1 * MiB);
    bytes.set(guestHdb, 0);
    return { buffer: bytes.buffer };
  };

  /**
   * Boots with `image` (as hda or hdb, through the adapter in its real asynchronous mode over a
   * Node file), checks the guest's report, closes the image, and checks the file with qemu-img
   * and the library against `expected`.
   */
  async function bootAndVerify(path: string, image: BlockImage, role: 'hda' | 'hdb', expected: Uint8Array,
    bootFrom: { fda: unknown } | undefined = undefined): Promise<void> {
    const options = quietErrors();
    const disk = toV86Disk(image, options);
    const setState = vi.spyOn(disk, 'set_state');
    const disks = role === 'hda' ? { hda: disk } : { hda: bootDisk(), hdb: disk, ...bootFrom };
    const outcome = await bootV86(disks);
    console.log(`v86 ${role} ${path.slice(dir.length + 1)}: guest finished in ${outcome.elapsedMs.toFixed(0)} ms, state ${outcome.stateBytes} bytes`);
    expect(outcome.serial).toEqual(expectedSerial(role === 'hda' ? '80' : '81', bootFrom ? '00' : '80'));
    expect(setState).toHaveBeenCalledWith(disk.get_state());
    expect(image.stats().guestWriteRequests).toBeGreaterThan(0);
    await disk.close();
    expect(options.onerror).not.toHaveBeenCalled();
    expect(disk.lastError).toBeUndefined();

    const check = qemuCheck(path);
    expect(check.exitCode).toBe(0);
    expect(check['check-errors']).toBe(0);
    expect(check.corruptions ?? 0).toBe(0);
    expect(check.leaks ?? 0).toBe(0);

    expect(firstDifference(convertToRaw(path), expected)).toBeUndefined();
    const reopened = await openImageFile(path, { readOnly: true });
    try {
      expect(firstDifference(await reopened.read(0, DISK_BYTES), expected)).toBeUndefined();
      expect(await reopened.read(127 * SECTOR, SECTOR)).toEqual(sectorPattern('QW-OVER-', 127));
    } finally {
      await reopened.close();
    }
  }

  it('fresh qcow2 as hda (the boot disk under test)', async () => {
    const path = join(dir, 'fresh-hda.qcow2');
    const image = await createImageFile(path, { virtualSize: DISK_BYTES });
    await image.write(0, guestHda);
    await image.write(SEED_LBA * SECTOR, sectorPattern('QW-SEED-', SEED_LBA));
    const model = new Uint8Array(DISK_BYTES);
    model.set(guestHda, 0);
    model.set(sectorPattern('QW-SEED-', SEED_LBA), SEED_LBA * SECTOR);
    await bootAndVerify(path, image, 'hda', applyGuestWrites(model));
  });

  it('fresh qcow2 (4 KiB clusters) as hdb, booting from a plain hda', async () => {
    const path = join(dir, 'fresh-hdb.qcow2');
    const image = await createImageFile(path, { virtualSize: DISK_BYTES, clusterSize: 4 * KiB });
    await image.write(SEED_LBA * SECTOR, sectorPattern('QW-SEED-', SEED_LBA));
    const model = new Uint8Array(DISK_BYTES);
    model.set(sectorPattern('QW-SEED-', SEED_LBA), SEED_LBA * SECTOR);
    await bootAndVerify(path, image, 'hdb', applyGuestWrites(model));
  });

  it('qcow2 overlay over a raw backing file holding the boot program, as hda', async () => {
    const backing = backingModel(guestHda);
    writeFileSync(join(dir, 'base-hda.raw'), backing);
    const path = join(dir, 'overlay-hda.qcow2');
    const image = await createImageFile(path, { virtualSize: DISK_BYTES, backingFile: 'base-hda.raw', backingFormat: 'raw' });
    await bootAndVerify(path, image, 'hda', applyGuestWrites(backing));
    expect(firstDifference(new Uint8Array(readFileSync(join(dir, 'base-hda.raw'))), backing)).toBeUndefined();
  });

  it('qcow2 overlay over a qcow2 backing file (made by qemu-img), as hdb', async () => {
    const backing = backingModel(undefined);
    writeFileSync(join(dir, 'base-hdb.raw'), backing);
    const converted = qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', 'base-hdb.raw', 'base-hdb.qcow2'], dir);
    expect(converted.code, converted.stderr).toBe(0);
    const path = join(dir, 'overlay-hdb.qcow2');
    const image = await createImageFile(path, { virtualSize: DISK_BYTES, backingFile: 'base-hdb.qcow2', backingFormat: 'qcow2' });
    await bootAndVerify(path, image, 'hdb', applyGuestWrites(backing));
    expect(firstDifference(convertToRaw(join(dir, 'base-hdb.qcow2')), backing)).toBeUndefined();
  });

  it('raw floppy image through the adapter as fda (boot, DMA reads), fresh qcow2 as hdb', async () => {
    const floppyPath = join(dir, 'boot.img');
    const floppy = new Uint8Array(1474560);
    floppy.set(guestHdb, 0);
    writeFileSync(floppyPath, floppy);
    const floppyImage = await openImageFile(floppyPath);
    const floppyErrors = quietErrors();
    const fda = toV86Disk(floppyImage, floppyErrors);
    const path = join(dir, 'fresh-hdb-fda.qcow2');
    const image = await createImageFile(path, { virtualSize: DISK_BYTES });
    await image.write(SEED_LBA * SECTOR, sectorPattern('QW-SEED-', SEED_LBA));
    const model = new Uint8Array(DISK_BYTES);
    model.set(sectorPattern('QW-SEED-', SEED_LBA), SEED_LBA * SECTOR);
    await bootAndVerify(path, image, 'hdb', applyGuestWrites(model), { fda });
    expect(floppyImage.stats().guestReadRequests).toBeGreaterThan(0);
    await fda.close();
    expect(floppyErrors.onerror).not.toHaveBeenCalled();
  });
});
