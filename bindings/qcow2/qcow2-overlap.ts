// SPDX-License-Identifier: MIT
// Metadata overlap checks before host writes (QEMU's qcow2_check_metadata_overlap, default
// "cached" mode): a write to the image file must not touch the header cluster, the active L1
// table, an active L2 table, the refcount table, a refcount block, the snapshot table or a
// snapshot's L1 table, except the structure it writes. On a hostile or corrupted image such a
// write would destroy metadata; instead it is refused with QCOW2_CORRUPT, the image is marked
// corrupt (incompatible bit 1, on version 3 images, as QEMU does) and every later write refused.

import { COMPLETED, type Backend } from '../backends/backend.js';
import type { Qcow2Header } from './qcow2-header.js';
import type { Qcow2Core } from './qcow2-core.js';
import { ImageError } from '../base/errors.js';
import { readSnapshotTable } from './qcow2-snapshots.js';
import { MetadataOverlap } from '../core/wasm.js';
import { markHeaderCorrupt } from './qcow2-header-write.js';

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

/** The corrupt bit of the incompatible feature bits (qcow2 spec, "Header"). */
const INCOMPATIBLE_CORRUPT = 2n;
/** QEMU's largest L1 table: 32 MiB of entries. */
const MAX_L1_ENTRIES = (32 << 20) / 8;


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

  constructor(private readonly core: Qcow2Core, private readonly backend: Backend, private readonly header: Qcow2Header) {}

  /** Forgets what it read of the tables (after the image's metadata was rewritten and reloaded). */
  forget(): void {
    this.snapshotRanges = undefined;
    this.snapshotList = undefined;
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
    return this.isClear(kind, hostOffset, lengthBytes) ? COMPLETED : this.checkWithTables(kind, hostOffset, lengthBytes);
  }

  /**
   * True when check() would let the write go ahead at once (the usual answer: nothing hit, tables
   * known); false when check() has to find out (or refuse).
   */
  isClear(kind: HostWriteKind, hostOffset: number, lengthBytes: number): boolean {
    if (kind === 'data' && this.header.flags.externalDataFile) return true;
    if (this.corruptReason !== undefined || lengthBytes <= 0 || this.snapshotList === undefined) return false;
    const clusterSize = this.header.clusterSize;
    const start = Math.floor(hostOffset / clusterSize) * clusterSize;
    const end = Math.ceil((hostOffset + lengthBytes) / clusterSize) * clusterSize;
    return this.overlappedIn(this.snapshotList, OWN_KIND[kind], start, end) === undefined;
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
    // The L2 tables and refcount blocks the in-memory tables reference now (assembly/table-index.ts).
    switch (this.core.instance.exports.tableOverlap(start / h.clusterSize, end / h.clusterSize - 1,
      own === 'active L2 table' ? 1 : 0, own === 'refcount block' ? 1 : 0)) {
      case MetadataOverlap.L2_TABLE: return 'active L2 table';
      case MetadataOverlap.UNALIGNED_REFCOUNT_BLOCK: return 'unaligned refcount block';
      case MetadataOverlap.REFCOUNT_BLOCK: return 'refcount block';
      default: return undefined;
    }
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
      if (await markHeaderCorrupt(this.backend)) await this.backend.flush();
      this.header.incompatibleFeatures |= INCOMPATIBLE_CORRUPT;
      this.header.flags.corrupt = true;
    } catch {
      // The write is refused either way; the backend's failure surfaces on its next use.
    }
  }
}
