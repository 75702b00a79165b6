// SPDX-License-Identifier: MIT
// The wording of the wasm check's event records, as QEMU 7.2's qemu-img check words the same
// findings, and the capped log they go to.

import { RepairBlocker, type CheckEvent } from '../core/wasm.js';

/** One event record's arguments a..g (CheckEvent, assembly/check.ts). */
export type EventArgs = readonly [number, number, number, number, number, number, number];
/** What a message may need besides its event: the walked snapshot's "id (name)". */
export interface EventContext { snapshot: string }

// A u64 the core passes as two f64 halves, printed as hex or decimal.
const u64 = (high: number, low: number): bigint => (BigInt(high) << 32n) | BigInt(low);
const hex = (high: number, low: number): string => u64(high, low).toString(16);
const dec = (high: number, low: number): string => u64(high, low).toString();
const action = (repairing: number) => (repairing ? 'Repairing' : 'ERROR');

const BLOCKER_REASONS: Readonly<Record<number, string>> = {
  [RepairBlocker.REFERENCE_INVALID]: 'a reference to it is invalid',
  [RepairBlocker.REFBLOCK_MISSING]: 'no refcount block covers it (allocating one, or growing the refcount table, is not implemented)',
  [RepairBlocker.REFBLOCK_UNUSABLE]: 'its refcount block has an invalid table entry, lies outside the file or is shared',
  [RepairBlocker.REFCOUNT_UNREADABLE]: 'its stored refcount cannot be read',
} satisfies Record<Exclude<RepairBlocker, typeof RepairBlocker.NONE>, string>;

/**
 * One wording per CheckEvent member, as QEMU 7.2 words the same finding (block/qcow2-refcount.c)
 * where it has one. QEMU names snapshots by id and name; the check knows their table index.
 */
export const EVENT_MESSAGES = {
  REFCOUNT_MISMATCH: ([cluster, storedHigh, storedLow, refsHigh, refsLow, repairing]: EventArgs) =>
    `${repairing ? 'Repairing' : u64(storedHigh, storedLow) < u64(refsHigh, refsLow) ? 'ERROR' : 'Leaked'} cluster ${cluster} ` +
    `refcount=${dec(storedHigh, storedLow)} reference=${dec(refsHigh, refsLow)}`,
  REFCOUNT_OVERFLOW: ([high, low]: EventArgs) => `ERROR: overflow cluster offset=0x${hex(high, low)}`,
  L2_TABLE_UNALIGNED: ([high, low]: EventArgs) => `ERROR l2_offset=${hex(high, low)}: Table is not cluster aligned; L1 entry corrupted`,
  DATA_UNALIGNED: ([high, low, hasData]: EventArgs) =>
    `ERROR offset=${hex(high, low)}: ${hasData ? 'Data' : 'Preallocated'} cluster is not properly aligned; L2 entry corrupted.`,
  COMPRESSED_COPIED: ([high, low]: EventArgs) => `ERROR: coffset=0x${hex(high, low)}: copied flag must never be set for compressed clusters`,
  COMPRESSED_WITH_DATA_FILE: ([index, high, low]: EventArgs) => `ERROR compressed cluster ${index} with data file, entry=0x${hex(high, low)}`,
  COMPRESSED_WITH_BITMAP: ([index, high, low]: EventArgs) =>
    `ERROR compressed cluster ${index} with non-zero subcluster allocation bitmap, entry=0x${hex(high, low)}`,
  SUBCLUSTER_ALLOC_AND_ZERO: ([high, low]: EventArgs) =>
    `ERROR offset=${hex(high, low)}: Allocated cluster has corrupted subcluster allocation bitmap`,
  UNALLOCATED_WITH_BITMAP: () => 'ERROR: Unallocated cluster has non-zero subcluster allocation map',
  REFTABLE_RESERVED: ([index]: EventArgs) => `ERROR refcount table entry ${index} has reserved bits set`,
  REFBLOCK_UNALIGNED: ([index]: EventArgs) => `ERROR refcount block ${index} is not cluster aligned; refcount table entry corrupted`,
  REFBLOCK_OUTSIDE: ([index]: EventArgs) => `ERROR refcount block ${index} is outside image`,
  REFBLOCK_REFCOUNT: ([index, high, low]: EventArgs) => `ERROR refcount block ${index} refcount=${dec(high, low)}`,
  REFCOUNT_UNREADABLE: ([cluster]: EventArgs) => `Can't get refcount for cluster ${cluster}: Input/output error`,
  SNAPSHOT_L1_UNALIGNED: ([, high, low]: EventArgs, c: EventContext) =>
    `ERROR snapshot ${c.snapshot} l1_offset=0x${hex(high, low)}: L1 table is not cluster aligned; snapshot table entry corrupted`,
  SNAPSHOT_L1_TOO_LARGE: ([, entries]: EventArgs, c: EventContext) =>
    `ERROR snapshot ${c.snapshot} l1_size=0x${entries.toString(16)}: L1 table is too large; snapshot table entry corrupted`,
  SNAPSHOTS_WITH_DATA_FILE: ([count]: EventArgs) => `ERROR ${count} snapshots in image with data file`,
  COPIED_L2_TABLE: ([index, high, low, refcountHigh, refcountLow, repairing]: EventArgs) =>
    `${action(repairing)} OFLAG_COPIED L2 cluster: l1_index=${index} l1_entry=${hex(high, low)} refcount=${dec(refcountHigh, refcountLow)}`,
  COPIED_DATA_CLUSTER: ([high, low, refcountHigh, refcountLow, repairing]: EventArgs) =>
    `${action(repairing)} OFLAG_COPIED data cluster: l2_entry=${hex(high, low)} refcount=${dec(refcountHigh, refcountLow)}`,
  SNAPSHOT_EXTRA_TOO_LARGE: ([index, bytes]: EventArgs) =>
    `ERROR Too much extra metadata in snapshot table entry ${index} (${bytes} bytes, at most 1024)`,
  SNAPSHOT_TABLE_TOO_LARGE: ([parsed]: EventArgs) => `ERROR snapshot table too large (past 64 MiB after ${parsed} entries)`,
  RANGE_PAST_END: ([high, low, bytes]: EventArgs) =>
    `ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${hex(high, low)} size 0x${bytes.toString(16)}`,
  UNREPAIRABLE: ([cluster, storedHigh, storedLow, refsHigh, refsLow, blocker]: EventArgs) =>
    `Cannot repair cluster ${cluster} refcount=${dec(storedHigh, storedLow)} reference=${dec(refsHigh, refsLow)}: ` +
    (BLOCKER_REASONS[blocker] ?? 'unknown reason'),
  L1_RESERVED: ([high, low]: EventArgs) => `ERROR found L1 entry with reserved bits set: ${hex(high, low)}`,
  L2_RESERVED: ([high, low]: EventArgs) => `ERROR found l2 entry with reserved bits set: ${hex(high, low)}`,
} satisfies Record<keyof typeof CheckEvent, (args: EventArgs, context: EventContext) => string>;
/** A CheckEvent member's name. */
export type EventName = keyof typeof EVENT_MESSAGES;

/** Collects messages up to a cap, counting the rest. */
export class MessageLog {
  readonly lines: string[] = [];
  private omitted = 0;

  constructor(private readonly max: number) {}

  push(line: string): void {
    if (this.lines.length < this.max) this.lines.push(line);
    else this.omitted++;
  }

  skip(count: number): void { this.omitted += count; }

  /** The kept lines, and one more counting the omitted ones. */
  finish(): string[] {
    return this.omitted > 0 ? [...this.lines, `(${this.omitted} more messages omitted)`] : this.lines;
  }
}
