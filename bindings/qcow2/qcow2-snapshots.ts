// SPDX-License-Identifier: MIT
// Listing a qcow2 image's internal snapshots: reads the snapshot table in 64 KiB windows into a
// core's HEADER region and lets the wasm parser (assembly/snapshot.ts) decode each entry.

import type { Backend } from '../backends/backend.js';
import type { Qcow2Header } from './qcow2-header.js';
import { ImageError } from '../base/errors.js';
import { instantiateCore } from '../core/wasm.js';
import { headerRegionView } from './qcow2-metadata-codec.js';

/** One internal snapshot, as the snapshot table records it. */
export interface Qcow2Snapshot {
  /** The snapshot's unique id string ("1", "2", ... as QEMU assigns them). */
  id: string;
  /** The snapshot's name (may be empty; need not be unique). */
  name: string;
  /** Creation time: seconds since the Unix epoch. */
  dateSeconds: number;
  /** Creation time: the nanoseconds within `dateSeconds`. */
  dateNanoseconds: number;
  /** Guest run time when it was taken, in nanoseconds. */
  vmClockNanoseconds: number;
  /** Bytes of saved VM state (0 for a disk-only snapshot). */
  vmStateBytes: number;
  /** Virtual disk size when it was taken, where the entry records it. */
  diskBytes?: number;
  /** Instruction count when it was taken, where recorded. */
  icount?: number;
  /** Host offset of the snapshot's L1 table in the image file. */
  l1TableOffset: number;
  /** Entries in the snapshot's L1 table. */
  l1Entries: number;
}

/**
 * Lists the snapshots of the image in `backend` whose parsed header is `header`, in table order.
 * Throws QCOW2_CORRUPT for an invalid entry, QCOW2_UNSUPPORTED_FEATURE for an entry over 64 KiB.
 */
export async function listSnapshots(backend: Backend, header: Qcow2Header): Promise<Qcow2Snapshot[]> {
  return (await readSnapshotTable(backend, header)).snapshots;
}

/**
 * Like listSnapshots, and also how many bytes the table spans from header.snapshotsOffset (the
 * entries with their padding; 0 without snapshots): what the overlap guard protects; and each
 * entry's bytes as stored, without padding (what a rewrite of the table keeps).
 */
export async function readSnapshotTable(backend: Backend, header: Qcow2Header): Promise<{ snapshots: Qcow2Snapshot[]; tableBytes: number; entryBytes: Uint8Array[] }> {
  if (header.snapshotCount === 0) return { snapshots: [], tableBytes: 0, entryBytes: [] };
  const core = await instantiateCore();
  const x = core.exports;
  const window = headerRegionView(core);
  const windowBytes = window.length;
  const text = new TextDecoder();
  const snapshots: Qcow2Snapshot[] = [];
  const entryBytes: Uint8Array[] = [];
  let windowStart = header.snapshotsOffset;
  let available = 0;
  let at = 0;
  while (snapshots.length < header.snapshotCount) {
    const length = x.parseSnapshotEntry(at, available);
    if (length < 0) throw new ImageError('QCOW2_CORRUPT', `snapshot ${snapshots.length + 1}: invalid snapshot table entry`);
    if (length === 0) {
      if (at === 0 && available === windowBytes) {
        throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', `snapshot ${snapshots.length + 1}: a snapshot table entry over ${windowBytes} bytes`);
      }
      windowStart += at;
      await backend.preadv(windowStart, [window]);
      available = windowBytes;
      at = 0;
      continue;
    }
    const idStart = at + x.snapshotIdStart();
    const idEnd = idStart + x.snapshotIdLength();
    const diskBytes = x.snapshotDiskBytes();
    const icount = x.snapshotIcount();
    snapshots.push({
      id: text.decode(window.subarray(idStart, idEnd)),
      name: text.decode(window.subarray(idEnd, idEnd + x.snapshotNameLength())),
      dateSeconds: x.snapshotDateSeconds(), dateNanoseconds: x.snapshotDateNanoseconds(),
      vmClockNanoseconds: x.snapshotVmClockNanoseconds(), vmStateBytes: x.snapshotVmStateBytes(),
      ...(diskBytes >= 0 ? { diskBytes } : {}), ...(icount >= 0 ? { icount } : {}),
      l1TableOffset: x.snapshotL1Offset(), l1Entries: x.snapshotL1Entries() >>> 0,
    });
    entryBytes.push(window.slice(at, idEnd + x.snapshotNameLength()));
    at += length;
  }
  return { snapshots, tableBytes: windowStart + at - header.snapshotsOffset, entryBytes };
}
