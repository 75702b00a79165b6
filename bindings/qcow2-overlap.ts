// SPDX-License-Identifier: MIT
// Metadata overlap checks before host writes (QEMU's qcow2_check_metadata_overlap, default
// "cached" mode): a write to the image file must not touch the header cluster, the active L1
// table, an active L2 table, the refcount table, a refcount block, the snapshot table or a
// snapshot's L1 table, except the structure it writes. On a hostile or corrupted image such a
// write would destroy metadata; instead it is refused with QCOW2_CORRUPT, the image is marked
// corrupt (incompatible bit 1, on version 3 images, as QEMU does) and every later write refused.

import type { Backend } from './backend.js';
import type { Qcow2Header } from './qcow2-header.js';
import type { Qcow2Core } from './qcow2-core.js';
import { ImageError } from './errors.js';
import { readSnapshotTable } from './qcow2-snapshots.js';

/** What a host write to the image file carries; it may overlap only its own kind of structure. */
export type HostWriteKind = 'data' | 'header' | 'l1' | 'l2' | 'refcount-table' | 'refcount-block';

/** The metadata structures the guard protects (the names QEMU's messages use). */
export type MetadataKind = 'header' | 'active L1 table' | 'active L2 table' | 'refcount table' | 'refcount block'
  | 'snapshot table' | 'inactive L1 table';

/** Which protected structure a write of each kind is allowed to overlap. */
const OWN_KIND: Record<HostWriteKind, MetadataKind | undefined> = {
  data: undefined, header: 'header', l1: 'active L1 table', l2: 'active L2 table',
  'refcount-table': 'refcount table', 'refcount-block': 'refcount block',
};

/** Header byte offset of the incompatible feature bits, and the corrupt bit (qcow2 spec, "Header"). */
const INCOMPATIBLE_FEATURES_OFFSET = 72;
const INCOMPATIBLE_CORRUPT = 2n;
/** Masks of the offset bits of L1 and refcount table entries, split into 32-bit halves (bits 9..55 / 9..63). */
const L1_OFFSET_HIGH_MASK = 0x00ffffff;
const REFT_OFFSET_HIGH_MASK = 0xffffffff;
const OFFSET_LOW_MASK = 0xfffffe00;
/** QEMU's largest L1 table: 32 MiB of entries. */
const MAX_L1_ENTRIES = (32 << 20) / 8;

/**
 * Cluster indices referenced by one in-memory table (L2 tables from the L1 table, refcount blocks
 * from the refcount table), kept up to date by diffing the table's words against a shadow copy
 * whenever its change counter moves (new L2 tables and refcount blocks are rare).
 */
class ReferencedClusters {
  private shadow = new Uint32Array(0);
  private generation = -1;
  /** cluster index -> number of entries referencing it. */
  private readonly counts = new Map<number, number>();
  /** Entries whose offset is not cluster-aligned (corrupt: QEMU refuses to use them). */
  misaligned = 0;

  constructor(private readonly clusterBits: number, private readonly highMask: number) {}

  /** Brings the set up to date with `words` (big-endian entries as 32-bit words) at `generation`. */
  sync(words: Uint32Array, generation: number): void {
    if (generation === this.generation && words.length === this.shadow.length) return;
    const shared = Math.min(words.length, this.shadow.length);
    for (let i = 0; i < shared; i += 2) {
      if (words[i] !== this.shadow[i] || words[i + 1] !== this.shadow[i + 1]) {
        this.adjust(this.shadow, i, -1);
        this.adjust(words, i, 1);
      }
    }
    for (let i = shared; i < this.shadow.length; i += 2) this.adjust(this.shadow, i, -1);
    for (let i = shared; i < words.length; i += 2) this.adjust(words, i, 1);
    this.shadow = words.slice();
    this.generation = generation;
  }

  /** Makes the next sync() compare every entry (the table was reloaded). */
  invalidate(): void {
    this.generation = -1;
  }

  /** True when a cluster of [firstCluster, lastCluster] is referenced. */
  hasAny(firstCluster: number, lastCluster: number): boolean {
    if (lastCluster - firstCluster < this.counts.size) {
      for (let c = firstCluster; c <= lastCluster; c++) if (this.counts.has(c)) return true;
      return false;
    }
    for (const c of this.counts.keys()) if (c >= firstCluster && c <= lastCluster) return true;
    return false;
  }

  // Entries are big-endian u64: word i holds the high half, as the bytes are in memory order.
  private adjust(words: Uint32Array, i: number, delta: number): void {
    const high = byteSwap(words[i]) & this.highMask;
    const low = byteSwap(words[i + 1]) & OFFSET_LOW_MASK;
    if (high === 0 && low === 0) return;
    // Offsets above 2^53 lose precision here; such an entry is corrupt and never written through.
    const offset = high * 2 ** 32 + (low >>> 0);
    const cluster = Math.floor(offset / 2 ** this.clusterBits);
    if (cluster * 2 ** this.clusterBits !== offset) this.misaligned += delta;
    const count = (this.counts.get(cluster) ?? 0) + delta;
    if (count > 0) this.counts.set(cluster, count);
    else this.counts.delete(cluster);
  }
}

const byteSwap = (word: number): number =>
  (((word & 0xff) << 24) | ((word & 0xff00) << 8) | ((word >>> 8) & 0xff00) | (word >>> 24)) >>> 0;

/** What check() returns when the write may go ahead at once. */
const CLEAR: Promise<void> = Promise.resolve();

/** A byte range of the image file holding one fixed structure. */
interface FixedRange { kind: MetadataKind; start: number; end: number }

/**
 * Guards the host writes of one writable image. Call check() before each write to the image
 * file (not to an external data file); it resolves when the write may go ahead.
 */
export class Qcow2OverlapGuard {
  private corruptReason: string | undefined;
  private snapshotRanges: Promise<FixedRange[]> | undefined;
  /** What snapshotRanges resolved to, once it has (lets check() answer without a promise of its own). */
  private snapshotList: FixedRange[] | undefined;
  private readonly l2Tables: ReferencedClusters;
  private readonly refcountBlocks: ReferencedClusters;

  constructor(private readonly core: Qcow2Core, private readonly backend: Backend, private readonly header: Qcow2Header) {
    this.l2Tables = new ReferencedClusters(header.clusterBits, L1_OFFSET_HIGH_MASK);
    this.refcountBlocks = new ReferencedClusters(header.clusterBits, REFT_OFFSET_HIGH_MASK);
  }

  /** Forgets what it read of the tables (after the image's metadata was rewritten and reloaded). */
  forget(): void {
    this.snapshotRanges = undefined;
    this.snapshotList = undefined;
    this.l2Tables.invalidate();
    this.refcountBlocks.invalidate();
  }

  /** True once a refused write marked the image corrupt. */
  get isCorrupt(): boolean {
    return this.corruptReason !== undefined;
  }

  /**
   * Checks a write of `kind` to image-file bytes [hostOffset, hostOffset + lengthBytes), rounded
   * out to whole clusters as QEMU does. Data writes to an external data file are not checked.
   * Throws QCOW2_CORRUPT (and marks the image corrupt, once) when it overlaps a protected
   * structure other than its own kind, or when an earlier write was refused.
   */
  check(kind: HostWriteKind, hostOffset: number, lengthBytes: number): Promise<void> {
    if (kind === 'data' && this.header.flags.externalDataFile) return CLEAR;
    // The usual answer (nothing hit, tables known) comes without an async step.
    if (this.corruptReason === undefined && lengthBytes > 0 && this.snapshotList !== undefined) {
      const clusterSize = this.header.clusterSize;
      const start = Math.floor(hostOffset / clusterSize) * clusterSize;
      const end = Math.ceil((hostOffset + lengthBytes) / clusterSize) * clusterSize;
      if (this.overlappedIn(this.snapshotList, OWN_KIND[kind], start, end) === undefined) return CLEAR;
    }
    return this.checkWithTables(kind, hostOffset, lengthBytes);
  }

  private async checkWithTables(kind: HostWriteKind, hostOffset: number, lengthBytes: number): Promise<void> {
    if (this.corruptReason !== undefined) {
      throw new ImageError('QCOW2_CORRUPT', `the image was marked corrupt (${this.corruptReason}); writes are refused`);
    }
    if (lengthBytes <= 0) return;
    const clusterSize = this.header.clusterSize;
    const start = Math.floor(hostOffset / clusterSize) * clusterSize;
    const end = Math.ceil((hostOffset + lengthBytes) / clusterSize) * clusterSize;
    const hit = await this.overlappedStructure(OWN_KIND[kind], start, end);
    if (hit === undefined) return;
    const reason = hit === 'unaligned refcount block' ? 'a refcount table entry is not cluster-aligned'
      : `a ${kind} write to host offset ${hostOffset} (${lengthBytes} bytes) would overwrite the ${hit}`;
    await this.markCorrupt(reason);
    throw new ImageError('QCOW2_CORRUPT', `metadata overlap: ${reason}; the image is marked corrupt`);
  }

  // The first protected structure (other than `own`) in host bytes [start, end), or undefined.
  private async overlappedStructure(own: MetadataKind | undefined, start: number, end: number): Promise<MetadataKind | 'unaligned refcount block' | undefined> {
    return this.overlappedIn(await this.snapshots(), own, start, end);
  }

  // overlappedStructure with the snapshot ranges at hand.
  private overlappedIn(snapshotRanges: readonly FixedRange[], own: MetadataKind | undefined, start: number, end: number): MetadataKind | 'unaligned refcount block' | undefined {
    const h = this.header;
    const hits = (kind: MetadataKind, rangeStart: number, rangeEnd: number) => kind !== own && rangeStart < end && start < rangeEnd;
    if (hits('header', 0, h.clusterSize)) return 'header';
    if (hits('active L1 table', h.l1TableOffset, h.l1TableOffset + h.l1Size * 8)) return 'active L1 table';
    if (hits('refcount table', h.refcountTableOffset, h.refcountTableOffset + h.refcountTableClusters * h.clusterSize)) return 'refcount table';
    for (const range of snapshotRanges) {
      if (hits(range.kind, range.start, range.end)) return range.kind;
    }
    const tables = this.core.metadataTables();
    const firstCluster = start / h.clusterSize;
    const lastCluster = end / h.clusterSize - 1;
    if (own !== 'active L2 table') {
      this.l2Tables.sync(tables.l1, tables.l1Generation);
      if (this.l2Tables.hasAny(firstCluster, lastCluster)) return 'active L2 table';
    }
    this.refcountBlocks.sync(tables.reftable, tables.reftableGeneration);
    // Refcounts are read and written through every refcount block, so one out of line taints all.
    if (this.refcountBlocks.misaligned > 0) return 'unaligned refcount block';
    if (own !== 'refcount block' && this.refcountBlocks.hasAny(firstCluster, lastCluster)) return 'refcount block';
    return undefined;
  }

  // The snapshot table and the snapshots' L1 tables, read once (they do not change while open).
  private snapshots(): Promise<FixedRange[]> {
    if (this.snapshotRanges) return this.snapshotRanges;
    const loading: Promise<FixedRange[]> = (async () => {
      if (this.header.snapshotCount === 0) return [];
      const { snapshots, tableBytes } = await readSnapshotTable(this.backend, this.header);
      for (const s of snapshots) {
        // QEMU refuses such an image at open ("Snapshot L1 table too large" / "offset invalid").
        if (s.l1Entries > MAX_L1_ENTRIES || s.l1TableOffset % this.header.clusterSize !== 0) {
          throw new ImageError('QCOW2_CORRUPT', `snapshot '${s.id}': invalid L1 table (${s.l1Entries} entries at host offset ${s.l1TableOffset})`);
        }
      }
      return [
        { kind: 'snapshot table' as const, start: this.header.snapshotsOffset, end: this.header.snapshotsOffset + tableBytes },
        ...snapshots.map((s) => ({ kind: 'inactive L1 table' as const, start: s.l1TableOffset, end: s.l1TableOffset + s.l1Entries * 8 })),
      ];
    })();
    this.snapshotRanges = loading;
    void loading.then((ranges) => { if (this.snapshotRanges === loading) this.snapshotList = ranges; }, () => {});
    return loading;
  }

  // QEMU's qcow2_mark_corrupt: set incompatible bit 1 on disk (version 3 only; version 2 has no
  // feature bits) and make it durable. A failure to mark still refuses the write.
  private async markCorrupt(reason: string): Promise<void> {
    this.corruptReason = reason;
    if (this.header.version !== 3) return;
    try {
      const field = new Uint8Array(8);
      await this.backend.preadv(INCOMPATIBLE_FEATURES_OFFSET, [field]);
      const view = new DataView(field.buffer);
      view.setBigUint64(0, view.getBigUint64(0) | INCOMPATIBLE_CORRUPT);
      await this.backend.pwritev(INCOMPATIBLE_FEATURES_OFFSET, [field]);
      await this.backend.flush();
      this.header.incompatibleFeatures |= INCOMPATIBLE_CORRUPT;
      this.header.flags.corrupt = true;
    } catch {
      // The write is refused either way; the backend's failure surfaces on its next use.
    }
  }
}
