// SPDX-License-Identifier: MIT
// Internal snapshots of a qcow2 image, as QEMU keeps them: create (with optional VM state, stored
// past the virtual disk in the snapshot's own L1 table, where QEMU's savevm puts it), apply and
// delete. Each is one crash-safe ShadowUpdate (bindings/qcow2-shadow-update.ts) on an image no
// one else writes: Qcow2Image's snapshot methods flush and reload around these functions.

import type { Backend } from './backend.js';
import { ImageError } from './errors.js';
import { listSnapshots, type Qcow2Snapshot } from './qcow2-snapshots.js';
import { MAX_SNAPSHOTS, ShadowUpdate, snapshotEntryBytes, readQcow2Header, setTableEntry, tableEntryOffset, type TableCapacity } from './qcow2-shadow-update.js';

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
  const stored = new Uint8Array(update.header.l1Size * 8);
  if (stored.length > 0) await backend.preadv(update.header.l1TableOffset, [stored]);
  const vmClusters = Math.ceil(vmState.length / clusterSize);
  const vmTables = Math.ceil(vmClusters / update.l2Entries);
  const l1Entries = Math.max(update.activeL1.length, vmIndex + vmTables);
  const l1 = new Uint8Array(Math.max(l1Entries * 8, 8));
  l1.set(stored.subarray(0, diskEntries * 8));
  if (vmClusters > 0) {
    const dataOffset = update.allocate(vmClusters, vmState);
    const l1View = new DataView(l1.buffer);
    for (let t = 0; t < vmTables; t++) {
      const table = new Uint8Array(clusterSize);
      const view = new DataView(table.buffer);
      for (let e = 0; e < update.l2Entries && t * update.l2Entries + e < vmClusters; e++) {
        const hostOffset = dataOffset + (t * update.l2Entries + e) * clusterSize;
        setTableEntry(view, e * update.l2EntryBytes, hostOffset, true);
        // Extended L2: all 32 subclusters allocated.
        if (update.l2EntryBytes === 16) view.setUint32(e * 16 + 12, 0xffffffff);
      }
      setTableEntry(l1View, (vmIndex + t) * 8, update.allocate(1, table), true);
    }
  }
  const l1TableOffset = update.allocate(Math.ceil(l1.length / clusterSize), l1);
  // QEMU drops the VM state from the active image once a snapshot holds it.
  for (let i = vmIndex; i < update.activeL1.length; i++) update.dropActiveTable(i);

  const date = options.date ?? new Date();
  const milliseconds = date.getTime();
  const entry = snapshotEntryBytes({
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
  const l1 = new Uint8Array(diskEntries * 8);
  if (l1.length > 0) await backend.preadv(snapshot.l1TableOffset, [l1]);
  const view = new DataView(l1.buffer);
  for (let i = 0; i < update.activeL1.length; i++) update.dropActiveTable(i);
  while (update.activeL1.length < diskEntries) update.activeL1.push(0);
  for (let i = 0; i < diskEntries; i++) {
    const tableOffset = tableEntryOffset(view, i * 8);
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
  const entryBytes = header.flags.extendedL2 ? 16 : 8;
  const l2Entries = clusterSize / entryBytes;
  const l2Span = clusterSize * l2Entries;
  const vmIndex = Math.ceil((snapshot.diskBytes ?? header.virtualSize) / l2Span);
  const state = new Uint8Array(snapshot.vmStateBytes);
  const tables = Math.ceil(state.length / l2Span);
  if (vmIndex + tables > snapshot.l1Entries) {
    throw new ImageError('QCOW2_CORRUPT', `snapshot '${snapshot.name}': its VM state reaches past its L1 table of ${snapshot.l1Entries} entries`);
  }
  if (tables === 0) return state;
  const l1 = new Uint8Array(tables * 8);
  await backend.preadv(snapshot.l1TableOffset + vmIndex * 8, [l1]);
  const l1View = new DataView(l1.buffer);
  const table = new Uint8Array(clusterSize);
  const tableView = new DataView(table.buffer);
  for (let t = 0; t < tables; t++) {
    const tableOffset = tableEntryOffset(l1View, t * 8);
    if (tableOffset === 0) continue;
    await backend.preadv(tableOffset, [table]);
    for (let e = 0; e < l2Entries; e++) {
      const start = t * l2Span + e * clusterSize;
      if (start >= state.length) break;
      const high = tableView.getUint32(e * entryBytes);
      const low = tableView.getUint32(e * entryBytes + 4);
      if (high & 0x40000000) throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', `snapshot '${snapshot.name}': compressed VM state is not supported`);
      const hostOffset = tableEntryOffset(tableView, e * entryBytes);
      const zero = header.version === 3 && (entryBytes === 8 ? (low & 1) !== 0 : tableView.getUint32(e * 16 + 8) === 0xffffffff);
      if (hostOffset === 0 || zero) continue;
      await backend.preadv(hostOffset, [state.subarray(start, Math.min(state.length, start + clusterSize))]);
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
