// SPDX-License-Identifier: MIT
// The consistency check's snapshot table parse (qcow2 spec, "Snapshots"), fed one chunk at a
// time: entries, each starting 8-aligned, of 40 fixed bytes (snapshot.ts names the fields),
// extra data, id and name. It keeps each entry's L1 table and id and name positions in the
// SNAPSHOTS region for the L1 walks and TypeScript's messages.

import { MAX_SNAPSHOT_EXTRA_DATA_BYTES, SNAPSHOT_HEADER_BYTES } from './format';
import { entryExtraBytes, entryIdBytes, entryL1Entries, entryL1Offset, entryNameBytes } from './snapshot';
import { clusterBytes } from './geometry';
import {
  CheckCount, CheckEvent, SNAPSHOT_RECORD_BYTES, corruption, event, setCount, snapshotCapacity, snapshotsPtr, tablePtr,
} from './check-state';

/** QCOW_MAX_SNAPSHOTS_SIZE: QEMU reads at most 64 MiB of snapshot table. */
const MAX_SNAPSHOT_TABLE_BYTES: u64 = 1024 * 65536;

const PHASE_FIXED: i32 = 0;
const PHASE_BODY: i32 = 1;
const PHASE_PADDING: i32 = 2;
const PHASE_DONE: i32 = 3;
const snapshotFixed: usize = memory.data(<i32>SNAPSHOT_HEADER_BYTES, 8);
let snapshotPhase: i32 = PHASE_DONE;
let snapshotFixedBytes: u64 = 0;
let snapshotSkipBytes: u64 = 0;
let snapshotPosition: u64 = 0;
/** Snapshot table entries parsed so far. */
export let snapshotsParsed: u32 = 0;

/** Starts the snapshot table parse over (checkBegin). */
export function snapshotParseReset(): void {
  snapshotPhase = snapshotCapacity == 0 ? PHASE_DONE : PHASE_FIXED;
  snapshotFixedBytes = 0;
  snapshotSkipBytes = 0;
  snapshotPosition = 0;
  snapshotsParsed = 0;
}

function finishSnapshotEntry(): void {
  snapshotsParsed++;
  setCount(CheckCount.SNAPSHOTS_PARSED, snapshotsParsed);
  setCount(CheckCount.SNAPSHOT_TABLE_BYTES, snapshotPosition);
  if (snapshotsParsed >= snapshotCapacity) {
    snapshotPhase = PHASE_DONE;
    return;
  }
  snapshotSkipBytes = (8 - (snapshotPosition & 7)) & 7;
  snapshotPhase = snapshotSkipBytes > 0 ? PHASE_PADDING : PHASE_FIXED;
}

function parseSnapshotFixed(): void {
  const record = snapshotsPtr + <usize>(<u64>snapshotsParsed * SNAPSHOT_RECORD_BYTES);
  const extraBytes = <u64>entryExtraBytes(snapshotFixed);
  store<u64>(record, entryL1Offset(snapshotFixed));
  store<u32>(record, entryL1Entries(snapshotFixed), 8);
  store<u16>(record, <u16>entryIdBytes(snapshotFixed), 12);
  store<u16>(record, <u16>entryNameBytes(snapshotFixed), 14);
  store<u64>(record, snapshotPosition + extraBytes, 16);
  if (extraBytes > <u64>MAX_SNAPSHOT_EXTRA_DATA_BYTES) {
    corruption();
    event(CheckEvent.SNAPSHOT_EXTRA_TOO_LARGE, <f64>snapshotsParsed, <f64>extraBytes);
  }
  snapshotSkipBytes = extraBytes + <u64>entryIdBytes(snapshotFixed) + <u64>entryNameBytes(snapshotFixed);
  if (snapshotSkipBytes == 0) finishSnapshotEntry();
  else snapshotPhase = PHASE_BODY;
}

/**
 * Parses the next `bytes` (at most one cluster) of the snapshot table from CHECK_TABLE:
 * TypeScript feeds consecutive chunks from snapshots_offset while this returns 1. Records each
 * entry's L1 table; an entry with more than 1024 bytes of extra data is a corruption, and so is
 * a table passing 64 MiB (which ends the parse). Returns 1 when it needs more bytes, 0 when done.
 */
export function snapshotTableConsume(bytes: i32): i32 {
  const end = bytes <= 0 ? 0 : min(<u64>bytes, clusterBytes());
  let at: u64 = 0;
  while (at < end && snapshotPhase != PHASE_DONE) {
    if (snapshotPhase == PHASE_FIXED) {
      const take = min(<u64>SNAPSHOT_HEADER_BYTES - snapshotFixedBytes, end - at);
      memory.copy(snapshotFixed + <usize>snapshotFixedBytes, tablePtr + <usize>at, <usize>take);
      snapshotFixedBytes += take;
      at += take;
      snapshotPosition += take;
      if (snapshotFixedBytes == <u64>SNAPSHOT_HEADER_BYTES) {
        snapshotFixedBytes = 0;
        parseSnapshotFixed();
      }
    } else {
      const take = min(snapshotSkipBytes, end - at);
      snapshotSkipBytes -= take;
      at += take;
      snapshotPosition += take;
      if (snapshotSkipBytes == 0) {
        if (snapshotPhase == PHASE_BODY) finishSnapshotEntry();
        else snapshotPhase = PHASE_FIXED;
      }
    }
    if (snapshotPhase != PHASE_DONE && snapshotPosition >= MAX_SNAPSHOT_TABLE_BYTES) {
      corruption();
      event(CheckEvent.SNAPSHOT_TABLE_TOO_LARGE, <f64>snapshotsParsed);
      snapshotPhase = PHASE_DONE;
    }
  }
  return snapshotPhase == PHASE_DONE ? 0 : 1;
}

/** Address of parsed snapshot `index`'s record: u64 L1 offset, u32 L1 entries, u16 id bytes, u16 name bytes, u64 id position. */
@inline export function snapshotRecord(index: i32): usize { return snapshotsPtr + <usize>(<u64>index * SNAPSHOT_RECORD_BYTES); }

/** Byte position of parsed snapshot `index`'s id in the snapshot table (its name follows); -1 for an unknown index. */
export function snapshotIdPosition(index: i32): f64 {
  return <u32>index < snapshotsParsed ? <f64>load<u64>(snapshotRecord(index), 16) : -1;
}
/** Bytes of parsed snapshot `index`'s id string (0 for an unknown index). */
export function snapshotIdBytes(index: i32): i32 { return <u32>index < snapshotsParsed ? <i32>load<u16>(snapshotRecord(index), 12) : 0; }
/** Bytes of parsed snapshot `index`'s name (0 for an unknown index). */
export function snapshotNameBytes(index: i32): i32 { return <u32>index < snapshotsParsed ? <i32>load<u16>(snapshotRecord(index), 14) : 0; }
