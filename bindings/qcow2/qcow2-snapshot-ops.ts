// SPDX-License-Identifier: MIT
// Internal snapshots of a qcow2 image, as QEMU keeps them: create (with optional VM state, stored
// past the virtual disk in the snapshot's own L1 table, where QEMU's savevm puts it), apply and
// delete. Each is one crash-safe ShadowUpdate (bindings/qcow2/qcow2-shadow-update.ts) on an image no
// one else writes: Qcow2Image's snapshot methods flush and reload around these functions.

import type { Backend } from '../backends/backend.js';
import { ImageError } from '../base/errors.js';
import { listSnapshots, type Qcow2Snapshot } from './qcow2-snapshots.js';
import { MAX_SNAPSHOTS, ShadowUpdate, readQcow2Header, type TableCapacity } from './qcow2-shadow-update.js';
import { renderSnapshotEntry } from './qcow2-snapshot-entries.js';
import { TableCodec, type L2Geometry } from './qcow2-metadata-codec.js';

/** Options of createSnapshot. */
export interface CreateSnapshotOptions {
  /** Machine state to keep with the snapshot (an emulator's save state), read back by readSnapshotVmState. */
  vmState?: Uint8Array;
  /** Guest run time at the snapshot, in nanoseconds (default 0). */
  vmClockNanoseconds?: number;
  /** Creation time (default now). */
  date?: Date;
}


/** An ImageError for a snapshot name no snapshot has. */
export class SnapshotNotFoundError extends ImageError {
  /** @param snapshotName The name (or id) no snapshot has. */
  constructor(readonly snapshotName: string) {
    super('INVALID_ARGUMENT', `no snapshot named '${snapshotName}'`);
  }
}
SnapshotNotFoundError.prototype.name = 'SnapshotNotFoundError';

/**
 * Creates snapshot `name` of the image in `backend` (writable, not open elsewhere for writing):
 * the snapshot keeps the current L2 tables and the active image continues on private copies;
 * every cluster they share is counted twice. Names need not be unique (as in QEMU); the id is
 * one above the highest numeric id. Returns the new snapshot as listSnapshots reports it.
 * `capacity` bounds the tables for an image open meanwhile (Qcow2Image passes it). Throws
 * INVALID_ARGUMENT for a name that is not a string or too many snapshots, and ShadowUpdate's errors.
 */
export async function createSnapshot(backend: Backend, name: string, options: CreateSnapshotOptions = {}, capacity?: TableCapacity): Promise<Qcow2Snapshot> {
  if (typeof name !== 'string') throw new ImageError('INVALID_ARGUMENT', 'a snapshot name must be a string');
  const update = await ShadowUpdate.begin(backend, capacity);
  if (update.snapshots.length >= MAX_SNAPSHOTS) throw new ImageError('INVALID_ARGUMENT', `the image already has ${MAX_SNAPSHOTS} snapshots, QEMU's maximum`);
  const clusterSize = update.clusterSize;
  const vmIndex = update.vmStateL1Index();
  const vmState = options.vmState ?? new Uint8Array(0);

  // The snapshot's L1 table: the disk's part of the active L1 as stored, then the VM state's L2 tables.
  const diskEntries = Math.min(update.activeL1.length, vmIndex);
  const stored = new Uint8Array(TableCodec.pointerTableBytes(update.header.l1Size));
  if (stored.length > 0) await backend.preadv(update.header.l1TableOffset, [stored]);
  const vmClusters = Math.ceil(vmState.length / clusterSize);
  const vmTables = Math.ceil(vmClusters / update.l2Entries);
  const l1Entries = Math.max(update.activeL1.length, vmIndex + vmTables);
  const l1 = new Uint8Array(TableCodec.pointerTableBytes(Math.max(l1Entries, 1)));
  l1.set(stored.subarray(0, TableCodec.pointerTableBytes(diskEntries)));
  if (vmClusters > 0) {
    const dataOffset = update.allocate(vmClusters, vmState);
    const tableOffsets: number[] = [];
    for (let t = 0; t < vmTables; t++) {
      const dataOffsets: number[] = [];
      for (let e = 0; e < update.l2Entries && t * update.l2Entries + e < vmClusters; e++) dataOffsets.push(dataOffset + (t * update.l2Entries + e) * clusterSize);
      tableOffsets.push(update.allocate(1, update.codec.dataL2Table(update.geometry, dataOffsets)));
    }
    update.codec.setL1Offsets(l1, vmIndex, tableOffsets, true);
  }
  const l1TableOffset = update.allocate(Math.ceil(l1.length / clusterSize), l1);
  // QEMU drops the VM state from the active image once a snapshot holds it.
  for (let i = vmIndex; i < update.activeL1.length; i++) update.dropActiveTable(i);

  const date = options.date ?? new Date();
  const milliseconds = date.getTime();
  const entry = await renderSnapshotEntry({
    id: String(nextSnapshotId(update.snapshots.map((s) => s.id))), name, l1TableOffset, l1Entries,
    dateSeconds: Math.floor(milliseconds / 1000), dateNanoseconds: (milliseconds % 1000) * 1e6,
    vmClockNanoseconds: options.vmClockNanoseconds ?? 0, vmStateBytes: vmState.length, diskBytes: update.virtualSize, icount: 0,
  });
  update.snapshots.push(entry);
  await update.commit();
  const snapshots = await listSnapshots(backend, await readQcow2Header(backend));
  return snapshots[snapshots.length - 1];
}

/**
 * Makes the active image what snapshot `nameOrId` (its id, else its name) holds: the active L1
 * table takes the disk's part of the snapshot's, with private copies of the L2 tables (QEMU
 * also copies the VM state's part; it stays in the snapshot here, so the active L1 table and the
 * memory of an open image's core never grow). Throws SnapshotNotFoundError, QCOW2_UNSUPPORTED_FEATURE for a snapshot of
 * another disk size (QEMU refuses those too), and ShadowUpdate.begin's errors.
 */
export async function applySnapshot(backend: Backend, nameOrId: string, capacity?: TableCapacity): Promise<Qcow2Snapshot> {
  const update = await ShadowUpdate.begin(backend, capacity);
  const snapshots = await listSnapshots(backend, update.header);
  const snapshot = snapshots.find((s) => s.id === nameOrId) ?? snapshots.find((s) => s.name === nameOrId);
  if (!snapshot) throw new SnapshotNotFoundError(nameOrId);
  if (snapshot.diskBytes !== undefined && snapshot.diskBytes !== update.virtualSize) {
    throw new ImageError('QCOW2_UNSUPPORTED_FEATURE',
      `snapshot '${snapshot.name}' has disk size ${snapshot.diskBytes}, the image ${update.virtualSize}: loading snapshots with a different disk size is not supported`);
  }
  // The disk's part of the snapshot's L1 table; its VM state stays in the snapshot (readSnapshotVmState).
  const diskEntries = Math.min(snapshot.l1Entries, update.vmStateL1Index());
  const l1 = new Uint8Array(TableCodec.pointerTableBytes(diskEntries));
  if (l1.length > 0) await backend.preadv(snapshot.l1TableOffset, [l1]);
  for (let i = 0; i < update.activeL1.length; i++) update.dropActiveTable(i);
  while (update.activeL1.length < diskEntries) update.activeL1.push(0);
  for (const [i, tableOffset] of update.codec.l1Offsets(l1).entries()) {
    if (tableOffset === 0) continue;
    // A private copy of the snapshot's table (the recount sets its COPIED flags).
    update.setActiveTable(i, await update.readTable(tableOffset));
  }
  await update.commit();
  return snapshot;
}

/**
 * Deletes the first snapshot named `name` (QEMU's qemu-img snapshot -d matches names only):
 * its snapshot table entry goes, and every cluster only it reached is freed. Throws
 * SnapshotNotFoundError and ShadowUpdate.begin's errors.
 */
export async function deleteSnapshot(backend: Backend, name: string, capacity?: TableCapacity): Promise<Qcow2Snapshot> {
  const update = await ShadowUpdate.begin(backend, capacity);
  const snapshots = await listSnapshots(backend, update.header);
  const index = snapshots.findIndex((s) => s.name === name);
  if (index < 0) throw new SnapshotNotFoundError(name);
  update.snapshots.splice(index, 1);
  await update.commit();
  return snapshots[index];
}

/**
 * The VM state saved with snapshot `nameOrId` (its id, else its name): vmStateBytes bytes read
 * through the snapshot's L1 table from the first L2 table past the virtual disk. Unallocated and
 * zero clusters read as zeros. Throws SnapshotNotFoundError, QCOW2_UNSUPPORTED_FEATURE for a
 * compressed cluster in the VM state, QCOW2_CORRUPT for a VM state past the snapshot's L1 table.
 */
export async function readSnapshotVmState(backend: Backend, nameOrId: string): Promise<Uint8Array> {
  const header = await readQcow2Header(backend);
  const snapshots = await listSnapshots(backend, header);
  const snapshot = snapshots.find((s) => s.id === nameOrId) ?? snapshots.find((s) => s.name === nameOrId);
  if (!snapshot) throw new SnapshotNotFoundError(nameOrId);
  const clusterSize = header.clusterSize;
  const geometry: L2Geometry = { clusterBits: header.clusterBits, extendedL2: header.flags.extendedL2, version: header.version };
  const l2Entries = clusterSize / TableCodec.l2EntryBytes(geometry);
  const l2Span = clusterSize * l2Entries;
  const vmIndex = Math.ceil((snapshot.diskBytes ?? header.virtualSize) / l2Span);
  const state = new Uint8Array(snapshot.vmStateBytes);
  const tables = Math.ceil(state.length / l2Span);
  if (vmIndex + tables > snapshot.l1Entries) {
    throw new ImageError('QCOW2_CORRUPT', `snapshot '${snapshot.name}': its VM state reaches past its L1 table of ${snapshot.l1Entries} entries`);
  }
  if (tables === 0) return state;
  const codec = await TableCodec.load();
  const l1 = new Uint8Array(TableCodec.pointerTableBytes(tables));
  await backend.preadv(snapshot.l1TableOffset + TableCodec.pointerTableBytes(vmIndex), [l1]);
  const table = new Uint8Array(clusterSize);
  for (const [t, tableOffset] of codec.l1Offsets(l1).entries()) {
    if (tableOffset === 0) continue;
    await backend.preadv(tableOffset, [table]);
    for (let e = 0; e < l2Entries; e++) {
      const start = t * l2Span + e * clusterSize;
      if (start >= state.length) break;
      const entry = codec.l2Entry(table, geometry, e);
      if (entry.compressed) throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', `snapshot '${snapshot.name}': compressed VM state is not supported`);
      if (entry.hostOffset === 0 || entry.readsAsZeros) continue;
      await backend.preadv(entry.hostOffset, [state.subarray(start, Math.min(state.length, start + clusterSize))]);
    }
  }
  return state;
}

/** One above the highest numeric id (QEMU's choice for a new snapshot's id). */
function nextSnapshotId(ids: readonly string[]): number {
  let highest = 0;
  for (const id of ids) {
    const n = Number.parseInt(id, 10);
    if (Number.isSafeInteger(n) && n > highest) highest = n;
  }
  return highest + 1;
}
