// SPDX-License-Identifier: MIT
// Metadata changes that must survive a power cut at any point: snapshot create, apply and delete,
// resize, amend. Instead of editing live tables in place, a ShadowUpdate writes every changed
// table (active L1 and L2 tables, snapshot table, snapshot L1 tables, the whole refcount
// structure) into clusters the current image does not use, then switches to them with one
// header write inside the first 512-byte sector (the virtual size and the L1, refcount table and
// snapshot table pointers all live there). A cut before that write leaves the old image untouched
// (the new clusters are unreferenced and counted free); after it, the new one, whose refcounts
// are recounted from every reference and so are exact.
//
// The recount also sets QCOW_OFLAG_COPIED exactly (on L1 entries of private L2 tables, on L2
// entries of clusters with refcount 1), and every active L2 table that a snapshot shares or
// whose flags change is written as a private copy, so the active tables never need
// copy-on-write of an L2 table after a snapshot operation.
//
// This file keeps the order of the I/O; the bytes of every table, entry and header are the wasm
// core's (qcow2-metadata-codec.ts, qcow2-snapshot-entries.ts, qcow2-header-write.ts), the
// refcount structure is rebuilt by qcow2-shadow-refcounts.ts.

import type { Backend } from '../backends/backend.js';
import { ImageError } from '../base/errors.js';
import { parseQcow2Header, qcow2HeaderBytesNeeded, type Qcow2Header } from './qcow2-header.js';
import { sharedCore } from '../core/wasm.js';
import { TableCodec, type L2Geometry } from './qcow2-metadata-codec.js';
import { readSnapshotEntries, snapshotTableBytes, withSnapshotL1Table, type SnapshotTableEntry } from './qcow2-snapshot-entries.js';
import { switchHeaderTables, type HeaderTables } from './qcow2-header-write.js';
import { ClusterCounts, placeRefcounts, readRefcounts } from './qcow2-shadow-refcounts.js';

/** Header extension type of persistent bitmaps, whose tables this update does not count. */
const BITMAPS_EXTENSION = 0x23852875;
/** QEMU's limits on the snapshot table. */
export const MAX_SNAPSHOTS = 65536;
const MAX_SNAPSHOT_TABLE_BYTES = 64 << 20;

/** Reads and validates the header of the qcow2 image in `backend`. */
export async function readQcow2Header(backend: Backend): Promise<Qcow2Header> {
  const probe = await sharedCore();
  const fileSize = await backend.getSize();
  const bytes = new Uint8Array(qcow2HeaderBytesNeeded(probe, fileSize));
  await backend.preadv(0, [bytes]);
  return parseQcow2Header(probe, bytes, fileSize);
}

/**
 * For an image open while its metadata changes (Qcow2Image): whether its core can hold tables of
 * these sizes after the switch. A change that needs more is refused before anything is written.
 */
export interface TableCapacity {
  /** Whether an L1 table of `l1Entries` entries and a refcount table of `reftableClusters` clusters fit. */
  fits(l1Entries: number, reftableClusters: number): boolean;
}

/**
 * One crash-safe change of a qcow2 image's metadata. Load with ShadowUpdate.begin, edit the
 * active L1 and L2 tables, the snapshot list and the virtual size in memory (allocating new
 * clusters for new tables or data with allocate()), then commit(). Not for an image open
 * elsewhere for writing: Qcow2Image's snapshot methods flush and reload around it.
 */
export class ShadowUpdate {
  readonly clusterSize: number;
  /** Bytes per L2 entry (8, or 16 with extended L2). */
  readonly l2EntryBytes: number;
  /** Entries per L2 table. */
  readonly l2Entries: number;
  /** What decoding this image's L2 entries needs. */
  readonly geometry: L2Geometry;
  /** The active L1 table's L2 table offsets (0: none), editable; its length is the L1 size. */
  activeL1: number[];
  /** Snapshot table entries, editable (new ones from renderSnapshotEntry). */
  snapshots: SnapshotTableEntry[];
  virtualSize: number;
  /** Refcount order of the rebuilt refcount structure (amend may change it). */
  refcountOrder: number;
  /** Active L2 tables loaded for editing, by L1 index. */
  private readonly activeTables = new Map<number, { bytes: Uint8Array; edited: boolean }>();
  /** New clusters written before the switch (new tables, snapshot data), by host offset. */
  private readonly newClusters = new Map<number, Uint8Array>();
  /** Clusters this update allocated (counted used by allocate()). */
  private readonly allocated = new Set<number>();
  /** No cluster below this one is free (cluster 0 holds the header). */
  private firstFreeCandidate = 1;

  private constructor(private readonly backend: Backend, readonly header: Qcow2Header, readonly codec: TableCodec,
                      private readonly storedL1: Uint8Array, snapshots: SnapshotTableEntry[],
                      private readonly oldCounts: ClusterCounts | undefined, private readonly fileClusters: number,
                      private readonly capacity: TableCapacity | undefined) {
    this.clusterSize = header.clusterSize;
    this.geometry = { clusterBits: header.clusterBits, extendedL2: header.flags.extendedL2, version: header.version };
    this.l2EntryBytes = TableCodec.l2EntryBytes(this.geometry);
    this.l2Entries = header.clusterSize / this.l2EntryBytes;
    this.activeL1 = codec.l1Offsets(storedL1);
    this.snapshots = snapshots;
    this.virtualSize = header.virtualSize;
    this.refcountOrder = header.refcountOrder;
  }

  /**
   * Loads the image in `backend` for a change (`capacity`: what an open image's core can hold;
   * commit refuses bigger tables with QCOW2_UNSUPPORTED_FEATURE). Throws QCOW2_UNSUPPORTED_FEATURE for an external
   * data file or persistent bitmaps (whose references it does not count), QCOW2_READ_ONLY for
   * an image marked corrupt, and the header's, the snapshot table's and the backend's errors.
   */
  static async begin(backend: Backend, capacity?: TableCapacity): Promise<ShadowUpdate> {
    const header = await readQcow2Header(backend);
    if (header.flags.corrupt) throw new ImageError('QCOW2_READ_ONLY', 'the image is marked corrupt: repair it with check first');
    if (header.flags.externalDataFile) throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', 'images with an external data file do not support this operation');
    if (header.unknownExtensions.some((e) => e.type === BITMAPS_EXTENSION)) {
      throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', 'images with persistent bitmaps do not support this operation (remove the bitmaps first)');
    }
    const codec = await TableCodec.load();
    const l1 = new Uint8Array(TableCodec.pointerTableBytes(header.l1Size));
    if (l1.length > 0) await backend.preadv(header.l1TableOffset, [l1]);
    const snapshots = await readSnapshotEntries(backend, header);
    const fileSize = await backend.getSize();
    // With lazy refcounts left dirty the stored refcounts may be low: allocate past the end only.
    const oldCounts = header.flags.dirty ? undefined : await readRefcounts(backend, header, codec);
    return new ShadowUpdate(backend, header, codec, l1, snapshots, oldCounts, Math.ceil(fileSize / header.clusterSize), capacity);
  }

  /** L1 index of the first L2 table past the virtual disk: where QEMU keeps VM state. */
  vmStateL1Index(virtualSize = this.virtualSize): number {
    return Math.ceil(virtualSize / (this.clusterSize * this.l2Entries));
  }

  /** The active L2 table of L1 index `index` for editing (undefined: none); call setActiveTable after changing it. */
  async activeTable(index: number): Promise<Uint8Array | undefined> {
    const loaded = this.activeTables.get(index);
    if (loaded) return loaded.bytes;
    const offset = this.activeL1[index] ?? 0;
    if (offset === 0) return undefined;
    const bytes = await this.readTable(offset);
    this.activeTables.set(index, { bytes, edited: false });
    return bytes;
  }

  /** Removes the active L2 table of L1 index `index` (its guest range reads from the backing file, or zeros). */
  dropActiveTable(index: number): void {
    this.activeTables.delete(index);
    this.activeL1[index] = 0;
  }

  /** Records that the active L2 table of L1 index `index` was changed (or is new). */
  setActiveTable(index: number, bytes: Uint8Array): void {
    this.activeTables.set(index, { bytes, edited: true });
  }

  /**
   * Points snapshot `index` at a new L1 table with the bytes `l1` (as many entries as before),
   * written to clusters allocated here.
   */
  async replaceSnapshotL1(index: number, l1: Uint8Array): Promise<void> {
    const hostOffset = this.allocate(Math.max(1, Math.ceil(l1.length / this.clusterSize)), l1);
    this.snapshots[index] = await withSnapshotL1Table(this.snapshots[index], hostOffset);
  }

  /** Reads the L2 table (one cluster) at `hostOffset`. */
  async readTable(hostOffset: number): Promise<Uint8Array> {
    const bytes = new Uint8Array(this.clusterSize);
    await this.backend.preadv(hostOffset, [bytes]);
    return bytes;
  }

  /**
   * Takes `clusterCount` contiguous clusters that neither the image before nor after the change
   * uses, and returns the host offset of the first; `content` (at most that many bytes) is
   * written there before the switch.
   */
  allocate(clusterCount: number, content?: Uint8Array): number {
    // First fit from the lowest free cluster, so a hole too small for one request still takes a
    // later, smaller one.
    while (this.isTaken(this.firstFreeCandidate)) this.firstFreeCandidate++;
    let start = this.firstFreeCandidate;
    for (let c = start; c < start + clusterCount; c++) {
      if (this.isTaken(c)) start = c + 1;
    }
    for (let c = start; c < start + clusterCount; c++) this.allocated.add(c);
    const hostOffset = start * this.clusterSize;
    if (content) this.newClusters.set(hostOffset, content);
    return hostOffset;
  }

  private isTaken(cluster: number): boolean {
    if (this.allocated.has(cluster)) return true;
    if (!this.oldCounts) return cluster < this.fileClusters;
    return this.oldCounts.get(cluster) > 0 || (cluster === 0);
  }

  /**
   * Writes the new metadata and switches the header to it. `fullHeader`, when given, builds the
   * whole new header from where the new tables are; its first 512-byte sector must hold every
   * field the switch changes (it does: they are all in the fixed part).
   */
  async commit(fullHeader?: (tables: HeaderTables) => Uint8Array | Promise<Uint8Array>): Promise<void> {
    const counts = new ClusterCounts();
    const countRange = (hostOffset: number, bytes: number) => {
      const first = Math.floor(hostOffset / this.clusterSize);
      const last = Math.floor((hostOffset + bytes - 1) / this.clusterSize);
      for (let c = first; c <= last; c++) counts.add(c, 1);
    };
    const clustersOf = (bytes: number) => Math.max(1, Math.ceil(bytes / this.clusterSize));
    countRange(0, this.clusterSize);

    // 1. Snapshots: their L1 tables, L2 tables and data, as stored (new ones were written by allocate()).
    const sharedTables = new Set<number>();
    for (const snapshot of this.snapshots) {
      if (snapshot.l1Entries === 0) continue;
      const l1Bytes = TableCodec.pointerTableBytes(snapshot.l1Entries);
      countRange(snapshot.l1TableOffset, l1Bytes);
      for (const tableOffset of this.codec.l1Offsets(await this.readHost(snapshot.l1TableOffset, l1Bytes))) {
        if (tableOffset === 0) continue;
        countRange(tableOffset, this.clusterSize);
        sharedTables.add(tableOffset);
        this.codec.l2References(await this.readHost(tableOffset, this.clusterSize), this.geometry, countRange);
      }
    }

    // 2. Active tables: data references now; the tables themselves once placed.
    const l1Size = this.activeL1.length;
    for (let i = 0; i < l1Size; i++) {
      const table = await this.activeTable(i);
      if (table) this.codec.l2References(table, this.geometry, countRange);
    }

    // 3. Active L2 tables: a private copy where a snapshot shares one, it was edited or its
    // COPIED flags are wrong; the L1 entries then all carry COPIED.
    const l1Offsets: number[] = [];
    for (let i = 0; i < l1Size; i++) {
      const loaded = this.activeTables.get(i);
      let tableOffset = this.activeL1[i];
      if (loaded) {
        const flagsChanged = this.codec.syncCopiedFlags(loaded.bytes, this.geometry, (hostOffset) => counts.get(hostOffset / this.clusterSize) === 1);
        if (loaded.edited || flagsChanged || sharedTables.has(tableOffset) || tableOffset === 0) {
          tableOffset = this.allocate(1, loaded.bytes);
        }
      }
      if (tableOffset !== 0) countRange(tableOffset, this.clusterSize);
      l1Offsets.push(tableOffset);
    }
    const l1Bytes = new Uint8Array(TableCodec.pointerTableBytes(l1Size));
    this.codec.setL1Offsets(l1Bytes, 0, l1Offsets, true);
    const l1Changed = l1Bytes.length !== this.storedL1.length || l1Bytes.some((byte, i) => byte !== this.storedL1[i]);
    const l1TableOffset = !l1Changed ? this.header.l1TableOffset : l1Size === 0 ? 0 : this.allocate(clustersOf(l1Bytes.length), l1Bytes);
    if (l1Size > 0) countRange(l1TableOffset, l1Bytes.length);

    // 4. The snapshot table.
    const tableBytes = snapshotTableBytes(this.snapshots);
    if (tableBytes.length > MAX_SNAPSHOT_TABLE_BYTES) throw new ImageError('INVALID_ARGUMENT', 'the snapshot table would exceed 64 MiB');
    const snapshotsOffset = tableBytes.length === 0 ? 0 : this.allocate(clustersOf(tableBytes.length), tableBytes);
    if (tableBytes.length > 0) countRange(snapshotsOffset, tableBytes.length);

    // 5. The refcount structure, counting itself.
    const refcount = placeRefcounts(counts, {
      clusterSize: this.clusterSize, refcountOrder: this.refcountOrder, previousRefcountOrder: this.header.refcountOrder,
      allocate: (clusterCount) => this.allocate(clusterCount),
    }, this.codec);
    if (this.capacity && !this.capacity.fits(l1Size, refcount.tableClusters)) {
      throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', `the change needs an L1 table of ${l1Size} entries and a refcount table of ` +
        `${refcount.tableClusters} clusters, more than this open image holds in memory: close the image and change the file`);
    }

    // Write everything new, make it durable, then switch with one header write.
    const writes = [...this.newClusters].sort((a, b) => a[0] - b[0]);
    for (const [hostOffset, bytes] of writes) await this.backend.pwritev(hostOffset, [bytes]);
    for (const [hostOffset, bytes] of refcount.writes) await this.backend.pwritev(hostOffset, [bytes]);
    await this.backend.flush();

    const tables: HeaderTables = {
      virtualSize: this.virtualSize, l1Entries: l1Size, l1TableOffset, refcountTableOffset: refcount.tableOffset,
      refcountTableClusters: refcount.tableClusters, snapshotCount: this.snapshots.length, snapshotsOffset,
    };
    if (fullHeader) {
      const header = await fullHeader(tables);
      if (header.length > this.clusterSize) throw new ImageError('INVALID_ARGUMENT', 'the new header does not fit in cluster 0');
      await this.writeHeader(header);
    } else {
      // The recount made the refcounts exact: a dirty bit is cleared in the same write.
      await switchHeaderTables(this.backend, tables, this.header.flags.dirty);
    }
    await this.backend.flush();
    // Clusters past the last one in use now are free: give them back where the backend can.
    const usedBytes = refcount.usedClusters * this.clusterSize;
    if (this.backend.capabilities.truncate && this.backend.truncate && usedBytes < this.fileClusters * this.clusterSize) {
      await this.backend.truncate(usedBytes);
    }
  }

  // Writes a whole new header: the sectors past the first that change go first (with a barrier),
  // then the first sector, which holds every field that says where things are. Atomic when the
  // old header's bytes past the first sector do not change (the usual case: a version 2 header,
  // or a version 3 header whose extensions stay); otherwise a cut between the two writes leaves
  // a header with a damaged extension area.
  private async writeHeader(header: Uint8Array): Promise<void> {
    const current = new Uint8Array(header.length);
    await this.backend.preadv(0, [current]);
    let tailChanged = false;
    for (let sector = 512; sector < header.length; sector += 512) {
      const end = Math.min(header.length, sector + 512);
      if (header.subarray(sector, end).every((byte, i) => byte === current[sector + i])) continue;
      await this.backend.pwritev(sector, [header.subarray(sector, end)]);
      tailChanged = true;
    }
    if (tailChanged) await this.backend.flush();
    await this.backend.pwritev(0, [header.subarray(0, Math.min(512, header.length))]);
  }

  /** Reads `length` bytes at `hostOffset`, seeing clusters allocated and filled by this update. */
  async readHost(hostOffset: number, length: number): Promise<Uint8Array> {
    const pending = this.newClusters.get(hostOffset);
    if (pending && pending.length >= length) return pending.subarray(0, length);
    const bytes = new Uint8Array(length);
    await this.backend.preadv(hostOffset, [bytes]);
    return bytes;
  }
}
