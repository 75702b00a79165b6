// SPDX-License-Identifier: MIT
// `qemu-img check` for qcow2 images: drives the wasm check (assembly/check.ts) over the image's
// tables one chunk at a time, in a core instance of its own sized from the file, words its event
// records as QEMU 7.2 does, and repairs in place through the backend (leaked and too-low
// refcounts, OFLAG_COPIED). It never allocates a cluster or grows a table: what would need that
// is reported as unrepairable. Persistent bitmaps are not supported.

import type { Backend } from '../backends/backend.js';
import { ImageError } from '../base/errors.js';
import { CheckSession, type PassCounts } from './qcow2-check-session.js';
import { MessageLog } from './qcow2-check-messages.js';

/** What a repair fixes, as `qemu-img check -r leaks|all`. */
export type Qcow2RepairMode = 'leaks' | 'all';

/** Options of checkQcow2 and Qcow2Image.check. */
export interface Qcow2CheckOptions {
  /**
   * Repair in place after checking, then check again (the report is the second check's).
   * 'leaks' lowers stored refcounts that exceed the references; 'all' also raises refcounts that
   * are too low where every reference is valid, and fixes OFLAG_COPIED flags ('leaks' fixes those
   * too when nothing else is wrong, as QEMU does). Needs a writable backend (QCOW2_READ_ONLY).
   */
  repair?: Qcow2RepairMode;
  /** Most messages the report keeps (default 10000); one last message counts the rest. */
  maxMessages?: number;
}

/**
 * What a check found, named after `qemu-img check --output=json` (camelCase): `corruptions`,
 * `leaks`, `checkErrors` ("check-errors"), `imageEndOffset` ("image-end-offset"), and so on.
 * QEMU omits zero counts from its JSON; here every count is present.
 */
export interface Qcow2CheckReport {
  /** Inconsistencies that may lose data: refcounts below the references, invalid entries, wrong OFLAG_COPIED. */
  corruptions: number;
  /** Clusters whose stored refcount exceeds their references: wasted space, no harm to data. */
  leaks: number;
  /** Problems that kept the check from being complete (unreadable refcounts, too many clusters past the end of the file). */
  checkErrors: number;
  /** Corruptions the repair fixed (0 without repair). */
  corruptionsFixed: number;
  /** Leaks the repair fixed (0 without repair). */
  leaksFixed: number;
  /** Guest clusters allocated in the active L1 (data, preallocated zero, compressed). */
  allocatedClusters: number;
  /** Guest clusters of the virtual disk. */
  totalClusters: number;
  /** Allocated clusters not following the previous one of their L2 table on the host, and every compressed one. */
  fragmentedClusters: number;
  /** Compressed guest clusters. */
  compressedClusters: number;
  /** Host byte offset past the highest cluster that is referenced or has a stored refcount. */
  imageEndOffset: number;
  /** What was found and done, one line each, worded like qemu-img check's output. */
  messages: string[];
}

/** Most messages a report keeps unless told otherwise. */
const DEFAULT_MAX_MESSAGES = 10_000;

/**
 * Checks the qcow2 image in `backend` like `qemu-img check`: rebuilds every host cluster's
 * refcount from the image's metadata (header, active and snapshot L1/L2 tables, compressed
 * clusters, the snapshot table, the refcount table and blocks; data-file clusters are not
 * refcounted), compares it with the stored refcounts, and checks OFLAG_COPIED.
 *
 * With `options.repair`, it then repairs in place through the backend (see Qcow2CheckOptions),
 * flushing between steps so that a crash leaves the image no worse, checks again and returns
 * that second report with `leaksFixed` / `corruptionsFixed`; when no corruption or check error
 * remains it clears the header's dirty and corrupt bits. It never allocates a cluster or grows a
 * table: a refcount that would need a new refcount block, or any fix QEMU makes by rebuilding the
 * refcount structure or rewriting L2 entries, is reported as unrepairable.
 *
 * The backend must not be written by anyone else meanwhile (an image open read-write elsewhere
 * shows its in-flight metadata as corruptions). Memory: one core instance holding about two
 * refcounts (at the image's width) per host cluster of the file, plus two clusters.
 * Errors: QCOW2_READ_ONLY (repair on a read-only backend), INVALID_ARGUMENT (bad options), the
 * header's errors (parseQcow2Header), QCOW2_UNSUPPORTED_FEATURE (persistent bitmaps; a file
 * too large to check in 4 GiB of memory), and backend errors (an I/O error stops the check).
 */
export async function checkQcow2(backend: Backend, options: Qcow2CheckOptions = {}): Promise<Qcow2CheckReport> {
  const { repair } = options;
  if (repair !== undefined && repair !== 'leaks' && repair !== 'all') {
    throw new ImageError('INVALID_ARGUMENT', `repair must be 'leaks' or 'all', not ${String(repair)}`);
  }
  const maxMessages = options.maxMessages ?? DEFAULT_MAX_MESSAGES;
  if (!Number.isSafeInteger(maxMessages) || maxMessages < 0) {
    throw new ImageError('INVALID_ARGUMENT', `maxMessages ${maxMessages} is not a count`);
  }
  if (repair !== undefined && !backend.capabilities.writable) {
    throw new ImageError('QCOW2_READ_ONLY', 'cannot repair the image: its backend is read-only');
  }
  const session = await CheckSession.open(backend, maxMessages);
  const header = session.header;
  const totalClusters = Math.ceil(Math.floor(header.virtualSize / 512) * 512 / header.clusterSize);
  const report = (found: PassCounts, fixed: { leaksFixed: number; corruptionsFixed: number }): Qcow2CheckReport => ({
    corruptions: found.corruptions,
    leaks: found.leaks,
    checkErrors: found.checkErrors,
    corruptionsFixed: fixed.corruptionsFixed,
    leaksFixed: fixed.leaksFixed,
    allocatedClusters: found.allocatedClusters,
    totalClusters,
    fragmentedClusters: found.fragmentedClusters,
    compressedClusters: found.compressedClusters,
    imageEndOffset: found.imageEndOffset,
    messages: session.log.finish(),
  });

  const found = await session.runPass();
  const isClean = (counts: PassCounts) => counts.corruptions === 0 && counts.checkErrors === 0;
  if (repair === undefined || found.corruptions + found.leaks + found.checkErrors === 0) {
    if (repair !== undefined && isClean(found)) await session.markClean();
    return report(found, { leaksFixed: 0, corruptionsFixed: 0 });
  }

  // Repair messages replace the first pass's (as qemu-img check -r prints "Repairing ..." where
  // a plain check prints "ERROR" or "Leaked"); the second pass adds what is still wrong.
  session.log = new MessageLog(maxMessages);
  const fixed = await session.repair(repair, found);
  const final = await session.runPass();
  if (isClean(final)) await session.markClean();
  return report(final, fixed);
}

/**
 * The report in the shape of `qemu-img check --output=json` (QEMU 7.2 omits zero counts, except
 * check-errors), for tools that print it.
 */
export function qemuCheckJson(report: Qcow2CheckReport, filename: string): Record<string, string | number> {
  const json: Record<string, string | number> = { filename, format: 'qcow2', 'check-errors': report.checkErrors };
  const optional: [string, number][] = [
    ['image-end-offset', report.imageEndOffset], ['corruptions', report.corruptions], ['leaks', report.leaks],
    ['corruptions-fixed', report.corruptionsFixed], ['leaks-fixed', report.leaksFixed],
    ['total-clusters', report.totalClusters], ['allocated-clusters', report.allocatedClusters],
    ['fragmented-clusters', report.fragmentedClusters], ['compressed-clusters', report.compressedClusters],
  ];
  for (const [key, value] of optional) if (value !== 0) json[key] = value;
  return json;
}

/**
 * qemu-img check's exit code for the report: 1 when the check was incomplete (check errors),
 * else 2 for corruptions, 3 for leaks only, 0 for a clean image.
 */
export function checkExitCode(report: Qcow2CheckReport): 0 | 1 | 2 | 3 {
  if (report.checkErrors > 0) return 1;
  if (report.corruptions > 0) return 2;
  return report.leaks > 0 ? 3 : 0;
}
