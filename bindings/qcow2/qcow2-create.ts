// SPDX-License-Identifier: MIT
// Creates qcow2 images: checks CreateOptions, has the wasm core (assembly/create.ts) plan the
// layout and render the metadata, and writes it to a backend. It never reads an image: opening
// the result is Qcow2Image.open's job, and backing files are named, never opened.

import type { Backend } from '../backends/backend.js';
import type { CreateOptions } from '../dispatch/image.js';
import { BackendError, ImageError, exactNumber } from '../base/errors.js';
import { byteRegion, enumNames, instantiateCore, CreateError, CreateFlag, Region, Status } from '../core/wasm.js';

/** What createQcow2 made. */
export interface Qcow2CreateResult {
  /** Bytes of the new file. */
  fileBytes: number;
  clusterSize: number;
  /** Host clusters allocated (all with refcount 1); qemu-img check's image end is this times clusterSize. */
  clusterCount: number;
}

/** Defaults of CreateOptions, as qemu-img 7.2 has them. */
export const CREATE_DEFAULTS = {
  clusterSize: 65536,
  compat: '1.1',
  refcountBits: 16,
  compressionType: 'zlib',
  preallocation: 'off',
} as const;

// One message per CreateError member (assembly/create.ts), worded as qemu-img 7.2 words the same
// refusal where it has one, followed by the refused value where qemu-img leaves it out.
const MESSAGES = {
  ARGUMENTS_INVALID: () => 'invalid arguments to the wasm create planner',
  CLUSTER_SIZE_INVALID: () => `Cluster size must be a power of two between 512 and 2048k`,
  REFCOUNT_BITS_INVALID: () => `Refcount width must be a power of two and may not exceed 64 bits`,
  V2_REFCOUNT_BITS: () => 'Different refcount widths than 16 bits require compatibility level 1.1 or above',
  V2_EXTENDED_L2: () => 'Extended L2 entries are only supported with compatibility level 1.1 and above',
  V2_LAZY_REFCOUNTS: () => 'Lazy refcounts only supported with compatibility level 1.1 and above',
  V2_COMPRESSION_TYPE: () =>
    'Non-zlib compression type is only supported with compatibility level 1.1 and above',
  EXTENDED_L2_CLUSTER_TOO_SMALL: (d: number) =>
    `Extended L2 entries are only supported with cluster sizes of at least 16384 bytes, not ${d}`,
  BACKING_FORMAT_WITHOUT_FILE: () => 'Backing format cannot be used without backing file',
  BACKING_WITH_PREALLOCATION: () => 'Backing file and preallocation can only be used at the same time if extended_l2 is on',
  BACKING_NAME_TOO_LONG: (d: number) => `Backing file name too long: ${d} bytes (at most 1023)`,
  BACKING_FORMAT_TOO_LONG: (d: number) => `Backing format name too long: ${d} bytes (at most 15)`,
  VIRTUAL_SIZE_INVALID: (d: number) => `Invalid virtual size ${exactNumber(d)}: must be an integer number of bytes from 0 to 2^53`,
  VIRTUAL_SIZE_UNALIGNED: (d: number) =>
    `Virtual size ${d} is not a multiple of 512 bytes (qemu-img would round it up to ${Math.ceil(d / 512) * 512})`,
  L1_TOO_LARGE: () => "The image size is too large for file format 'qcow2' (try using a larger cluster size)",
  REFCOUNT_TABLE_TOO_LARGE: () =>
    "The image size is too large for file format 'qcow2' (its refcount table would exceed 8 MiB; try using a larger cluster size)",
  HEADER_EXCEEDS_CLUSTER: (d: number) => `The header, its extensions and the backing file name need ${d} bytes, more than one cluster`,
} satisfies Record<Exclude<keyof typeof CreateError, 'NONE'>, (detail: number) => string>;

/** Stable names of the create checks (assembly/create.ts, enum CreateError). */
export type CreateErrorReason = keyof typeof MESSAGES;

/** Options createQcow2 refused: `reason` names the check; the code is always INVALID_ARGUMENT. */
export class Qcow2CreateError extends ImageError {
  /** Which check failed. */
  readonly reason: CreateErrorReason | 'OPTION_TYPE';

  constructor(reason: CreateErrorReason | 'OPTION_TYPE', message: string) {
    super('INVALID_ARGUMENT', message);
    this.reason = reason;
  }
}

const optionError = (message: string) => new Qcow2CreateError('OPTION_TYPE', message);

function checkOneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw optionError(`${name} must be ${allowed.map((a) => `'${a}'`).join(' or ')}, not ${JSON.stringify(value)}`);
  }
  return value as T;
}

function checkBoolean(name: string, value: unknown): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw optionError(`${name} must be a boolean, not ${JSON.stringify(value)}`);
  return value;
}

function checkNumber(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw optionError(`${name} must be a number, not ${String(value)}`);
  return value;
}

/** CreateOptions with defaults applied and JavaScript types checked (format rules are wasm's). */
interface ResolvedOptions {
  virtualSize: number;
  clusterSize: number;
  version: 2 | 3;
  refcountBits: number;
  flags: number;
  backingName: Uint8Array;
  backingFormat: Uint8Array;
}

const utf8 = new TextEncoder();

function resolveOptions(options: CreateOptions): ResolvedOptions {
  if (options === null || typeof options !== 'object') throw optionError('create options must be an object');
  const virtualSize = options.virtualSize;
  if (typeof virtualSize !== 'number') throw optionError(`virtualSize must be a number of bytes, not ${String(virtualSize)}`);
  const compat = checkOneOf('compat', options.compat, ['0.10', '1.1'] as const) ?? CREATE_DEFAULTS.compat;
  const compressionType = checkOneOf('compressionType', options.compressionType, ['zlib', 'zstd'] as const);
  const preallocation = checkOneOf('preallocation', options.preallocation, ['off', 'metadata'] as const);
  checkOneOf('backingFormat', options.backingFormat, ['qcow2', 'raw'] as const);
  if (options.backingFile !== undefined && typeof options.backingFile !== 'string') {
    throw optionError(`backingFile must be a string, not ${String(options.backingFile)}`);
  }
  let flags = 0;
  if (checkBoolean('extendedL2', options.extendedL2)) flags |= CreateFlag.EXTENDED_L2;
  if (checkBoolean('lazyRefcounts', options.lazyRefcounts)) flags |= CreateFlag.LAZY_REFCOUNTS;
  if (compressionType === 'zstd') flags |= CreateFlag.ZSTD;
  if (preallocation === 'metadata') flags |= CreateFlag.PREALLOCATE_METADATA;
  // Like QEMU, an empty backing file name means none.
  return {
    virtualSize,
    clusterSize: checkNumber('clusterSize', options.clusterSize, CREATE_DEFAULTS.clusterSize),
    version: compat === '0.10' ? 2 : 3,
    refcountBits: checkNumber('refcountBits', options.refcountBits, CREATE_DEFAULTS.refcountBits),
    flags,
    backingName: utf8.encode(options.backingFile ?? ''),
    backingFormat: utf8.encode(options.backingFormat ?? ''),
  };
}

const CREATE_REASONS = enumNames(CreateError);

/** Most bytes one backend write carries while writing the metadata. */
const WRITE_BATCH_BYTES = 1 << 20;
/** Most metadata writes in flight at once. */
const WRITES_IN_FLIGHT = 8;

/**
 * Writes a new, empty qcow2 image into `backend` (truncating whatever it held; a non-empty
 * backend without truncate is refused), laid out as qemu-img 7.2 lays out a fresh image, then
 * flushes. Guest data reads as zeros, or as the backing file's data.
 *
 * Options (CreateOptions; other keys are ignored): `virtualSize` in bytes, a multiple of 512 (unlike
 * qemu-img, which rounds up, this refuses other sizes); `clusterSize` a power of two, 512 B to
 * 2 MiB (default 65536); `compat` '1.1' (version 3, default) or '0.10' (version 2: no extended
 * L2, lazy refcounts, zstd, or refcount width other than 16); `refcountBits` a power of two, 1
 * to 64 (default 16); `extendedL2` (clusters of at least 16 KiB); `lazyRefcounts`;
 * `compressionType` 'zlib' (default) or 'zstd'; `backingFile` (stored as given, never opened)
 * and `backingFormat` (only with a backing file); `preallocation` 'off' (default) or 'metadata'
 * (every L2 table and data cluster allocated, as qemu-img does; with a backing file only together
 * with extendedL2).
 *
 * Errors: Qcow2CreateError (INVALID_ARGUMENT) naming the refused option, with qemu-img's wording;
 * BACKEND_READ_ONLY for a read-only backend; backend errors from the writes.
 */
export async function createQcow2(backend: Backend, options: CreateOptions): Promise<Qcow2CreateResult> {
  const core = await instantiateCore();
  const x = core.exports;
  const o = resolveOptions(options);
  const region = byteRegion(core, Region.HEADER);
  if (o.backingName.byteLength > 1023) throw new Qcow2CreateError('BACKING_NAME_TOO_LONG', MESSAGES.BACKING_NAME_TOO_LONG(o.backingName.byteLength));
  if (o.backingFormat.byteLength > 15) {
    throw new Qcow2CreateError('BACKING_FORMAT_TOO_LONG', MESSAGES.BACKING_FORMAT_TOO_LONG(o.backingFormat.byteLength));
  }
  region.set(o.backingName, 0);
  region.set(o.backingFormat, o.backingName.byteLength);
  const status = x.planCreate(o.virtualSize, o.clusterSize, o.version, o.refcountBits, o.flags,
    o.backingName.byteLength, o.backingFormat.byteLength);
  if (status !== Status.OK) {
    const reason = CREATE_REASONS.get(x.createErrorReason());
    if (reason === undefined || reason === 'NONE') throw new ImageError('WASM_INTERNAL', `planCreate failed with an unknown reason ${x.createErrorReason()}`);
    throw new Qcow2CreateError(reason, MESSAGES[reason](x.createErrorDetail()));
  }

  if (!backend.capabilities.writable) throw new BackendError('BACKEND_READ_ONLY', 'cannot create an image on a read-only backend');
  const existingBytes = await backend.getSize();
  if (existingBytes > 0) {
    if (!backend.capabilities.truncate || !backend.truncate) {
      throw new ImageError('INVALID_ARGUMENT', `the backend already holds ${existingBytes} bytes and cannot be truncated; create needs an empty backend`);
    }
    await backend.truncate(0);
  }

  // Render each extent in region-sized pieces (copied out, since the region is reused) and write
  // them in batches, a few at a time.
  const inFlight = new Set<Promise<void>>();
  const issue = async (position: number, buffers: Uint8Array[]): Promise<void> => {
    while (inFlight.size >= WRITES_IN_FLIGHT) await Promise.race(inFlight);
    const write = backend.pwritev(position, buffers).finally(() => inFlight.delete(write));
    write.catch(() => {}); // handled below, by Promise.race or Promise.all
    inFlight.add(write);
  };
  let writtenEnd = 0;
  try {
    const extentCount = x.createExtentCount();
    for (let index = 0; index < extentCount; index++) {
      const start = x.createExtentStart(index);
      const end = start + x.createExtentBytes(index);
      let batchStart = start;
      let batch: Uint8Array[] = [];
      let batchBytes = 0;
      for (let position = start; position < end;) {
        const bytes = Math.min(region.byteLength, end - position);
        if (x.renderCreate(position, bytes) !== 0) throw new ImageError('WASM_INTERNAL', `renderCreate(${position}, ${bytes}) failed`);
        batch.push(region.slice(0, bytes));
        batchBytes += bytes;
        position += bytes;
        if (batchBytes >= WRITE_BATCH_BYTES || position >= end) {
          await issue(batchStart, batch);
          batchStart = position;
          batch = [];
          batchBytes = 0;
        }
      }
      if (end > start) writtenEnd = Math.max(writtenEnd, end);
    }
    await Promise.all(inFlight);
  } catch (error) {
    await Promise.allSettled(inFlight);
    throw error;
  }

  // Preallocated data clusters at the end of the file are never written: extend the file to
  // cover them (sparse where the platform allows), so they read as zeros from the image.
  const fileBytes = x.createFileBytes();
  if (writtenEnd < fileBytes) {
    if (backend.capabilities.truncate && backend.truncate) await backend.truncate(fileBytes);
    else {
      const tail = Math.min(fileBytes - writtenEnd, 4096);
      await backend.pwritev(fileBytes - tail, [new Uint8Array(tail)]);
    }
  }
  await backend.flush();
  return { fileBytes, clusterSize: o.clusterSize, clusterCount: x.createClusterCount() };
}
