// SPDX-License-Identifier: MIT
// Qcow2Image: opens qcow2 images (v2 and v3, every cluster size, extended L2, compressed zlib and
// zstd clusters, zero clusters, backing chains of any depth through openBacking, external data
// files through openDataFile) and reads them through the wasm mapping core. This build opens
// qcow2 read-only: the write path (allocation, refcounts, COW) is the next step of the engine.

import type { Backend } from './backend.js';
import type { BlockImage, ImageStats, OpenOptions, WriteRequest } from './image.js';
import { checkGuestRange, emptyStats } from './image.js';
import { ImageError } from './errors.js';
import { instantiateCore } from './wasm.js';
import { parseQcow2Header, qcow2HeaderBytesNeeded, type Qcow2Header } from './qcow2-header.js';
import { Qcow2Mapper, RunKind, type MappedRun } from './qcow2-mapping.js';
import { inflateCluster } from './decompress.js';
import { RawImage } from './raw-image.js';
import { allSettledOrThrow } from './settle.js';
import { ioFailure } from './multiwrite.js';

/** Deepest backing chain opened; deeper chains are refused as a probable loop. */
const MAX_BACKING_DEPTH = 64;
const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb];

/** What open() threads through a backing chain to detect loops. */
interface ChainContext { depth: number; names: string[] }

/** A qcow2 image. Open with Qcow2Image.open. */
export class Qcow2Image implements BlockImage {
  readonly virtualSize: number;
  /** Always true in this build: qcow2 writing is not implemented yet. */
  readonly readOnly = true;
  /** The parsed header (read-only view for tools such as `info`). */
  readonly header: Qcow2Header;
  /** The backing image, if the header names one. */
  readonly backing: BlockImage | undefined;
  private readonly backend: Backend;
  private readonly dataBackend: Backend;
  private readonly mapper: Qcow2Mapper;
  private readonly counters = emptyStats();
  private closing: Promise<void> | undefined;
  private lastInflated: { hostOffset: number; cluster: Uint8Array } | undefined;

  private constructor(backend: Backend, dataBackend: Backend, header: Qcow2Header, mapper: Qcow2Mapper, backing: BlockImage | undefined) {
    this.backend = backend;
    this.dataBackend = dataBackend;
    this.header = header;
    this.mapper = mapper;
    this.backing = backing;
    this.virtualSize = header.virtualSize;
  }

  /**
   * Opens the qcow2 image in `backend`. Backing files and external data files are opened only
   * through `options.openBacking` / `options.openDataFile` (the names come from the image and are
   * untrusted); an image that needs one without the callback is refused with INVALID_ARGUMENT.
   * Errors: QCOW2_CORRUPT, QCOW2_UNSUPPORTED_FEATURE, IMAGE_FORMAT_UNKNOWN (not qcow2), and
   * backend errors. `options.cacheBytes` sizes the L2 cache (default 1 MiB).
   */
  static open(backend: Backend, options: OpenOptions = {}): Promise<Qcow2Image> {
    return Qcow2Image.openInChain(backend, options, { depth: 0, names: [] });
  }

  /** Opens one link of a backing chain (internal: open() starts a chain). */
  static async openInChain(backend: Backend, options: OpenOptions, chain: ChainContext): Promise<Qcow2Image> {
    const probe = await instantiateCore();
    const fileSize = await backend.getSize();
    const headerBytes = new Uint8Array(qcow2HeaderBytesNeeded(probe, fileSize));
    await backend.preadv(0, [headerBytes]);
    const header = parseQcow2Header(probe, headerBytes, fileSize);
    const mapper = await Qcow2Mapper.create(probe, header, backend, options.cacheBytes);
    const opened: Backend[] = [];
    try {
      const dataBackend = header.flags.externalDataFile ? await openDataFile(header, options) : backend;
      if (dataBackend !== backend) opened.push(dataBackend);
      const backing = header.backingFile === undefined ? undefined : await openBackingImage(header, options, chain);
      return new Qcow2Image(backend, dataBackend, header, mapper, backing);
    } catch (error) {
      await Promise.allSettled(opened.map((b) => b.close()));
      throw error;
    }
  }

  /** Reads `length` guest bytes at `offset` into a new buffer. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    checkGuestRange(offset, length, this.virtualSize);
    const target = new Uint8Array(length);
    await this.readInto(offset, target);
    return target;
  }

  /** Reads guest bytes at `offset` into `target`: host data, zeros, backing data, inflated clusters. */
  async readInto(offset: number, target: Uint8Array): Promise<void> {
    if (this.closing) throw new ImageError('IMAGE_CLOSED', 'the image is closed');
    if (!(target instanceof Uint8Array)) throw new ImageError('INVALID_ARGUMENT', 'readInto target must be a Uint8Array');
    checkGuestRange(offset, target.byteLength, this.virtualSize);
    this.counters.guestReadRequests++;
    this.counters.guestReadBytes += target.byteLength;
    const end = offset + target.byteLength;
    let position = offset;
    while (position < end) {
      const runs = await this.mapper.map(position, end - position, this.backend);
      await allSettledOrThrow(runs.map((run) => this.readRun(run, target.subarray(run.guestOffset - offset, run.guestOffset - offset + run.length))));
      const last = runs[runs.length - 1];
      position = last.guestOffset + last.length;
    }
  }

  private async readRun(run: MappedRun, target: Uint8Array): Promise<void> {
    switch (run.kind) {
      case RunKind.ZERO:
        target.fill(0);
        return;
      case RunKind.UNALLOCATED:
        return this.readBacking(run.guestOffset, target);
      case RunKind.DATA:
        this.counters.hostReadCalls++;
        this.counters.hostReadBytes += target.byteLength;
        return this.dataBackend.preadv(run.hostOffset, [target]).catch((error: unknown) => { throw ioFailure('read', error); });
      case RunKind.COMPRESSED: {
        const cluster = await this.inflated(run);
        const inCluster = run.guestOffset % this.header.clusterSize;
        target.set(cluster.subarray(inCluster, inCluster + target.byteLength));
        return;
      }
    }
  }

  private async readBacking(guestOffset: number, target: Uint8Array): Promise<void> {
    const backing = this.backing;
    const inBacking = backing ? Math.max(0, Math.min(target.byteLength, backing.virtualSize - guestOffset)) : 0;
    target.fill(0, inBacking);
    if (inBacking > 0) await backing!.readInto(guestOffset, target.subarray(0, inBacking));
  }

  private async inflated(run: MappedRun): Promise<Uint8Array> {
    const cached = this.lastInflated;
    if (cached && cached.hostOffset === run.hostOffset) return cached.cluster;
    const compressed = new Uint8Array(run.compressedBytes);
    this.counters.hostReadCalls++;
    this.counters.hostReadBytes += compressed.byteLength;
    await this.backend.preadv(run.hostOffset, [compressed]).catch((error: unknown) => { throw ioFailure('read', error); });
    const cluster = new Uint8Array(this.header.clusterSize);
    inflateCluster(this.header.compressionType, compressed, cluster, run.hostOffset);
    this.lastInflated = { hostOffset: run.hostOffset, cluster };
    return cluster;
  }

  /** Refused: this build opens qcow2 read-only. */
  write(_offset: number, _data: Uint8Array): Promise<void> {
    return Promise.reject(this.readOnlyError());
  }

  /** Refused: this build opens qcow2 read-only (one rejected promise per request). */
  multiwrite(requests: readonly WriteRequest[]): Promise<void>[] {
    return requests.map(() => Promise.reject(this.readOnlyError()));
  }

  /** Refused: this build opens qcow2 read-only. */
  writeZeroes(_offset: number, _length: number): Promise<void> {
    return Promise.reject(this.readOnlyError());
  }

  /** Refused: this build opens qcow2 read-only. */
  discard(_offset: number, _length: number): Promise<void> {
    return Promise.reject(this.readOnlyError());
  }

  /** Nothing to make durable on a read-only image; resolves once open. */
  async flush(): Promise<void> {
    if (this.closing) throw new ImageError('IMAGE_CLOSED', 'the image is closed');
  }

  /** Closes the image, its data file and its backing chain; idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const closes: Promise<void>[] = [this.backend.close()];
      if (this.dataBackend !== this.backend) closes.push(this.dataBackend.close());
      if (this.backing) closes.push(this.backing.close());
      await allSettledOrThrow(closes);
    })();
    return this.closing;
  }

  /** Counters since open (a copy). */
  stats(): ImageStats {
    return { ...this.counters };
  }

  private readOnlyError(): ImageError {
    if (this.closing) return new ImageError('IMAGE_CLOSED', 'the image is closed');
    return new ImageError('IMAGE_READ_ONLY', 'qcow2 images open read-only in this version (the qcow2 write path is not implemented yet)');
  }
}

async function openDataFile(header: Qcow2Header, options: OpenOptions): Promise<Backend> {
  if (header.dataFile === undefined) {
    throw new ImageError('INVALID_ARGUMENT', 'the image uses an external data file but does not name it');
  }
  if (!options.openDataFile) {
    throw new ImageError('INVALID_ARGUMENT', `the image's data is in the external file '${header.dataFile}': pass openDataFile to open it`);
  }
  return options.openDataFile(header.dataFile);
}

async function openBackingImage(header: Qcow2Header, options: OpenOptions, chain: ChainContext): Promise<BlockImage> {
  const name = header.backingFile!;
  if (!options.openBacking) {
    throw new ImageError('INVALID_ARGUMENT', `the image has the backing file '${name}': pass openBacking to open it`);
  }
  if (chain.depth >= MAX_BACKING_DEPTH || chain.names.includes(name)) {
    throw new ImageError('QCOW2_CORRUPT', `backing chain loop or too deep at '${name}' (chain: ${[...chain.names, name].join(' -> ')})`);
  }
  const backend = await options.openBacking(name, header.backingFormat);
  try {
    const format = header.backingFormat ?? (await probeFormat(backend));
    const nested: OpenOptions = { ...options, readOnly: true };
    if (format === 'raw') return await RawImage.open(backend, nested);
    if (format === 'qcow2') return await Qcow2Image.openInChain(backend, nested, { depth: chain.depth + 1, names: [...chain.names, name] });
    throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', `backing file format '${format}' is not supported (qcow2 and raw are)`);
  } catch (error) {
    await backend.close();
    throw error;
  }
}

/** 'qcow2' when the backend starts with the qcow2 magic, otherwise 'raw'. */
export async function probeFormat(backend: Backend): Promise<'qcow2' | 'raw'> {
  const head = new Uint8Array(4);
  await backend.preadv(0, [head]);
  return QCOW2_MAGIC.every((byte, i) => head[i] === byte) ? 'qcow2' : 'raw';
}
