// SPDX-License-Identifier: MIT
// Writes a new qcow2 image front to back, for convert: guest clusters arrive in increasing
// order and land at increasing host offsets (data clusters, compressed clusters packed at byte
// granularity as QEMU packs them, each L2 table right after the last cluster it maps); refcount
// blocks and table follow the data, then the L1 table and finally the header are written into the
// clusters reserved for them at the start. The image is valid only once finish() resolves: until
// the header is written, cluster 0 holds no qcow2 magic.

import type { Backend } from '../backends/backend.js';
import type { CreateOptions } from '../dispatch/image.js';
import type { CompressionType } from './decompress.js';
import { ImageError } from '../base/errors.js';
import { createQcow2 } from './qcow2-create.js';
import { createMemoryBackend } from '../backends/memory.js';
import type { Qcow2Header } from './qcow2-header.js';
import { readQcow2Header } from './qcow2-shadow-update.js';
import { setHeaderTables } from './qcow2-header-write.js';
import { TableCodec, type L2Geometry } from './qcow2-metadata-codec.js';
import { WriteQueue } from '../backends/write-queue.js';
import { refcountClusters } from './qcow2-refcount-layout.js';

/** What a finished image holds, in clusters of the image's cluster size. */
export interface SequentialWriteResult {
  /** Bytes of the new file. */
  fileBytes: number;
  dataClusters: number;
  compressedClusters: number;
  zeroClusters: number;
}

/**
 * A qcow2 image being written front to back. Create with Qcow2SequentialWriter.start; feed guest
 * clusters in strictly increasing guest order with writeData, writeCompressed and writeZero; then
 * finish(). Guest ranges never written stay unallocated (they read as zeros, or from the backing
 * file named in the options). Buffers handed in belong to the writer until finish() resolves.
 */
export class Qcow2SequentialWriter {
  readonly clusterBytes: number;
  readonly virtualSize: number;
  readonly compressionType: CompressionType;
  /** False for compat 0.10 images, which have no zero flag: write zeros as data there. */
  readonly zeroFlagSupported: boolean;
  private readonly geometry: L2Geometry;
  private readonly refcountOrder: number;
  private readonly l2Entries: number;
  private readonly l1: Float64Array;
  private readonly l1Bytes: number;
  /** Host clusters holding compressed data, and how many descriptors reference each. */
  private readonly compressedRefcounts = new Map<number, number>();
  private readonly maxRefcount: number;
  /** Next free host cluster-aligned byte offset. */
  private cursorHostOffset: number;
  /** Where the next compressed cluster may start, and the end of the clusters allocated for packing. */
  private packHostOffset = 0;
  private packEndHostOffset = 0;
  /** Guest cluster index the next call must be above. */
  private lastGuestCluster = -1;
  private l2Index = -1;
  private l2Table: Uint8Array | undefined;
  /** The host writes: gathered, a few in flight, written back early. */
  private readonly writes: WriteQueue;
  private finished = false;
  private readonly counts = { dataClusters: 0, compressedClusters: 0, zeroClusters: 0 };

  private constructor(private readonly backend: Backend, private readonly codec: TableCodec,
    private readonly headerCluster: Uint8Array, private readonly header: Qcow2Header) {
    this.clusterBytes = header.clusterSize;
    this.virtualSize = header.virtualSize;
    this.compressionType = header.compressionType;
    this.zeroFlagSupported = header.version === 3;
    this.geometry = { clusterBits: header.clusterBits, extendedL2: header.flags.extendedL2, version: header.version };
    this.refcountOrder = header.refcountOrder;
    this.l2Entries = this.clusterBytes / TableCodec.l2EntryBytes(this.geometry);
    this.l1 = new Float64Array(header.l1Size);
    this.l1Bytes = Math.ceil(TableCodec.pointerTableBytes(header.l1Size) / this.clusterBytes) * this.clusterBytes;
    this.cursorHostOffset = this.clusterBytes + this.l1Bytes;
    const refcountBits = 2 ** header.refcountOrder;
    this.maxRefcount = refcountBits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** refcountBits - 1;
    this.writes = new WriteQueue(backend);
  }

  /**
   * Checks `options` as createQcow2 does (same errors) and prepares to write the image into
   * `backend`, which is truncated to empty. `preallocation` must be 'off'. Throws
   * Qcow2CreateError for invalid options, BACKEND_READ_ONLY, backend errors.
   */
  static async start(backend: Backend, options: CreateOptions): Promise<Qcow2SequentialWriter> {
    if (options.preallocation !== undefined && options.preallocation !== 'off') {
      throw new ImageError('INVALID_ARGUMENT', `a sequentially written image cannot be preallocated (preallocation '${options.preallocation}')`);
    }
    // The header (with its extensions and backing name) is createQcow2's, rendered in memory;
    // only the table offsets change.
    const scratch = createMemoryBackend();
    const created = await createQcow2(scratch, options);
    const headerCluster = new Uint8Array(created.clusterSize);
    await scratch.preadv(0, [headerCluster]);
    const header = await readQcow2Header(scratch);
    await scratch.close();
    if (!backend.capabilities.writable) throw new ImageError('INVALID_ARGUMENT', 'cannot write an image to a read-only backend');
    if ((await backend.getSize()) > 0) {
      if (!backend.truncate) throw new ImageError('INVALID_ARGUMENT', 'the target backend is not empty and cannot be truncated');
      await backend.truncate(0);
    }
    return new Qcow2SequentialWriter(backend, await TableCodec.load(), headerCluster, header);
  }

  /**
   * Stores whole guest clusters from cluster-aligned `guestOffset`: `data` is a multiple of the
   * cluster size, or ends at the virtual size. Rejects with the first backend write error.
   */
  async writeData(guestOffset: number, data: Uint8Array): Promise<void> {
    const first = this.claimClusters(guestOffset, data.byteLength);
    const count = Math.ceil(data.byteLength / this.clusterBytes);
    // The run goes in pieces, one per L2 table it touches: each piece's clusters are allocated
    // together, so they are host-contiguous, and go out as one write (entering a new L2 table
    // appends the previous one to the host stream, between two pieces).
    for (let i = 0; i < count;) {
      const guestCluster = first + i;
      const l2Table = this.enterL2Table(guestCluster);
      const index = guestCluster % this.l2Entries;
      const pieceClusters = Math.min(count - i, this.l2Entries - index);
      const hostOffset = this.allocateClusters(pieceClusters);
      this.codec.setDataL2Entries(l2Table, this.geometry, index, pieceClusters, hostOffset);
      this.writes.write(hostOffset, data.subarray(i * this.clusterBytes, Math.min(data.byteLength, (i + pieceClusters) * this.clusterBytes)));
      i += pieceClusters;
    }
    this.counts.dataClusters += count;
    await this.writes.backpressure();
  }

  /**
   * Stores one guest cluster at cluster-aligned `guestOffset` as `compressed` (the image's
   * compression type, shorter than a cluster), packed after the previous compressed cluster.
   */
  async writeCompressed(guestOffset: number, compressed: Uint8Array): Promise<void> {
    if (compressed.byteLength === 0 || compressed.byteLength >= this.clusterBytes) {
      throw new ImageError('INVALID_ARGUMENT', `compressed cluster data must be 1 to ${this.clusterBytes - 1} bytes, got ${compressed.byteLength}`);
    }
    const guestCluster = this.claimClusters(guestOffset, this.clusterBytes);
    const l2Table = this.enterL2Table(guestCluster);
    const hostOffset = this.placeCompressed(compressed.byteLength);
    const end = hostOffset + compressed.byteLength;
    for (let cluster = Math.floor(hostOffset / this.clusterBytes); cluster * this.clusterBytes < end; cluster++) {
      this.compressedRefcounts.set(cluster, (this.compressedRefcounts.get(cluster) ?? 0) + 1);
    }
    this.codec.setCompressedL2Entry(l2Table, this.geometry, guestCluster % this.l2Entries, hostOffset, compressed.byteLength);
    this.counts.compressedClusters++;
    this.writes.write(hostOffset, compressed);
    await this.writes.backpressure();
  }

  /** Marks the guest cluster at `guestOffset` as reading zeros (needs zeroFlagSupported). */
  writeZero(guestOffset: number): void {
    if (!this.zeroFlagSupported) throw new ImageError('INVALID_ARGUMENT', 'compat 0.10 images have no zero clusters');
    const guestCluster = this.claimClusters(guestOffset, this.clusterBytes);
    const l2Table = this.enterL2Table(guestCluster);
    this.codec.setZeroL2Entry(l2Table, this.geometry, guestCluster % this.l2Entries);
    this.counts.zeroClusters++;
  }

  /**
   * Writes the last L2 table, the refcount structures, the L1 table and the header, waits for
   * every write and flushes. The writer is unusable afterwards.
   */
  async finish(): Promise<SequentialWriteResult> {
    if (this.finished) throw new ImageError('IMAGE_CLOSED', 'the image writer has already finished');
    this.finished = true;
    this.closeL2Table();
    const refcountStart = this.cursorHostOffset;
    const { blocks, tableClusters } = refcountClusters(refcountStart / this.clusterBytes, this.clusterBytes, this.refcountOrder);
    const totalClusters = refcountStart / this.clusterBytes + blocks + tableClusters;
    const entriesPerBlock = (this.clusterBytes * 8) / 2 ** this.refcountOrder;
    const blockHostOffsets = new Map<number, number>();
    for (let block = 0; block < blocks; block++) {
      const first = block * entriesPerBlock;
      const blockBytes = this.codec.refcountBlock(this.clusterBytes, this.refcountOrder,
        (index) => this.compressedRefcounts.get(first + index) ?? 1, totalClusters - first);
      const blockHostOffset = refcountStart + block * this.clusterBytes;
      blockHostOffsets.set(block, blockHostOffset);
      this.writes.write(blockHostOffset, blockBytes);
      await this.writes.backpressure();
    }
    const tableHostOffset = refcountStart + blocks * this.clusterBytes;
    this.writes.write(tableHostOffset, this.codec.reftable(this.clusterBytes, tableClusters, blockHostOffsets));
    const l1 = new Uint8Array(this.l1Bytes);
    this.codec.setL1Offsets(l1, 0, Array.from(this.l1), true);
    this.writes.write(this.clusterBytes, l1);
    // Only once everything it points to is durable does the header make the file an image.
    await this.writes.flush();
    await setHeaderTables(this.headerCluster, {
      virtualSize: this.header.virtualSize, l1Entries: this.header.l1Size, l1TableOffset: this.clusterBytes,
      refcountTableOffset: tableHostOffset, refcountTableClusters: tableClusters, snapshotCount: 0, snapshotsOffset: 0,
    });
    await this.backend.pwritev(0, [this.headerCluster]);
    await this.backend.flush();
    return { fileBytes: totalClusters * this.clusterBytes, ...this.counts };
  }

  /**
   * Issues every gathered write; resolves once every write issued so far is done, so the writer
   * holds none of the buffers given before this call. Never rejects: a write error surfaces from
   * the next write call or finish().
   */
  written(): Promise<void> {
    return this.writes.written();
  }

  /** Waits for writes in flight after a failure elsewhere, so the backend can be closed. */
  async abandon(): Promise<void> {
    this.finished = true;
    await this.writes.abandon();
  }

  // Checks order and alignment; returns the first guest cluster index; switches L2 tables.
  private claimClusters(guestOffset: number, byteLength: number): number {
    if (this.finished) throw new ImageError('IMAGE_CLOSED', 'the image writer has already finished');
    const first = guestOffset / this.clusterBytes;
    const end = guestOffset + byteLength;
    if (!Number.isInteger(first) || first <= this.lastGuestCluster || byteLength <= 0 ||
        end > Math.ceil(this.virtualSize / this.clusterBytes) * this.clusterBytes ||
        (end % this.clusterBytes !== 0 && end !== this.virtualSize)) {
      throw new ImageError('INVALID_ARGUMENT',
        `guest range [${guestOffset}, ${end}) is not whole clusters above guest cluster ${this.lastGuestCluster} within the virtual size ${this.virtualSize}`);
    }
    this.lastGuestCluster = Math.ceil(end / this.clusterBytes) - 1;
    return first;
  }

  private allocateClusters(count: number): number {
    const hostOffset = this.cursorHostOffset;
    this.cursorHostOffset += count * this.clusterBytes;
    return hostOffset;
  }

  // QEMU's packing: continue in the current packing clusters, extending them into the next
  // cluster when nothing was allocated since; otherwise start packing in new clusters.
  private placeCompressed(byteLength: number): number {
    const fits = this.packHostOffset + byteLength <= this.packEndHostOffset;
    const extendable = this.packEndHostOffset === this.cursorHostOffset && this.packEndHostOffset > 0;
    if (!(fits || extendable) || !this.refcountsAllow(this.packHostOffset)) {
      this.packHostOffset = this.cursorHostOffset;
      this.packEndHostOffset = this.cursorHostOffset;
    }
    const hostOffset = this.packHostOffset;
    const end = hostOffset + byteLength;
    if (end > this.packEndHostOffset) {
      const clusters = Math.ceil((end - this.packEndHostOffset) / this.clusterBytes);
      this.allocateClusters(clusters);
      this.packEndHostOffset += clusters * this.clusterBytes;
    }
    this.packHostOffset = end;
    return hostOffset;
  }

  // Only the first host cluster a blob touches can already be referenced: the rest are new.
  private refcountsAllow(hostOffset: number): boolean {
    return hostOffset % this.clusterBytes === 0 ||
      (this.compressedRefcounts.get(Math.floor(hostOffset / this.clusterBytes)) ?? 0) < this.maxRefcount;
  }

  // Makes the L2 table of `guestCluster` current and returns it. The previous one is complete (the guest order
  // guarantees nothing maps into it again) and is appended to the host stream now, so call this
  // before allocating the cluster's own host space.
  private enterL2Table(guestCluster: number): Uint8Array {
    const l2Index = Math.floor(guestCluster / this.l2Entries);
    if (l2Index === this.l2Index && this.l2Table) return this.l2Table;
    this.closeL2Table();
    this.l2Index = l2Index;
    this.l2Table = new Uint8Array(this.clusterBytes);
    return this.l2Table;
  }

  // Appends the current L2 table to the host stream and records it in the L1 table.
  private closeL2Table(): void {
    if (!this.l2Table) return;
    const hostOffset = this.allocateClusters(1);
    this.l1[this.l2Index] = hostOffset;
    const bytes = this.l2Table;
    this.l2Table = undefined;
    this.writes.write(hostOffset, bytes);
  }
}
