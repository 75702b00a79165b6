// SPDX-License-Identifier: MIT
// A stream of writes to one backend, as a file copier makes them: neighbouring writes gathered
// into large backend writes, a bounded number in flight, and early writeback (writeback.ts), so
// the final flush finds little left to do.

import type { Backend } from './backend.js';
import { WritebackFlusher } from './writeback.js';

/** Bytes gathered into one backend write before it is issued. */
const BATCH_BYTES = 4 << 20;
/**
 * Backend writes in flight at once. Buffered writes to one file take turns in the kernel, so more
 * would only hold thread-pool threads (Node's) that reads could use; two keep the file busy.
 */
const WRITES_IN_FLIGHT = 2;

/**
 * Gathers writes into backend writes of up to 4 MiB: a write that continues the one before it
 * joins its batch (longer data is split), any other issues the batch. Writes run at most two at
 * a time (backpressure() waits); buffers handed to write() belong to the queue until written()
 * resolves. The first backend error is kept and thrown by backpressure() and flush().
 */
export class WriteQueue {
  private pendingStart = 0;
  private pendingBuffers: Uint8Array[] = [];
  private pendingBytes = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly writeback: WritebackFlusher;
  private failure: unknown;

  constructor(private readonly backend: Backend) {
    this.writeback = new WritebackFlusher(backend);
  }

  /** Queues `data` for byte offset `position` of the backend. */
  write(position: number, data: Uint8Array): void {
    if (this.pendingBytes > 0 && position !== this.pendingStart + this.pendingBytes) this.issuePending();
    for (let at = 0; at < data.byteLength;) {
      if (this.pendingBytes === 0) this.pendingStart = position + at;
      const take = Math.min(data.byteLength - at, BATCH_BYTES - this.pendingBytes);
      this.pendingBuffers.push(take === data.byteLength ? data : data.subarray(at, at + take));
      this.pendingBytes += take;
      at += take;
      if (this.pendingBytes >= BATCH_BYTES) this.issuePending();
    }
  }

  /** Resolves once fewer than two writes are in flight; rejects once a write has failed. */
  async backpressure(): Promise<void> {
    while (this.inFlight.size >= WRITES_IN_FLIGHT) await Promise.race(this.inFlight);
    if (this.failure !== undefined) throw this.failure;
  }

  /**
   * Issues the gathered writes; resolves once every write issued so far is done, so the queue
   * holds none of the buffers given before the call. Never rejects.
   */
  written(): Promise<void> {
    this.issuePending();
    return Promise.all(this.inFlight).then(() => {});
  }

  /**
   * Issues and waits for every write, then flushes the backend: resolves once everything written
   * through the queue is durable; rejects with the first error (of a write, the early writeback or
   * this flush). The flush starts without waiting for an early-writeback flush still running (it
   * covers every write completed before it), so the writer pays for one flush at the end, not two.
   */
  async flush(): Promise<void> {
    await this.written();
    if (this.failure !== undefined) throw this.failure;
    const [early, final] = await Promise.allSettled([this.writeback.settle(), this.backend.flush()]);
    if (early.status === 'rejected') throw early.reason;
    if (final.status === 'rejected') throw final.reason;
  }

  /** Waits for everything in flight, ignoring errors (before closing after a failure). */
  async abandon(): Promise<void> {
    this.pendingBuffers = [];
    this.pendingBytes = 0;
    await Promise.allSettled([...this.inFlight, this.writeback.settle()]);
  }

  private issuePending(): void {
    if (this.pendingBytes === 0) return;
    const byteLength = this.pendingBytes;
    const write: Promise<void> = this.backend.pwritev(this.pendingStart, this.pendingBuffers)
      .then(() => this.writeback.completed(byteLength), (error: unknown) => { this.failure ??= error; })
      .finally(() => this.inFlight.delete(write));
    this.inFlight.add(write);
    this.pendingBuffers = [];
    this.pendingBytes = 0;
  }
}
