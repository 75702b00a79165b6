// SPDX-License-Identifier: MIT
// Early writeback for a long stream of writes: backend flushes started while the writes go on, so
// the storage device writes while the next bytes are produced and the final flush finds little
// left to do. For writers that end with a flush anyway (convert); it adds no durability promise
// of its own.

import type { Backend } from './backend.js';

/**
 * Bytes completed between two flushes started by a WritebackFlusher (by default). Small, so the
 * device starts writing from the first MiBs on; the flushes themselves space out on a slow device,
 * where each one takes longer than producing the next interval (a flush writes back everything
 * written before it, so nothing is written twice).
 */
export const WRITEBACK_INTERVAL_BYTES = 8 << 20;

/**
 * Keeps the device writing back a stream of writes: starts `backend.flush()` once `intervalBytes`
 * of writes have completed, one flush at a time, and when a flush ends with another interval
 * completed meanwhile, starts the next at once. Never makes a writer wait. Does nothing on a
 * backend without durableFlush (its flush is only a barrier). Report completed writes with
 * completed(); before the writer's own final flush, settle(). After a failed flush it starts none.
 */
export class WritebackFlusher {
  private completedBytes = 0;
  private flushing: Promise<void> | undefined;
  private failure: unknown;
  private settling = false;

  constructor(private readonly backend: Backend, private readonly intervalBytes = WRITEBACK_INTERVAL_BYTES) {}

  /** Counts `byteLength` more bytes whose writes completed; may start a flush. */
  completed(byteLength: number): void {
    if (!this.backend.capabilities.durableFlush) return;
    this.completedBytes += byteLength;
    this.startIfDue();
  }

  /**
   * Starts no more flushes and waits for the one in flight; rejects with the error of any flush it
   * started. Writes completed afterwards are the final flush's.
   */
  async settle(): Promise<void> {
    this.settling = true;
    await this.flushing;
    if (this.failure !== undefined) throw this.failure;
  }

  private startIfDue(): void {
    if (this.flushing || this.settling || this.failure !== undefined || this.completedBytes < this.intervalBytes) return;
    this.completedBytes = 0;
    this.flushing = this.backend.flush()
      .catch((error: unknown) => { this.failure ??= error; })
      .finally(() => {
        this.flushing = undefined;
        this.startIfDue();
      });
  }
}
