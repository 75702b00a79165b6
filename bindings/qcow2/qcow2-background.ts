// SPDX-License-Identifier: MIT
// The background work of one writable qcow2 image: pending clusters (deferred copy-on-write)
// that the timer or the cap made due, and the loss window's timed write-backs. Close waits for
// all of it.

import type { PendingCluster, DeferredCow } from './qcow2-deferred-cow.js';
import type { Qcow2WritePath } from './qcow2-write-path.js';
import type { Qcow2Writeback } from './qcow2-writeback.js';
import { LossWindow } from './qcow2-loss-window.js';
import { COMPLETED } from '../backends/backend.js';

/** Runs and tracks an image's background completions and write-backs. */
export class Qcow2Background {
  private readonly running = new Set<Promise<void>>();
  /** Writes metadata back a bounded delay after changes (undefined: only at flush and close). */
  private readonly lossWindow: LossWindow | undefined;

  /** `writebackDelayMs` undefined: no loss window (metadata is written at flush and close only). */
  constructor(private readonly writes: Qcow2WritePath, private readonly writeback: Qcow2Writeback,
              private readonly deferred: DeferredCow | undefined, writebackDelayMs: number | undefined) {
    this.lossWindow = writebackDelayMs === undefined ? undefined : new LossWindow(writebackDelayMs, () => this.writeBackLater());
  }

  /**
   * The timer or the cap made a pending cluster due (DeferredCow's force callback): completes it
   * in the background. On failure it stays pending and is retried later; flush() reports the
   * error if it persists.
   */
  forceLater(cluster: PendingCluster): void {
    this.inBackground(this.writes.completePendingLocked([cluster]).then(() => this.lossWindow?.changed(), () => this.deferred?.retryLater(cluster)));
  }

  /** A guest-visible change completed (or failed) with `work`: the loss window's timer starts if it is idle. */
  changed<T>(work: Promise<T>): Promise<T> {
    if (!this.lossWindow) return work;
    if (work === COMPLETED) {
      this.lossWindow.changed();
      return work;
    }
    return work.finally(() => this.lossWindow!.changed());
  }

  /** Stops the timers for good (close completes and writes back everything itself). */
  dispose(): void {
    this.lossWindow?.dispose();
    this.deferred?.dispose();
  }

  /** Waits until no background work runs (failures are the work's own to report). */
  async settle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  // The loss window's timer fired: pending clusters are completed and the metadata written back
  // in the safe order, as a flush would, but without its final barrier. A failure leaves the
  // metadata dirty: the next flush retries it and reports the error if it persists.
  private writeBackLater(): void {
    this.inBackground((async () => {
      if (this.deferred && this.deferred.size > 0) await this.writes.completePendingLocked(this.deferred.all());
      await this.writeback.writeBackAll();
    })().catch(() => undefined));
  }

  private inBackground(work: Promise<void>): void {
    this.running.add(work);
    void work.finally(() => this.running.delete(work));
  }
}
