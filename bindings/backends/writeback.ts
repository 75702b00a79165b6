// SPDX-License-Identifier: MIT
// Early writeback for a long stream of writes: a backend flush started after every so many bytes
// written, so the storage device writes while the next bytes are produced and the final flush
// finds little left to do. For writers that end with a flush anyway (convert); it adds no
// durability promise of its own.

import type { Backend } from './backend.js';

/** Bytes completed between two flushes started by a WritebackFlusher (by default). */
export const WRITEBACK_INTERVAL_BYTES = 128 << 20;

/**
 * Starts `backend.flush()` each time another `intervalBytes` of writes have completed, one flush
 * at a time, never making a writer wait. Does nothing on a backend without durableFlush (its
 * flush is only a barrier). Report completed writes with completed(); before the writer's own
 * final flush, settle().
 */
export class WritebackFlusher {
  private completedBytes = 0;
  private flushing: Promise<void> | undefined;
  private failure: unknown;

  constructor(private readonly backend: Backend, private readonly intervalBytes = WRITEBACK_INTERVAL_BYTES) {}

  /** Counts `byteLength` more bytes whose writes completed; may start a flush. */
  completed(byteLength: number): void {
    if (!this.backend.capabilities.durableFlush) return;
    this.completedBytes += byteLength;
    if (this.completedBytes < this.intervalBytes || this.flushing) return;
    this.completedBytes = 0;
    this.flushing = this.backend.flush()
      .catch((error: unknown) => { this.failure ??= error; })
      .finally(() => { this.flushing = undefined; });
  }

  /** Waits for the flush in flight; rejects with the error of any flush it started. */
  async settle(): Promise<void> {
    await this.flushing;
    if (this.failure !== undefined) throw this.failure;
  }
}
