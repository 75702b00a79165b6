// SPDX-License-Identifier: MIT
// Snapshot table entries (qcow2 spec, "Snapshots"), parsed one at a time from bytes TypeScript
// placed in the HEADER region, for listing snapshots; new entries rendered there, and an entry's
// L1 table pointer replaced, for the snapshot tools; and the readers of an entry's fixed part,
// which the consistency check's streaming parse (check-snapshots.ts) uses too.

import {
  SNAP_DATE_NANOSECONDS, SNAP_DATE_SECONDS, SNAP_EXTRA_DATA_SIZE, SNAP_EXTRA_DISK_SIZE, SNAP_EXTRA_ICOUNT,
  SNAP_EXTRA_VM_STATE_SIZE, SNAP_ID_SIZE, SNAP_L1_SIZE, SNAP_L1_TABLE_OFFSET, SNAP_NAME_SIZE,
  SNAP_VM_CLOCK_NANOSECONDS, SNAP_VM_STATE_SIZE, SNAPSHOT_HEADER_BYTES, MAX_SNAPSHOT_EXTRA_DATA_BYTES,
  loadBE16, loadBE32, loadBE64, storeBE16, storeBE32, storeBE64,
} from './format';
import { HEADER_REGION_BYTES, Region, regionOffset } from './layout';
import { Status } from './status';

let l1Offset: u64 = 0;
let l1Entries: u32 = 0;
let idBytes: u32 = 0;
let nameBytes: u32 = 0;
let dateSeconds: u32 = 0;
let dateNanoseconds: u32 = 0;
let vmClockNanoseconds: u64 = 0;
let vmStateBytes: u64 = 0;
let diskBytes: i64 = -1;
let icount: i64 = -1;
let snapshotIdOffset: u32 = 0;

// Readers of the fixed part of the snapshot table entry at linear-memory address `entry`.
/** Host offset of the entry's L1 table. */
@inline export function entryL1Offset(entry: usize): u64 { return loadBE64(entry + SNAP_L1_TABLE_OFFSET); }
/** Entries of the entry's L1 table. */
@inline export function entryL1Entries(entry: usize): u32 { return loadBE32(entry + SNAP_L1_SIZE); }
/** Bytes of the entry's id string. */
@inline export function entryIdBytes(entry: usize): u32 { return loadBE16(entry + SNAP_ID_SIZE); }
/** Bytes of the entry's name. */
@inline export function entryNameBytes(entry: usize): u32 { return loadBE16(entry + SNAP_NAME_SIZE); }
/** Bytes of the entry's extra data. */
@inline export function entryExtraBytes(entry: usize): u32 { return loadBE32(entry + SNAP_EXTRA_DATA_SIZE); }

/**
 * Parses the snapshot table entry at byte `at` of the HEADER region, of which `available` bytes
 * are valid. Returns the entry's length in bytes (padded to 8) when it lies entirely within the
 * available bytes, 0 when more bytes are needed (place the table from the entry's start and call
 * again), or -CORRUPT for extra data beyond QEMU's limit. The fields are read by the getters; the
 * id string starts 40 + extra bytes into the entry (snapshotIdOffset), the name right after it.
 */
export function parseSnapshotEntry(at: i32, available: i32): i32 {
  if (at < 0 || available < at) return -Status.INVALID;
  const entry = regionOffset(Region.HEADER) + <usize>at;
  const left = available - at;
  if (left < <i32>SNAPSHOT_HEADER_BYTES) return 0;
  const extraBytes = entryExtraBytes(entry);
  if (extraBytes > MAX_SNAPSHOT_EXTRA_DATA_BYTES) return -Status.CORRUPT;
  idBytes = entryIdBytes(entry);
  nameBytes = entryNameBytes(entry);
  const length = (SNAPSHOT_HEADER_BYTES + extraBytes + idBytes + nameBytes + 7) & ~<u32>7;
  if (<u32>left < length) return 0;
  l1Offset = entryL1Offset(entry);
  l1Entries = entryL1Entries(entry);
  dateSeconds = loadBE32(entry + SNAP_DATE_SECONDS);
  dateNanoseconds = loadBE32(entry + SNAP_DATE_NANOSECONDS);
  vmClockNanoseconds = loadBE64(entry + SNAP_VM_CLOCK_NANOSECONDS);
  vmStateBytes = loadBE32(entry + SNAP_VM_STATE_SIZE);
  // Extra data: 64-bit VM state size, virtual disk size, icount (each present if long enough).
  if (extraBytes >= 8) vmStateBytes = loadBE64(entry + SNAP_EXTRA_VM_STATE_SIZE);
  diskBytes = extraBytes >= 16 ? <i64>loadBE64(entry + SNAP_EXTRA_DISK_SIZE) : -1;
  icount = extraBytes >= 24 ? <i64>loadBE64(entry + SNAP_EXTRA_ICOUNT) : -1;
  snapshotIdOffset = SNAPSHOT_HEADER_BYTES + extraBytes;
  return <i32>length;
}

/** Offset of the parsed entry's id string from the entry's start (its name follows the id). */
export function snapshotIdStart(): i32 { return <i32>snapshotIdOffset; }
/** Bytes of the parsed entry's id string. */
export function snapshotIdLength(): i32 { return <i32>idBytes; }
/** Bytes of the parsed entry's name. */
export function snapshotNameLength(): i32 { return <i32>nameBytes; }
/** Host offset of the parsed entry's L1 table. */
export function snapshotL1Offset(): f64 { return <f64>l1Offset; }
/** Entries of the parsed entry's L1 table. */
export function snapshotL1Entries(): i32 { return <i32>l1Entries; }
/** Creation time of the parsed entry: seconds and nanoseconds since the epoch. */
export function snapshotDateSeconds(): f64 { return <f64>dateSeconds; }
export function snapshotDateNanoseconds(): f64 { return <f64>dateNanoseconds; }
/** Guest run time at the snapshot, in nanoseconds. */
export function snapshotVmClockNanoseconds(): f64 { return <f64>vmClockNanoseconds; }
/** Bytes of saved VM state. */
export function snapshotVmStateBytes(): f64 { return <f64>vmStateBytes; }
/** Virtual disk size at the snapshot, or -1 when the entry does not record it. */
export function snapshotDiskBytes(): f64 { return <f64>diskBytes; }
/** Instruction count at the snapshot, or -1 when absent or disabled. */
export function snapshotIcount(): f64 { return <f64>icount; }

/** Bytes of the extra data a new entry gets, as QEMU 7.2 writes it: VM state size, disk size, icount. */
const NEW_ENTRY_EXTRA_BYTES: u32 = 24;
const MAX_STRING_BYTES: i32 = 0xffff;

/**
 * Renders a new snapshot table entry at the start of the HEADER region as QEMU 7.2 writes one:
 * the fixed part and 24 bytes of extra data (64-bit VM state size, virtual disk size, icount;
 * a negative `icount` is stored as all ones: none). Returns the byte where TypeScript places the
 * id string (`idBytes` bytes), the name following it; the entry is then that plus both strings
 * long, unpadded. Returns -INVALID for a string over 65535 bytes or an entry over the region.
 */
export function renderSnapshotEntry(l1TableOffset: f64, l1EntryCount: i32, idByteCount: i32, nameByteCount: i32,
                                    seconds: f64, nanoseconds: f64, vmClock: f64, vmState: f64, disk: f64, instructions: f64): i32 {
  if (idByteCount < 0 || nameByteCount < 0 || idByteCount > MAX_STRING_BYTES || nameByteCount > MAX_STRING_BYTES) return -Status.INVALID;
  const idStart = SNAPSHOT_HEADER_BYTES + NEW_ENTRY_EXTRA_BYTES;
  if (<i64>idStart + idByteCount + nameByteCount > <i64>HEADER_REGION_BYTES) return -Status.INVALID;
  const entry = regionOffset(Region.HEADER);
  storeBE64(entry + SNAP_L1_TABLE_OFFSET, <u64>l1TableOffset);
  storeBE32(entry + SNAP_L1_SIZE, <u32>l1EntryCount);
  storeBE16(entry + SNAP_ID_SIZE, <u16>idByteCount);
  storeBE16(entry + SNAP_NAME_SIZE, <u16>nameByteCount);
  storeBE32(entry + SNAP_DATE_SECONDS, <u32>seconds);
  storeBE32(entry + SNAP_DATE_NANOSECONDS, <u32>nanoseconds);
  storeBE64(entry + SNAP_VM_CLOCK_NANOSECONDS, <u64>vmClock);
  storeBE32(entry + SNAP_VM_STATE_SIZE, <u32>(<u64>vmState & 0xffffffff));
  storeBE32(entry + SNAP_EXTRA_DATA_SIZE, NEW_ENTRY_EXTRA_BYTES);
  storeBE64(entry + SNAP_EXTRA_VM_STATE_SIZE, <u64>vmState);
  storeBE64(entry + SNAP_EXTRA_DISK_SIZE, <u64>disk);
  storeBE64(entry + SNAP_EXTRA_ICOUNT, instructions < 0 ? <u64>-1 : <u64>instructions);
  return <i32>idStart;
}

/** Points the snapshot table entry at byte `at` of the HEADER region at the L1 table at `hostOffset`. */
export function setSnapshotEntryL1Offset(at: i32, hostOffset: f64): void {
  if (at < 0 || at > HEADER_REGION_BYTES - <i32>SNAPSHOT_HEADER_BYTES) return;
  storeBE64(regionOffset(Region.HEADER) + <usize>at + SNAP_L1_TABLE_OFFSET, <u64>hostOffset);
}
