// SPDX-License-Identifier: MIT
// Changing a qcow2 image's format options in place (qemu-img amend): compat level 0.10 / 1.1,
// lazy refcounts, refcount width, virtual size. One crash-safe ShadowUpdate rebuilds the refcount
// structure at the new width and writes the new header in the same switch.

import type { Backend } from '../backends/backend.js';
import { ImageError } from '../base/errors.js';
import { ShadowUpdate } from '../qcow2/qcow2-shadow-update.js';
import { TableCodec } from '../qcow2/qcow2-metadata-codec.js';
import { currentHeaderFields, serializeHeader } from '../qcow2/qcow2-header-write.js';
import { resizeQcow2 } from './resize.js';

/** What amendQcow2 changes; absent fields stay as they are. */
export interface AmendOptions {
  /** Compatibility level: '0.10' (version 2) or '1.1' (version 3). */
  compat?: '0.10' | '1.1';
  /** Lazy refcounts on or off (version 3 only). */
  lazyRefcounts?: boolean;
  /** Refcount entry width: a power of two from 1 to 64 (16 for version 2). */
  refcountBits?: number;
  /** New virtual size in bytes (growing; shrinking needs `shrink`). */
  virtualSize?: number;
  /** Allow `virtualSize` below the current size. */
  shrink?: boolean;
}

const INCOMPATIBLE_DIRTY = 1n;
const COMPATIBLE_LAZY_REFCOUNTS = 1n;

/**
 * Amends the qcow2 image in `backend` (writable, not open elsewhere). Errors (INVALID_ARGUMENT,
 * worded as qemu-img words them): a refcount width that is not a power of two up to 64, compat
 * 0.10 with lazy refcounts, another refcount width or incompatible features (extended L2, zstd); a
 * refcount width too narrow for the counts (QCOW2_UNSUPPORTED_FEATURE); and ShadowUpdate.begin's errors.
 */
export async function amendQcow2(backend: Backend, options: AmendOptions): Promise<void> {
  const bits = options.refcountBits;
  if (bits !== undefined && (!Number.isInteger(bits) || bits < 1 || bits > 64 || (bits & (bits - 1)) !== 0)) {
    throw new ImageError('INVALID_ARGUMENT', 'Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (options.virtualSize !== undefined) await resizeQcow2(backend, options.virtualSize, { shrink: options.shrink });
  const update = await ShadowUpdate.begin(backend);
  const header = update.header;
  const fields = currentHeaderFields(header);
  if (options.compat !== undefined) fields.version = options.compat === '0.10' ? 2 : 3;
  if (bits !== undefined) fields.refcountOrder = Math.log2(bits);
  let lazy = (header.compatibleFeatures & COMPATIBLE_LAZY_REFCOUNTS) !== 0n;
  if (options.lazyRefcounts !== undefined) lazy = options.lazyRefcounts;
  if (fields.version === 2) {
    if (bits !== undefined && bits !== 16) {
      throw new ImageError('INVALID_ARGUMENT', 'Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
    }
    if (fields.refcountOrder !== 4) throw new ImageError('INVALID_ARGUMENT', 'compat=0.10 requires refcount_bits=16');
    if (options.lazyRefcounts === true) throw new ImageError('INVALID_ARGUMENT', 'Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)');
    const incompatible = header.incompatibleFeatures & ~INCOMPATIBLE_DIRTY;
    if (incompatible !== 0n) throw new ImageError('INVALID_ARGUMENT', `Cannot downgrade an image with incompatible features 0x${incompatible.toString(16)} set`);
    lazy = false;
    if (header.version === 3) await expandZeroClusters(update);
  }
  // The recount makes the refcounts exact, so a dirty image becomes clean.
  fields.incompatibleFeatures &= ~INCOMPATIBLE_DIRTY;
  fields.compatibleFeatures = lazy ? fields.compatibleFeatures | COMPATIBLE_LAZY_REFCOUNTS : fields.compatibleFeatures & ~COMPATIBLE_LAZY_REFCOUNTS;
  if (fields.version === 2) fields.incompatibleFeatures = fields.compatibleFeatures = fields.autoclearFeatures = 0n;
  update.refcountOrder = fields.refcountOrder;
  await update.commit((switchFields) => serializeHeader(header, fields, switchFields));
}

// Version 2 has no zero flag: zero clusters become unallocated (reading as zeros without a
// backing file) or, over a backing file, clusters of zeros; in the active tables and in every
// snapshot's (which then get new L2 and L1 tables).
async function expandZeroClusters(update: ShadowUpdate): Promise<void> {
  const { codec, geometry } = update;
  const backing = update.header.backingFile !== undefined;
  const zeroCluster = new Uint8Array(update.clusterSize);
  // Rewrites the zero entries of `table` in place; true when there were any.
  const expand = (table: Uint8Array): boolean => codec.replaceZeroFlagged(table, geometry, () => (backing ? update.allocate(1, zeroCluster) : 0));
  for (let i = 0; i < update.activeL1.length; i++) {
    const table = await update.activeTable(i);
    if (table && expand(table)) update.setActiveTable(i, table);
  }
  const copies = new Map<number, number>();
  for (const [index, snapshot] of update.snapshots.entries()) {
    if (snapshot.l1Entries === 0) continue;
    const l1 = (await update.readHost(snapshot.l1TableOffset, TableCodec.pointerTableBytes(snapshot.l1Entries))).slice();
    let changed = false;
    for (const [i, tableOffset] of codec.l1Offsets(l1).entries()) {
      if (tableOffset === 0) continue;
      let copy = copies.get(tableOffset);
      if (copy === undefined) {
        const table = await update.readTable(tableOffset);
        copy = expand(table) ? update.allocate(1, table) : tableOffset;
        copies.set(tableOffset, copy);
      }
      if (copy === tableOffset) continue;
      codec.setL1Offsets(l1, i, [copy], false);
      changed = true;
    }
    if (changed) await update.replaceSnapshotL1(index, l1);
  }
}
