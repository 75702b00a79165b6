// SPDX-License-Identifier: MIT
// The layout of a qcow2 image written strictly front to back, for sinks that cannot seek (a
// download stream, a pipe, an HTTP upload): every guest cluster's fate (data, zero flag or
// nothing) is decided before any data is written, so the header, L1 table, refcount table and
// blocks and all L2 tables come first and the data clusters follow, in guest order:
//
//   header cluster | L1 table | refcount table | refcount blocks | L2 tables | data clusters
//
// Every cluster of the file is referenced once (refcount 1), so the refcounts are known up
// front too. The data clusters are not part of this: the caller streams them after metadata().

import type { CreateOptions } from '../dispatch/image.js';
import { ImageError } from '../base/errors.js';
import { createQcow2 } from './qcow2-create.js';
import { createMemoryBackend } from '../backends/memory.js';
import type { Qcow2Header } from './qcow2-header.js';
import { readQcow2Header } from './qcow2-shadow-update.js';
import { setHeaderTables } from './qcow2-header-write.js';
import { TableCodec, type L2Geometry } from './qcow2-metadata-codec.js';
import { refcountClusters } from './qcow2-refcount-layout.js';

/** What the streamed image stores for one guest cluster. */
export const StreamedCluster = {
  /** Nothing: the cluster reads as zeros, or from the backing file named in the header. */
  NONE: 0,
  /** A zero-flagged L2 entry: reads as zeros whatever the backing file holds (version 3 only). */
  ZERO: 1,
  /** A data cluster, streamed by the caller after the metadata. */
  DATA: 2,
} as const;
export type StreamedCluster = (typeof StreamedCluster)[keyof typeof StreamedCluster];

/** The image's header cluster (createQcow2's, with its extensions and backing name) and its parsed fields. */
async function renderHeader(options: CreateOptions): Promise<{ headerCluster: Uint8Array; header: Qcow2Header }> {
  if (options.preallocation !== undefined && options.preallocation !== 'off') {
    throw new ImageError('INVALID_ARGUMENT', `a streamed image cannot be preallocated (preallocation '${options.preallocation}')`);
  }
  const scratch = createMemoryBackend();
  try {
    const created = await createQcow2(scratch, options);
    const headerCluster = new Uint8Array(created.clusterSize);
    await scratch.preadv(0, [headerCluster]);
    return { headerCluster, header: await readQcow2Header(scratch) };
  } finally {
    await scratch.close();
  }
}

/**
 * A streamed qcow2 image's layout. Create with Qcow2StreamLayout.start (checks the create
 * options), fill `clusters` (one StreamedCluster per guest cluster, all NONE at first), then
 * place() it, write the bytes of metadata() and then every DATA cluster in guest order: the file
 * ends after the last one, `fileBytes` long.
 */
export class Qcow2StreamLayout {
  readonly clusterBytes: number;
  readonly virtualSize: number;
  /** False for compat 0.10 images, which have no zero flag: ZERO is refused there. */
  readonly zeroFlagSupported: boolean;
  /** One StreamedCluster per guest cluster; fill before place(). */
  readonly clusters: Uint8Array;
  private readonly geometry: L2Geometry;
  private readonly l2Entries: number;
  private readonly l1Clusters: number;
  private placed: { reftableClusters: number; refcountBlocks: number; l2Tables: number; dataClusters: number } | undefined;

  private constructor(private readonly codec: TableCodec, private readonly headerCluster: Uint8Array, private readonly header: Qcow2Header) {
    this.clusterBytes = header.clusterSize;
    this.virtualSize = header.virtualSize;
    this.zeroFlagSupported = header.version === 3;
    this.geometry = { clusterBits: header.clusterBits, extendedL2: header.flags.extendedL2, version: header.version };
    this.l2Entries = this.clusterBytes / TableCodec.l2EntryBytes(this.geometry);
    this.l1Clusters = Math.ceil(TableCodec.pointerTableBytes(header.l1Size) / this.clusterBytes);
    this.clusters = new Uint8Array(Math.ceil(this.virtualSize / this.clusterBytes));
  }

  /** Checks `options` as createQcow2 does (same errors; `preallocation` must be 'off') and prepares the layout. */
  static async start(options: CreateOptions): Promise<Qcow2StreamLayout> {
    const { headerCluster, header } = await renderHeader(options);
    return new Qcow2StreamLayout(await TableCodec.load(), headerCluster, header);
  }

  /**
   * Places the tables for `clusters` as filled now (later changes are not seen) and returns the
   * file's length in bytes. Throws INVALID_ARGUMENT for ZERO where zeroFlagSupported is false.
   */
  place(): number {
    let dataClusters = 0;
    let l2Tables = 0;
    for (let table = 0; table * this.l2Entries < this.clusters.length; table++) {
      const entries = this.clusters.subarray(table * this.l2Entries, (table + 1) * this.l2Entries);
      let used = false;
      for (const kind of entries) {
        if (kind === StreamedCluster.DATA) dataClusters++;
        else if (kind === StreamedCluster.ZERO && !this.zeroFlagSupported) throw new ImageError('INVALID_ARGUMENT', 'compat 0.10 images have no zero clusters');
        used ||= kind !== StreamedCluster.NONE;
      }
      if (used) l2Tables++;
    }
    const fixedClusters = 1 + this.l1Clusters + l2Tables + dataClusters;
    const { blocks: refcountBlocks, tableClusters: reftableClusters } = refcountClusters(fixedClusters, this.clusterBytes, this.header.refcountOrder);
    this.placed = { reftableClusters, refcountBlocks, l2Tables, dataClusters };
    return this.fileClusters() * this.clusterBytes;
  }

  /**
   * The file's bytes before the data clusters, in order, a cluster or table at a time; each
   * buffer is new (the caller may keep it). Call after place().
   */
  async *metadata(): AsyncGenerator<Uint8Array> {
    const { reftableClusters, refcountBlocks } = this.required();
    const cluster = this.clusterBytes;
    const reftableHostOffset = (1 + this.l1Clusters) * cluster;
    const blocksHostOffset = reftableHostOffset + reftableClusters * cluster;
    const l2HostOffset = blocksHostOffset + refcountBlocks * cluster;
    const fileClusters = this.fileClusters();

    const headerCluster = this.headerCluster.slice();
    await setHeaderTables(headerCluster, {
      virtualSize: this.virtualSize, l1Entries: this.header.l1Size, l1TableOffset: cluster,
      refcountTableOffset: reftableHostOffset, refcountTableClusters: reftableClusters, snapshotCount: 0, snapshotsOffset: 0,
    });
    yield headerCluster;

    const l1Offsets = new Array<number>(this.header.l1Size).fill(0);
    let nextL2 = l2HostOffset;
    for (let table = 0; table < l1Offsets.length; table++) {
      if (this.tableUsed(table)) {
        l1Offsets[table] = nextL2;
        nextL2 += cluster;
      }
    }
    const l1 = new Uint8Array(this.l1Clusters * cluster);
    this.codec.setL1Offsets(l1, 0, l1Offsets, true);
    yield l1;

    const blocks = new Map<number, number>();
    for (let block = 0; block < refcountBlocks; block++) blocks.set(block, blocksHostOffset + block * cluster);
    yield this.codec.reftable(cluster, reftableClusters, blocks);

    const entriesPerBlock = (cluster * 8) / 2 ** this.header.refcountOrder;
    for (let block = 0; block < refcountBlocks; block++) {
      const first = block * entriesPerBlock;
      yield this.codec.refcountBlock(cluster, this.header.refcountOrder, (index) => (first + index < fileClusters ? 1 : 0));
    }

    let dataHostOffset = nextL2;
    for (let table = 0; table < l1Offsets.length; table++) {
      if (l1Offsets[table] === 0) continue;
      const l2 = new Uint8Array(cluster);
      const firstGuestCluster = table * this.l2Entries;
      const entries = this.clusters.subarray(firstGuestCluster, firstGuestCluster + this.l2Entries);
      entries.forEach((kind, index) => {
        if (kind === StreamedCluster.DATA) {
          this.codec.setDataL2Entry(l2, this.geometry, index, dataHostOffset);
          dataHostOffset += cluster;
        } else if (kind === StreamedCluster.ZERO) {
          this.codec.setZeroL2Entry(l2, this.geometry, index);
        }
      });
      yield l2;
    }
  }

  private tableUsed(table: number): boolean {
    return this.clusters.subarray(table * this.l2Entries, (table + 1) * this.l2Entries).some((kind) => kind !== StreamedCluster.NONE);
  }

  private fileClusters(): number {
    const { reftableClusters, refcountBlocks, l2Tables, dataClusters } = this.required();
    return 1 + this.l1Clusters + reftableClusters + refcountBlocks + l2Tables + dataClusters;
  }

  private required(): NonNullable<Qcow2StreamLayout['placed']> {
    if (!this.placed) throw new ImageError('INVALID_ARGUMENT', 'the streamed image is not placed yet: call place() first');
    return this.placed;
  }
}
