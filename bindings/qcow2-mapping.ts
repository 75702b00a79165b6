// SPDX-License-Identifier: MIT
// TypeScript face of the wasm mapping core: configures an image's geometry, loads its L1 table
// and L2 slices into linear memory (one slice load at a time), and turns guest ranges into runs.

import type { Backend } from './backend.js';
import type { CoreInstance } from './wasm.js';
import { ImageError } from './errors.js';
import { instantiateCore } from './wasm.js';
import type { Qcow2Header } from './qcow2-header.js';

/** What a run of guest bytes reads as (the values of assembly/mapping.ts RunKind). */
export const RunKind = { UNALLOCATED: 0, ZERO: 1, DATA: 2, COMPRESSED: 3 } as const;
export type RunKind = (typeof RunKind)[keyof typeof RunKind];

/** One mapped run: guest bytes [guestOffset, guestOffset + length). */
export interface MappedRun {
  kind: RunKind;
  guestOffset: number;
  length: number;
  /** DATA: host offset of the first byte; COMPRESSED: host offset of the compressed data. */
  hostOffset: number;
  /** COMPRESSED: bytes to read at hostOffset. */
  compressedBytes: number;
}

interface MappingExports {
  requiredMemoryBytes(clusterBits: number, l1Entries: number, cacheBytes: number): number;
  configureImage(clusterBits: number, extendedL2: number, externalData: number, virtualSize: number, l1Entries: number, cacheBytes: number): number;
  regionOffset(region: number): number;
  regionBytes(region: number): number;
  mapRange(guestOffset: number, length: number): number;
  mappedBytes(guestOffset: number): number;
  needHostOffset(): number;
  prepareSliceLoad(hostOffset: number): number;
  needBytes(): number;
  commitSliceLoad(): number;
  corruptReason(): number;
  corruptGuestOffset(): number;
}

const CORRUPTION_NAMES = [
  'none', 'reserved bits set in an L1 entry', 'L2 table offset not cluster-aligned', 'reserved bits set in an L2 entry',
  'data cluster offset not cluster-aligned', 'compressed cluster offset too large',
  'subcluster both allocated and zero', 'subcluster allocated in an unallocated cluster', 'zero flag set in an extended L2 entry',
];

/** Default L2 cache size: 1 MiB, which maps 8 GiB of guest space with 64 KiB clusters. */
export const DEFAULT_CACHE_BYTES = 1 << 20;

/** The mapping half of one qcow2 image's wasm core. */
export class Qcow2Mapper {
  private readonly x: MappingExports;
  private readonly runs: Float64Array;
  private readonly constants: { needTable: number; corrupt: number };
  private sliceLoad: Promise<void> | undefined;

  private constructor(private readonly core: CoreInstance) {
    this.x = core.exports as unknown as MappingExports;
    const globals = core.exports as unknown as Record<string, WebAssembly.Global>;
    const regionRuns = globals.REGION_RUNS.value as number;
    const runStride = globals.RUN_STRIDE.value as number;
    if (runStride !== 40) throw new ImageError('WASM_INTERNAL', 'wasm core run stride differs from what these bindings read');
    this.runs = new Float64Array(core.memory.buffer, this.x.regionOffset(regionRuns) >>> 0, (this.x.regionBytes(regionRuns) >>> 0) / 8);
    this.constants = { needTable: globals.STATUS_NEED_TABLE.value as number, corrupt: globals.STATUS_CORRUPT.value as number };
  }

  /**
   * Creates the core for an image with `header` and reads its L1 table from `backend`.
   * `cacheBytes` sizes the L2 slice cache (default DEFAULT_CACHE_BYTES).
   */
  static async create(probe: CoreInstance, header: Qcow2Header, backend: Backend, cacheBytes = DEFAULT_CACHE_BYTES): Promise<Qcow2Mapper> {
    if (!Number.isFinite(cacheBytes) || cacheBytes < 0) throw new ImageError('INVALID_ARGUMENT', `cacheBytes ${cacheBytes} is not a byte count`);
    const bytes = (probe.exports as unknown as MappingExports).requiredMemoryBytes(header.clusterBits, header.l1Size, cacheBytes);
    if (bytes < 0) throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', `an L1 table of ${header.l1Size} entries is too large`);
    const core = await instantiateCore(Math.ceil(bytes / 65536));
    const mapper = new Qcow2Mapper(core);
    const status = mapper.x.configureImage(header.clusterBits, header.flags.extendedL2 ? 1 : 0, header.flags.externalDataFile ? 1 : 0,
      header.virtualSize, header.l1Size, cacheBytes);
    if (status !== 0) throw new ImageError('WASM_INTERNAL', `configureImage failed with status ${status}`);
    const globals = core.exports as unknown as Record<string, WebAssembly.Global>;
    const l1Region = globals.REGION_L1_TABLE.value as number;
    const l1Bytes = header.l1Size * 8;
    if (l1Bytes > 0) {
      await backend.preadv(header.l1TableOffset, [new Uint8Array(core.memory.buffer, mapper.x.regionOffset(l1Region) >>> 0, l1Bytes)]);
    }
    return mapper;
  }

  /**
   * Maps guest [guestOffset, guestOffset + length) (non-empty, inside the image), loading L2
   * slices from `tables` as needed. Returns runs tiling a prefix of the range (at least one run);
   * call again for the rest. Throws QCOW2_CORRUPT for invalid entries.
   */
  async map(guestOffset: number, length: number, tables: Backend): Promise<MappedRun[]> {
    for (;;) {
      const count = this.x.mapRange(guestOffset, length);
      if (count > 0) return this.readRuns(count);
      if (-count === this.constants.needTable) {
        const hostOffset = this.x.needHostOffset();
        if (this.sliceLoad) await this.sliceLoad;
        else {
          this.sliceLoad = this.loadSlice(hostOffset, tables).finally(() => { this.sliceLoad = undefined; });
          await this.sliceLoad;
        }
        continue;
      }
      if (-count === this.constants.corrupt) {
        const reason = CORRUPTION_NAMES[this.x.corruptReason()] ?? 'unknown';
        throw new ImageError('QCOW2_CORRUPT', `qcow2 mapping of guest offset ${this.x.corruptGuestOffset()} is invalid: ${reason}`);
      }
      throw new ImageError('WASM_INTERNAL', `mapRange(${guestOffset}, ${length}) failed with status ${-count}`);
    }
  }

  private readRuns(count: number): MappedRun[] {
    const runs: MappedRun[] = new Array(count);
    const r = this.runs;
    for (let i = 0; i < count; i++) {
      const at = 5 * i;
      runs[i] = { kind: r[at] as RunKind, guestOffset: r[at + 1], length: r[at + 2], hostOffset: r[at + 3], compressedBytes: r[at + 4] };
    }
    return runs;
  }

  private async loadSlice(hostOffset: number, tables: Backend): Promise<void> {
    const address = this.x.prepareSliceLoad(hostOffset) >>> 0;
    const bytes = this.x.needBytes() >>> 0;
    await tables.preadv(hostOffset, [new Uint8Array(this.core.memory.buffer, address, bytes)]);
    this.x.commitSliceLoad();
  }
}
