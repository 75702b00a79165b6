// SPDX-License-Identifier: MIT
// RawImage: a flat disk image, guest offset == host position. Everything but the host I/O lives
// in DispatchedImage. Raw never merges across gaps: it cannot know what a gap holds without
// reading it.

import type { Backend } from '../backends/backend.js';
import type { OpenOptions } from '../dispatch/image.js';
import { MergeCore } from '../core/merge-core.js';
import { allSettledOrThrow } from '../base/settle.js';
import { ImageError } from '../base/errors.js';
import { instantiateCore } from '../core/wasm.js';
import { DispatchedImage } from '../dispatch/dispatched-image.js';

/** Checks the merge option shared by every format. */
export function checkMergeOption(options: OpenOptions): void {
  if (options.merge !== undefined && !['off', 'adjacent', 'full'].includes(options.merge)) {
    throw new ImageError('INVALID_ARGUMENT', `merge must be 'off', 'adjacent' or 'full', not ${String(options.merge)}`);
  }
}

/** A raw (flat) image over any backend. Create with RawImage.open. */
export class RawImage extends DispatchedImage {
  private readonly backend: Backend;

  private constructor(backend: Backend, virtualSize: number, readOnly: boolean, core: MergeCore, options: OpenOptions) {
    super({ virtualSize, readOnly, core, limits: backend.limits, mergeMode: options.merge ?? 'full' });
    this.backend = backend;
  }

  /**
   * Opens `backend` as a raw image whose virtual size is the backend's current size. Read-only
   * when `options.readOnly` or the backend is not writable. `options.merge` picks the merge mode.
   * Ownership: the backend belongs to the image from this call on; close() closes it, and a
   * failed open closes it before rejecting.
   */
  static async open(backend: Backend, options: OpenOptions = {}): Promise<RawImage> {
    try {
      checkMergeOption(options);
      const core = new MergeCore(await instantiateCore());
      const size = await backend.getSize();
      const readOnly = options.readOnly === true || !backend.capabilities.writable;
      return new RawImage(backend, size, readOnly, core, options);
    } catch (error) {
      await backend.close().catch(() => {});
      throw error;
    }
  }

  protected readRange(position: number, target: Uint8Array): Promise<void> {
    if (target.byteLength <= this.backend.limits.maxTransfer) {
      this.counters.hostReadCalls++;
      this.counters.hostReadBytes += target.byteLength;
      return this.backend.preadv(position, [target]);
    }
    return this.readInPieces(position, target);
  }

  // A read longer than one backend call moves: one call per maxTransfer bytes, at once.
  private async readInPieces(position: number, target: Uint8Array): Promise<void> {
    const { maxTransfer } = this.backend.limits;
    const chunks: Promise<void>[] = [];
    for (let done = 0; done < target.byteLength; done += maxTransfer) {
      const piece = target.subarray(done, Math.min(target.byteLength, done + maxTransfer));
      chunks.push(this.backend.preadv(position + done, [piece]));
    }
    this.counters.hostReadCalls += chunks.length;
    this.counters.hostReadBytes += target.byteLength;
    await allSettledOrThrow(chunks);
  }

  protected writeExtent(position: number, _length: number, buffers: Uint8Array[]): Promise<void> {
    return this.writeToBackend(this.backend, position, buffers);
  }

  /** Passes the discard to the backend when it supports discard; otherwise does nothing. */
  protected async discardRange(offset: number, length: number): Promise<void> {
    if (this.backend.capabilities.discard && this.backend.discard) await this.backend.discard(offset, length);
  }

  protected flushFormat(): Promise<void> {
    return this.backend.flush();
  }

  protected async closeFormat(): Promise<void> {
    try {
      if (!this.readOnly) await this.backend.flush();
    } finally {
      await this.backend.close();
    }
  }
}
