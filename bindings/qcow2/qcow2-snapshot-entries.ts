// SPDX-License-Identifier: MIT
// Snapshot table entries as the snapshot tools rewrite the table: each entry's stored bytes with
// what they say, new entries rendered by the wasm core (assembly/snapshot.ts) as QEMU 7.2 writes
// them, an entry pointed at a new L1 table, and the table's bytes put back together.

import type { Backend } from '../backends/backend.js';
import type { Qcow2Header } from './qcow2-header.js';
import { ImageError } from '../base/errors.js';
import { readSnapshotTable } from './qcow2-snapshots.js';
import { sharedCore, type CoreExports, type CoreInstance } from '../core/wasm.js';
import { headerRegionView } from './qcow2-metadata-codec.js';

/** An entry of the snapshot table: its bytes as stored (padding excluded) and what they say. */
export interface SnapshotTableEntry {
  id: string;
  name: string;
  l1TableOffset: number;
  l1Entries: number;
  /** The entry's bytes (header, extra data, id, name), unpadded. */
  bytes: Uint8Array;
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
  /** Instruction count; negative: none recorded. */
  icount: number;
}

/** Entries are padded to a multiple of this many bytes in the table (qcow2 spec, "Snapshots"). */
const ENTRY_ALIGNMENT_BYTES = 8;

const paddedLength = (bytes: number) => Math.ceil(bytes / ENTRY_ALIGNMENT_BYTES) * ENTRY_ALIGNMENT_BYTES;

// The shared core's exports and its HEADER region, where entries are rendered and patched.
function entryWindow(core: CoreInstance): { x: CoreExports; window: Uint8Array } {
  return { x: core.exports, window: headerRegionView(core) };
}

/** The snapshot table entries of the image in `backend`, in table order. Throws as listSnapshots. */
export async function readSnapshotEntries(backend: Backend, header: Qcow2Header): Promise<SnapshotTableEntry[]> {
  const { snapshots, entryBytes } = await readSnapshotTable(backend, header);
  return snapshots.map((s, i) => ({ id: s.id, name: s.name, l1TableOffset: s.l1TableOffset, l1Entries: s.l1Entries, bytes: entryBytes[i] }));
}

/**
 * A new snapshot table entry as QEMU 7.2 writes one: the fixed part, 24 bytes of extra data (VM
 * state size, virtual disk size, instruction count), the id and the name. Throws
 * INVALID_ARGUMENT for an id or name over 65535 bytes (UTF-8).
 */
export async function renderSnapshotEntry(e: NewSnapshotEntry): Promise<SnapshotTableEntry> {
  const encoder = new TextEncoder();
  const id = encoder.encode(e.id);
  const name = encoder.encode(e.name);
  const { x, window } = entryWindow(await sharedCore());
  const idAt = x.renderSnapshotEntry(e.l1TableOffset, e.l1Entries, id.length, name.length, e.dateSeconds, e.dateNanoseconds,
    e.vmClockNanoseconds, e.vmStateBytes, e.diskBytes, e.icount);
  if (idAt < 0) throw new ImageError('INVALID_ARGUMENT', 'a snapshot name or id is longer than 65535 bytes');
  window.set(id, idAt);
  window.set(name, idAt + id.length);
  const bytes = window.slice(0, idAt + id.length + name.length);
  return { id: e.id, name: e.name, l1TableOffset: e.l1TableOffset, l1Entries: e.l1Entries, bytes };
}

/** `entry` pointing at the L1 table at `hostOffset` instead (same number of entries). */
export async function withSnapshotL1Table(entry: SnapshotTableEntry, hostOffset: number): Promise<SnapshotTableEntry> {
  const { x, window } = entryWindow(await sharedCore());
  window.set(entry.bytes);
  x.setSnapshotEntryL1Offset(0, hostOffset);
  return { ...entry, l1TableOffset: hostOffset, bytes: window.slice(0, entry.bytes.length) };
}

/** The snapshot table's bytes: each entry padded with zeros to a multiple of 8 bytes. */
export function snapshotTableBytes(entries: readonly SnapshotTableEntry[]): Uint8Array {
  let length = 0;
  for (const e of entries) length += paddedLength(e.bytes.length);
  const table = new Uint8Array(length);
  let at = 0;
  for (const e of entries) {
    table.set(e.bytes, at);
    at += paddedLength(e.bytes.length);
  }
  return table;
}
