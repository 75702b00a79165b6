// SPDX-License-Identifier: MIT
// The write plan record the wasm core leaves in linear memory (assembly/write-plan.ts), read into
// TypeScript objects: what a planned write run does, and where the bytes of its head and tail
// copies (and of a described range) come from. Also the check that a host range taken from the
// image's metadata is addressable, which every reader of a plan or mapping applies.

import {
  CopyField, CopySource as CopyCode, PlanField, PlanKind as PlanCode,
} from '../core/wasm.js';
import { ImageError } from '../base/errors.js';

/** What a planned run does (assembly/allocate.ts PlanKind). */
export type PlanKind = 'in-place' | 'allocate' | 'allocate-subclusters' | 'fill-subclusters';
const PLAN_KINDS: Readonly<Record<number, PlanKind>> = {
  [PlanCode.IN_PLACE]: 'in-place', [PlanCode.ALLOCATE]: 'allocate', [PlanCode.ALLOCATE_SUBCLUSTERS]: 'allocate-subclusters',
  [PlanCode.FILL_SUBCLUSTERS]: 'fill-subclusters',
} satisfies Record<PlanCode, PlanKind>;

/**
 * Where the bytes of a copy come from (assembly/write-plan.ts CopySource): 'none' (nothing to
 * write), 'zeros' (write zeros), 'backing' (the backing file at the same guest range), 'data'
 * (image host bytes from hostOffset), 'compressed' (part of the compressed cluster at
 * hostOffset) or 'mapped' (mixed: read the guest range through the mapping).
 */
export type CopySource = 'none' | 'zeros' | 'backing' | 'data' | 'compressed' | 'mapped';
const COPY_SOURCES: Readonly<Record<number, CopySource>> = {
  [CopyCode.NONE]: 'none', [CopyCode.ZEROS]: 'zeros', [CopyCode.BACKING]: 'backing', [CopyCode.DATA]: 'data',
  [CopyCode.COMPRESSED]: 'compressed', [CopyCode.MAPPED]: 'mapped',
} satisfies Record<CopyCode, CopySource>;

/**
 * One copy the core asks for: guest bytes [guestOffset, guestOffset + bytes) as they read now,
 * from `source`; only the first sourceBytes come from it (the rest, past the virtual size, are
 * zeros).
 */
export interface CopyPlan {
  source: CopySource;
  guestOffset: number;
  bytes: number;
  sourceBytes: number;
  /** 'data': host offset of the first byte; 'compressed': host offset of the compressed data. */
  hostOffset: number;
  /** 'compressed': bytes to read at hostOffset. */
  compressedBytes: number;
}

/**
 * One planned write run (the core's write plan record): guest bytes [guestStart, guestEnd) go to
 * host bytes from hostStart. 'in-place' covers exactly the written bytes; the other kinds cover
 * whole clusters ('allocate') or whole subclusters, whose bytes around the written ones are the
 * head and tail copies, and need commit() afterwards, or abort() when the write failed.
 */
export interface WritePlan {
  kind: PlanKind;
  guestStart: number;
  guestEnd: number;
  hostStart: number;
  /** Host offset of the first cluster allocated for the plan (when takenClusters > 0). */
  takenHost: number;
  /** Host clusters allocated for the plan: commit() points entries at them, abort() releases them. */
  takenClusters: number;
  /** Whether the tail may stay pending (deferred copy-on-write) instead of being copied now. */
  tailDeferrable: boolean;
  /** The bytes from guestStart to the written data. */
  head: CopyPlan;
  /** The bytes from the written data to guestEnd. */
  tail: CopyPlan;
}


/**
 * Throws QCOW2_CORRUPT unless the host range [hostOffset, hostOffset + bytes), taken from the
 * image's metadata, can be addressed (JavaScript numbers address files up to 2^53 bytes).
 */
export function checkImageHostRange(hostOffset: number, bytes: number, what: string): void {
  if (Number.isSafeInteger(hostOffset) && Number.isSafeInteger(hostOffset + bytes)) return;
  throw new ImageError('QCOW2_CORRUPT', `${what}: the image points at host offset 0x${BigInt(Math.trunc(hostOffset)).toString(16)}, ` +
    'past 2^53 bytes, which no file reaches: the image is corrupt (qemu-img check -r all may repair it)');
}

/** Throws QCOW2_CORRUPT unless the host bytes a copy reads can be addressed. */
export function checkCopyRange(copy: CopyPlan): void {
  if (copy.source === 'data') checkImageHostRange(copy.hostOffset, copy.sourceBytes, `copying guest offset ${copy.guestOffset}`);
  if (copy.source === 'compressed') checkImageHostRange(copy.hostOffset, copy.compressedBytes, `copying guest offset ${copy.guestOffset}`);
}

/** The guest run and host start of a written plan, what commit() records. */
export type CommitRange = Pick<WritePlan, 'kind' | 'guestStart' | 'guestEnd' | 'hostStart'>;

/** The plan in `record` (the core's PLAN region) as the last planWrite left it. */
export function readWritePlan(record: Float64Array): WritePlan {
  const r = record;
  return {
    kind: PLAN_KINDS[r[PlanField.KIND]], guestStart: r[PlanField.GUEST_START], guestEnd: r[PlanField.GUEST_END],
    hostStart: r[PlanField.HOST_START], takenHost: r[PlanField.TAKEN_HOST], takenClusters: r[PlanField.TAKEN_CLUSTERS],
    tailDeferrable: r[PlanField.TAIL_DEFERRABLE] !== 0, head: readCopyPlan(record, PlanField.HEAD), tail: readCopyPlan(record, PlanField.TAIL),
  };
}

/** The copy record at field `at` of the plan record `record` (PlanField.HEAD, TAIL or CONTENT). */
export function readCopyPlan(record: Float64Array, at: number): CopyPlan {
  const r = record;
  return {
    source: COPY_SOURCES[r[at + CopyField.SOURCE]], guestOffset: r[at + CopyField.GUEST_OFFSET], bytes: r[at + CopyField.BYTES],
    sourceBytes: r[at + CopyField.SOURCE_BYTES], hostOffset: r[at + CopyField.HOST_OFFSET],
    compressedBytes: r[at + CopyField.COMPRESSED_BYTES],
  };
}
