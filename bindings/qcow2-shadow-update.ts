// SPDX-License-Identifier: MIT
// Metadata changes that must survive a power cut at any point: snapshot create, apply and delete,
// resize, amend. Instead of editing live tables in place, a ShadowUpdate writes every changed
// table (active L1 and L2 tables, snapshot table, snapshot L1 tables, the whole refcount
// structure) into clusters the current image does not use, then switches to them with one
// header write inside the first 512-byte sector (virtual size, L1, refcount table and snapshot
// table pointers live in header bytes 24..72). A cut before that write leaves the old image
// untouched (the new clusters are unreferenced and counted free); after it, the new one, whose
// refcounts are recounted from every reference and so are exact.
//
// The recount also sets QCOW_OFLAG_COPIED exactly (on L1 entries of private L2 tables, on L2
// entries of clusters with refcount 1), and every active L2 table that a snapshot shares or
// whose flags change is written as a private copy, so the active tables never need
// copy-on-write of an L2 table after a snapshot operation.

import type { Backend } from './backend.js';
import { ImageError } from './errors.js';
import { parseQcow2Header, qcow2HeaderBytesNeeded, type Qcow2Header } from './qcow2-header.js';
import { sharedCore, HeaderField } from './wasm.js';

const TWO_32 = 2 ** 32;
/** High-word flag bits of L1/L2 entries (qcow2 spec, "Cluster mapping"). */
const COPIED_HIGH = 0x80000000;
const COMPRESSED_HIGH = 0x40000000;
/** Offset bits 9..55 of L1 and standard L2 entries, as 32-bit halves. */
const OFFSET_HIGH_MASK = 0x00ffffff;
const OFFSET_LOW_MASK = 0xfffffe00;
/** Header byte offsets (qcow2 spec, "Header"). */
const HEADER_SIZE_OFFSET = HeaderField.SIZE;
const HEADER_SWITCH_END = HeaderField.INCOMPATIBLE_FEATURES;
const INCOMPATIBLE_DIRTY = 1n;
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

/** A 64-bit table entry as two 32-bit halves. */
interface Entry { high: number; low: number }

const readEntry = (view: DataView, at: number): Entry => ({ high: view.getUint32(at), low: view.getUint32(at + 4) });

/** Host offset in an L1 entry or a standard L2 entry (0: none). */
const entryOffset = (e: Entry): number => (e.high & OFFSET_HIGH_MASK) * TWO_32 + ((e.low & OFFSET_LOW_MASK) >>> 0);

/** Host offset in the L1 or standard L2 entry at byte `at` of `view` (0: none). */
export const tableEntryOffset = (view: DataView, at: number): number => entryOffset(readEntry(view, at));

/** Writes an L1 or standard L2 entry at byte `at` pointing at `hostOffset`, with COPIED when `copied`. */
export function setTableEntry(view: DataView, at: number, hostOffset: number, copied: boolean): void {
  view.setUint32(at, (Math.floor(hostOffset / TWO_32) | (copied ? COPIED_HIGH : 0)) >>> 0);
  view.setUint32(at + 4, hostOffset % TWO_32);
}

/** Reference counts per host cluster, growing as higher clusters are counted. */
class ClusterCounts {
  private counts = new Uint32Array(1024);
  /** One past the highest cluster ever counted. */
  end = 0;

  get(cluster: number): number {
    return cluster < this.counts.length ? this.counts[cluster] : 0;
  }

  add(cluster: number, delta: number): void {
    if (cluster >= this.counts.length) {
      const grown = new Uint32Array(Math.max(cluster + 1, this.counts.length * 2));
      grown.set(this.counts);
      this.counts = grown;
    }
    this.counts[cluster] += delta;
    if (cluster >= this.end) this.end = cluster + 1;
  }

  /** One past the highest cluster with a nonzero count. */
  usedEnd(): number {
    let end = Math.min(this.end, this.counts.length);
    while (end > 0 && this.counts[end - 1] === 0) end--;
    return end;
  }
}

/**
 * For an image open while its metadata changes (Qcow2Image): whether its core can hold tables of
 * these sizes after the switch. A change that needs more is refused before anything is written.
 */
export interface TableCapacity {
  fits(l1Entries: number, reftableClusters: number): boolean;
}

/** An entry of the snapshot table: its bytes as stored (padding excluded) and what they say. */
export interface SnapshotTableEntry {
  id: string;
  name: string;
  l1TableOffset: number;
  l1Entries: number;
  /** The entry's bytes (header, extra data, id, name), unpadded. */
  bytes: Uint8Array;
}

/** Parses the snapshot table bytes `table` holding `count` entries. Throws QCOW2_CORRUPT. */
export function parseSnapshotTable(table: Uint8Array, count: number): SnapshotTableEntry[] {
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const text = new TextDecoder();
  const entries: SnapshotTableEntry[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + 40 > table.length) throw new ImageError('QCOW2_CORRUPT', `snapshot ${i + 1}: the snapshot table ends inside its entry`);
    const idBytes = view.getUint16(at + 12);
    const nameBytes = view.getUint16(at + 14);
    const extraBytes = view.getUint32(at + 36);
    const length = 40 + extraBytes + idBytes + nameBytes;
    if (at + length > table.length) throw new ImageError('QCOW2_CORRUPT', `snapshot ${i + 1}: the snapshot table ends inside its entry`);
    const idStart = at + 40 + extraBytes;
    entries.push({
      id: text.decode(table.subarray(idStart, idStart + idBytes)),
      name: text.decode(table.subarray(idStart + idBytes, idStart + idBytes + nameBytes)),
      l1TableOffset: entryOffset(readEntry(view, at)) + (view.getUint32(at + 4) & 0x1ff),
      l1Entries: view.getUint32(at + 8),
      bytes: table.slice(at, at + length),
    });
    at += (length + 7) & ~7;
  }
  return entries;
}

/** Bytes of the snapshot table entries from header.snapshotsOffset (with padding). */
async function readSnapshotTableBytes(backend: Backend, header: Qcow2Header): Promise<Uint8Array> {
  if (header.snapshotCount === 0) return new Uint8Array(0);
  // Entries are at most 40 + 64 KiB extra + 2 x 64 KiB strings; read in growing windows.
  let bytes = Math.min(MAX_SNAPSHOT_TABLE_BYTES, header.snapshotCount * 1024);
  for (;;) {
    const table = new Uint8Array(bytes);
    await backend.preadv(header.snapshotsOffset, [table]);
    try {
      const entries = parseSnapshotTable(table, header.snapshotCount);
      let end = 0;
      for (const e of entries) end += (e.bytes.length + 7) & ~7;
      return table.subarray(0, end);
    } catch (error) {
      if (bytes >= MAX_SNAPSHOT_TABLE_BYTES) throw error;
      bytes = Math.min(MAX_SNAPSHOT_TABLE_BYTES, bytes * 4);
    }
  }
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
  /** The active L1 table's L2 table offsets (0: none), editable; its length is the L1 size. */
  activeL1: number[];
  /** Snapshot table entries, editable (new ones from snapshotEntryBytes). */
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
  private allocationCursor = 1;
  private readonly l1Entries: Entry[];

  private constructor(private readonly backend: Backend, readonly header: Qcow2Header, l1: Uint8Array,
                      snapshots: SnapshotTableEntry[], private readonly oldCounts: ClusterCounts | undefined,
                      private readonly fileClusters: number, private readonly capacity: TableCapacity | undefined) {
    this.clusterSize = header.clusterSize;
    this.l2EntryBytes = header.flags.extendedL2 ? 16 : 8;
    this.l2Entries = header.clusterSize / this.l2EntryBytes;
    const view = new DataView(l1.buffer, l1.byteOffset, l1.byteLength);
    this.l1Entries = Array.from({ length: header.l1Size }, (_, i) => readEntry(view, i * 8));
    this.activeL1 = this.l1Entries.map(entryOffset);
    this.snapshots = snapshots;
    this.virtualSize = header.virtualSize;
    this.refcountOrder = header.refcountOrder;
  }

  /**
   * Loads the image in `backend` for a change (`capacity`: what an open image's core can hold;
   * commit refuses bigger tables with QCOW2_UNSUPPORTED_FEATURE). Throws QCOW2_UNSUPPORTED_FEATURE for an external
   * data file or persistent bitmaps (whose references it does not count), QCOW2_READ_ONLY for
   * an image marked corrupt, and the header's and backend's errors.
   */
  static async begin(backend: Backend, capacity?: TableCapacity): Promise<ShadowUpdate> {
    const header = await readQcow2Header(backend);
    if (header.flags.corrupt) throw new ImageError('QCOW2_READ_ONLY', 'the image is marked corrupt: repair it with check first');
    if (header.flags.externalDataFile) throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', 'images with an external data file do not support this operation');
    if (header.unknownExtensions.some((e) => e.type === BITMAPS_EXTENSION)) {
      throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', 'images with persistent bitmaps do not support this operation (remove the bitmaps first)');
    }
    const l1 = new Uint8Array(header.l1Size * 8);
    if (l1.length > 0) await backend.preadv(header.l1TableOffset, [l1]);
    const snapshots = parseSnapshotTable(await readSnapshotTableBytes(backend, header), header.snapshotCount);
    const fileSize = await backend.getSize();
    // With lazy refcounts left dirty the stored refcounts may be low: allocate past the end only.
    const oldCounts = header.flags.dirty ? undefined : await readRefcounts(backend, header);
    return new ShadowUpdate(backend, header, l1, snapshots, oldCounts, Math.ceil(fileSize / header.clusterSize), capacity);
  }

  /** L1 index of the first L2 table past the virtual disk: where QEMU keeps VM state. */
  vmStateL1Index(virtualSize = this.virtualSize): number {
    return Math.ceil(virtualSize / (this.clusterSize * this.l2Entries));
  }

  /** The active L2 table of L1 index `index` for editing (undefined: none); call markEdited after changing it. */
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
  replaceSnapshotL1(index: number, l1: Uint8Array): void {
    const snapshot = this.snapshots[index];
    const hostOffset = this.allocate(Math.max(1, Math.ceil(l1.length / this.clusterSize)), l1);
    const bytes = snapshot.bytes.slice();
    const view = new DataView(bytes.buffer);
    view.setUint32(0, Math.floor(hostOffset / TWO_32));
    view.setUint32(4, hostOffset % TWO_32);
    this.snapshots[index] = { ...snapshot, l1TableOffset: hostOffset, bytes };
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
    let start = this.allocationCursor;
    for (let c = start; c < start + clusterCount; c++) {
      if (this.isTaken(c)) start = c + 1;
    }
    for (let c = start; c < start + clusterCount; c++) this.allocated.add(c);
    this.allocationCursor = start + clusterCount;
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
   * Writes the new metadata and switches the header to it. `fullHeader`, when given,
   * builds the whole new header from the switched fields (header bytes 24..72, as the switch
   * writes them); it must fit in one 512-byte sector for the switch to stay atomic.
   */
  async commit(fullHeader?: (switchFields: Uint8Array) => Uint8Array): Promise<void> {
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
      countRange(snapshot.l1TableOffset, snapshot.l1Entries * 8);
      const l1 = await this.readHost(snapshot.l1TableOffset, snapshot.l1Entries * 8);
      const view = new DataView(l1.buffer);
      for (let i = 0; i < snapshot.l1Entries; i++) {
        const tableOffset = entryOffset(readEntry(view, i * 8));
        if (tableOffset === 0) continue;
        countRange(tableOffset, this.clusterSize);
        sharedTables.add(tableOffset);
        this.countDataReferences(await this.readHost(tableOffset, this.clusterSize), countRange);
      }
    }

    // 2. Active tables: data references now; the tables themselves once placed.
    const l1Size = this.activeL1.length;
    for (let i = 0; i < l1Size; i++) {
      const table = await this.activeTable(i);
      if (table) this.countDataReferences(table, countRange);
    }

    // 3. Active L2 tables: a private copy where a snapshot shares one, it was edited or its
    // COPIED flags are wrong; the L1 entries then all carry COPIED.
    const l1Bytes = new Uint8Array(l1Size * 8);
    const l1View = new DataView(l1Bytes.buffer);
    let l1Changed = l1Size !== this.header.l1Size;
    for (let i = 0; i < l1Size; i++) {
      const loaded = this.activeTables.get(i);
      let tableOffset = this.activeL1[i];
      if (loaded) {
        const flagsChanged = this.setCopiedFlags(loaded.bytes, counts);
        if (loaded.edited || flagsChanged || sharedTables.has(tableOffset) || tableOffset === 0) {
          tableOffset = this.allocate(1, loaded.bytes);
        }
      }
      if (tableOffset !== 0) {
        countRange(tableOffset, this.clusterSize);
        setTableEntry(l1View, i * 8, tableOffset, true);
      }
      const old = this.l1Entries[i];
      if (!old || old.high !== l1View.getUint32(i * 8) || old.low !== l1View.getUint32(i * 8 + 4)) l1Changed = true;
    }
    const l1TableOffset = !l1Changed ? this.header.l1TableOffset : l1Size === 0 ? 0 : this.allocate(clustersOf(l1Bytes.length), l1Bytes);
    if (l1Size > 0) countRange(l1TableOffset, l1Bytes.length);

    // 4. The snapshot table.
    const tableBytes = serializeSnapshotTable(this.snapshots);
    if (tableBytes.length > MAX_SNAPSHOT_TABLE_BYTES) throw new ImageError('INVALID_ARGUMENT', 'the snapshot table would exceed 64 MiB');
    const snapshotsOffset = tableBytes.length === 0 ? 0 : this.allocate(clustersOf(tableBytes.length), tableBytes);
    if (tableBytes.length > 0) countRange(snapshotsOffset, tableBytes.length);

    // 5. The refcount structure, counting itself.
    const refcount = this.placeRefcountStructure(counts);
    if (this.capacity && !this.capacity.fits(l1Size, refcount.tableClusters)) {
      throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', `the change needs an L1 table of ${l1Size} entries and a refcount table of ` +
        `${refcount.tableClusters} clusters, more than this open image holds in memory: close the image and change the file`);
    }

    // Write everything new, make it durable, then switch with one header write.
    const writes = [...this.newClusters].sort((a, b) => a[0] - b[0]);
    for (const [hostOffset, bytes] of writes) await this.backend.pwritev(hostOffset, [bytes]);
    for (const [hostOffset, bytes] of refcount.writes) await this.backend.pwritev(hostOffset, [bytes]);
    await this.backend.flush();

    const switchFields = new Uint8Array(HEADER_SWITCH_END - HEADER_SIZE_OFFSET);
    await this.backend.preadv(HEADER_SIZE_OFFSET, [switchFields]);
    const s = new DataView(switchFields.buffer);
    const virtualSize = this.virtualSize;
    s.setUint32(0, Math.floor(virtualSize / TWO_32));
    s.setUint32(4, virtualSize % TWO_32);
    s.setUint32(36 - 24, l1Size);
    s.setUint32(40 - 24, Math.floor(l1TableOffset / TWO_32));
    s.setUint32(44 - 24, l1TableOffset % TWO_32);
    s.setUint32(48 - 24, Math.floor(refcount.tableOffset / TWO_32));
    s.setUint32(52 - 24, refcount.tableOffset % TWO_32);
    s.setUint32(56 - 24, refcount.tableClusters);
    s.setUint32(60 - 24, this.snapshots.length);
    s.setUint32(64 - 24, Math.floor(snapshotsOffset / TWO_32));
    s.setUint32(68 - 24, snapshotsOffset % TWO_32);
    if (fullHeader) {
      const header = fullHeader(switchFields);
      if (header.length > this.clusterSize) throw new ImageError('INVALID_ARGUMENT', 'the new header does not fit in cluster 0');
      await this.writeHeader(header);
    } else if (this.header.flags.dirty) {
      // The recount made the refcounts exact: clear the dirty bit in the same write.
      const features = new Uint8Array(8);
      new DataView(features.buffer).setBigUint64(0, this.header.incompatibleFeatures & ~INCOMPATIBLE_DIRTY);
      await this.backend.pwritev(HEADER_SIZE_OFFSET, [switchFields, features]);
    } else {
      await this.backend.pwritev(HEADER_SIZE_OFFSET, [switchFields]);
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

  // Counts the clusters an L2 table's entries reference (data, allocated zero clusters, compressed).
  private countDataReferences(table: Uint8Array, countRange: (hostOffset: number, bytes: number) => void): void {
    const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
    const compressedShift = 70 - this.header.clusterBits - 32;
    const sectorsMask = (1 << (this.header.clusterBits - 8)) - 1;
    for (let at = 0; at < table.length; at += this.l2EntryBytes) {
      const e = readEntry(view, at);
      if (e.high & COMPRESSED_HIGH) {
        const hostOffset = (e.high & ((1 << compressedShift) - 1)) * TWO_32 + e.low;
        const sectors = ((e.high >>> compressedShift) & sectorsMask) + 1;
        const start = Math.floor(hostOffset / 512) * 512;
        countRange(start, sectors * 512);
        continue;
      }
      const hostOffset = entryOffset(e);
      if (hostOffset !== 0) countRange(hostOffset, this.clusterSize);
    }
  }

  // Sets COPIED on each standard entry with an offset exactly when its cluster's count is 1.
  // Returns true when a flag changed.
  private setCopiedFlags(table: Uint8Array, counts: ClusterCounts): boolean {
    const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
    let changed = false;
    for (let at = 0; at < table.length; at += this.l2EntryBytes) {
      const e = readEntry(view, at);
      if (e.high & COMPRESSED_HIGH) continue;
      const hostOffset = entryOffset(e);
      if (hostOffset === 0) continue;
      const wanted = counts.get(hostOffset / this.clusterSize) === 1 ? COPIED_HIGH : 0;
      if ((e.high & COPIED_HIGH) !== wanted) {
        view.setUint32(at, ((e.high & ~COPIED_HIGH) | wanted) >>> 0);
        changed = true;
      }
    }
    return changed;
  }

  // Places refcount blocks for every cluster in use and a refcount table for them (both counted
  // too), iterating until placing them needs nothing more. Returns what to write.
  private placeRefcountStructure(counts: ClusterCounts): { tableOffset: number; tableClusters: number; usedClusters: number; writes: [number, Uint8Array][] } {
    const refcountBits = 2 ** this.refcountOrder;
    const entriesPerBlock = (this.clusterSize * 8) / refcountBits;
    const maxCount = refcountBits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** refcountBits - 1;
    const blocks = new Map<number, number>();
    let table = { offset: 0, clusters: 0 };
    for (;;) {
      let changed = false;
      const usedEnd = counts.usedEnd();
      for (let block = 0; block * entriesPerBlock < usedEnd; block++) {
        if (blocks.has(block)) continue;
        let used = false;
        for (let c = block * entriesPerBlock; c < Math.min(usedEnd, (block + 1) * entriesPerBlock) && !used; c++) used = counts.get(c) > 0;
        if (!used) continue;
        const offset = this.allocate(1);
        counts.add(offset / this.clusterSize, 1);
        blocks.set(block, offset);
        changed = true;
      }
      const tableEntries = Math.ceil(counts.usedEnd() / entriesPerBlock);
      const tableClusters = Math.max(1, Math.ceil((tableEntries * 8) / this.clusterSize));
      if (tableClusters > table.clusters) {
        for (let c = 0; c < table.clusters; c++) counts.add(table.offset / this.clusterSize + c, -1);
        table = { offset: this.allocate(tableClusters), clusters: tableClusters };
        for (let c = 0; c < tableClusters; c++) counts.add(table.offset / this.clusterSize + c, 1);
        changed = true;
      }
      if (!changed) break;
    }
    const writes: [number, Uint8Array][] = [];
    const tableBytes = new Uint8Array(table.clusters * this.clusterSize);
    const tableView = new DataView(tableBytes.buffer);
    for (const [block, offset] of blocks) {
      const bytes = new Uint8Array(this.clusterSize);
      const first = block * entriesPerBlock;
      for (let i = 0; i < entriesPerBlock; i++) {
        const count = counts.get(first + i);
        if (count === 0) continue;
        if (count > maxCount) {
          const hostOffset = (first + i) * this.clusterSize;
          throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', this.refcountOrder < this.header.refcountOrder
            ? `Cannot decrease refcount entry width to ${refcountBits} bits: Cluster at offset 0x${hostOffset.toString(16)} has a refcount of ${count}`
            : `host cluster ${hostOffset} would need refcount ${count}, above the ${maxCount} that refcount_bits=${refcountBits} holds`);
        }
        writeRefcount(bytes, this.refcountOrder, i, count);
      }
      writes.push([offset, bytes]);
      tableView.setUint32(block * 8, Math.floor(offset / TWO_32));
      tableView.setUint32(block * 8 + 4, offset % TWO_32);
    }
    writes.push([table.offset, tableBytes]);
    return { tableOffset: table.offset, tableClusters: table.clusters, usedClusters: counts.usedEnd(), writes };
  }
}

/** Stores refcount `value` at entry `index` of a refcount block (sub-byte widths fill bytes from their low bits, as QEMU does). */
function writeRefcount(block: Uint8Array, order: number, index: number, value: number): void {
  const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
  if (order < 3) {
    const bits = 1 << order;
    const perByte = 8 / bits;
    const shift = (index % perByte) * bits;
    const at = Math.floor(index / perByte);
    block[at] = (block[at] & ~(((1 << bits) - 1) << shift)) | (value << shift);
  } else if (order === 3) block[index] = value;
  else if (order === 4) view.setUint16(index * 2, value);
  else if (order === 5) view.setUint32(index * 4, value);
  else {
    view.setUint32(index * 8, Math.floor(value / TWO_32));
    view.setUint32(index * 8 + 4, value % TWO_32);
  }
}

/** Reads refcount entry `index` of a refcount block. */
function readRefcount(block: Uint8Array, order: number, index: number): number {
  const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
  if (order < 3) {
    const bits = 1 << order;
    const perByte = 8 / bits;
    return (block[Math.floor(index / perByte)] >> ((index % perByte) * bits)) & ((1 << bits) - 1);
  }
  if (order === 3) return block[index];
  if (order === 4) return view.getUint16(index * 2);
  if (order === 5) return view.getUint32(index * 4);
  return view.getUint32(index * 8) * TWO_32 + view.getUint32(index * 8 + 4);
}

/** The stored refcounts of every cluster the refcount table covers. */
async function readRefcounts(backend: Backend, header: Qcow2Header): Promise<ClusterCounts> {
  const counts = new ClusterCounts();
  const table = new Uint8Array(header.refcountTableClusters * header.clusterSize);
  await backend.preadv(header.refcountTableOffset, [table]);
  const view = new DataView(table.buffer);
  const entriesPerBlock = (header.clusterSize * 8) / 2 ** header.refcountOrder;
  const block = new Uint8Array(header.clusterSize);
  for (let i = 0; i < table.length / 8; i++) {
    const offset = view.getUint32(i * 8) * TWO_32 + ((view.getUint32(i * 8 + 4) & OFFSET_LOW_MASK) >>> 0);
    if (offset === 0) continue;
    await backend.preadv(offset, [block]);
    for (let j = 0; j < entriesPerBlock; j++) {
      const count = readRefcount(block, header.refcountOrder, j);
      if (count > 0) counts.add(i * entriesPerBlock + j, Math.min(count, 0xffffffff));
    }
  }
  return counts;
}

/** The snapshot table's bytes: each entry padded to 8 bytes. */
function serializeSnapshotTable(entries: readonly SnapshotTableEntry[]): Uint8Array {
  let length = 0;
  for (const e of entries) length += (e.bytes.length + 7) & ~7;
  const table = new Uint8Array(length);
  let at = 0;
  for (const e of entries) {
    table.set(e.bytes, at);
    at += (e.bytes.length + 7) & ~7;
  }
  return table;
}

/** What a new snapshot table entry records. */
export interface NewSnapshotEntry {
  id: string;
  name: string;
  l1TableOffset: number;
  l1Entries: number;
  dateSeconds: number;
  dateNanoseconds: number;
  vmClockNanoseconds: number;
  vmStateBytes: number;
  diskBytes: number;
  icount: number;
}

/**
 * A snapshot table entry as QEMU 7.2 writes one: the 40-byte header, 24 bytes of extra data
 * (64-bit VM state size, virtual disk size, instruction count), the id and the name.
 */
export function snapshotEntryBytes(e: NewSnapshotEntry): SnapshotTableEntry {
  const encoder = new TextEncoder();
  const id = encoder.encode(e.id);
  const name = encoder.encode(e.name);
  if (id.length > 0xffff || name.length > 0xffff) throw new ImageError('INVALID_ARGUMENT', 'a snapshot name or id is longer than 65535 bytes');
  const bytes = new Uint8Array(64 + id.length + name.length);
  const v = new DataView(bytes.buffer);
  const set64 = (at: number, value: number) => {
    v.setUint32(at, Math.floor(value / TWO_32) >>> 0);
    v.setUint32(at + 4, value % TWO_32);
  };
  set64(0, e.l1TableOffset);
  v.setUint32(8, e.l1Entries);
  v.setUint16(12, id.length);
  v.setUint16(14, name.length);
  v.setUint32(16, e.dateSeconds);
  v.setUint32(20, e.dateNanoseconds);
  set64(24, e.vmClockNanoseconds);
  v.setUint32(32, e.vmStateBytes % TWO_32);
  v.setUint32(36, 24);
  set64(40, e.vmStateBytes);
  set64(48, e.diskBytes);
  if (e.icount < 0) {
    v.setUint32(56, 0xffffffff);
    v.setUint32(60, 0xffffffff);
  } else set64(56, e.icount);
  bytes.set(id, 64);
  bytes.set(name, 64 + id.length);
  return { id: e.id, name: e.name, l1TableOffset: e.l1TableOffset, l1Entries: e.l1Entries, bytes };
}
