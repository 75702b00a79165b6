// SPDX-License-Identifier: MIT
// The request loop of qemu-img bench on any BlockImage: `count` reads or writes of `bufferBytes`
// each, `depth` in flight, from `offset` in steps of `stepBytes` (wrapping inside the image), with
// an optional flush every `flushInterval` requests. Timing is the caller's.

import type { BlockImage } from '../dispatch/image.js';
import { ImageError } from '../base/errors.js';

/** What runImageBench sends. */
export interface ImageBenchOptions {
  count: number;
  depth: number;
  bufferBytes: number;
  /** Guest offset of the first request. */
  offset: number;
  /** Distance between consecutive requests' offsets (qemu-img: 0 means bufferBytes). */
  stepBytes: number;
  write: boolean;
  /** Byte written by write requests. */
  pattern: number;
  /** Flush after every this many requests (0: never; writes only). */
  flushInterval: number;
  /** Wait for the requests in flight before each flush (qemu-img's default; --no-drain clears it). */
  drainOnFlush: boolean;
}

/**
 * Sends the requests of `options` to `image`, keeping `depth` in flight, as qemu-img bench does:
 * request i goes to (offset + i * step) modulo the virtual size (a request that then passes the
 * end fails with IMAGE_OUT_OF_RANGE, as qemu-img's fails). Resolves when every request and flush
 * completed; rejects with the first failure after the requests in flight settled.
 */
export async function runImageBench(image: BlockImage, options: ImageBenchOptions): Promise<void> {
  const { count, depth, bufferBytes, write, flushInterval, drainOnFlush } = options;
  if (depth < 1) throw new ImageError('INVALID_ARGUMENT', `the queue depth must be at least 1, got ${depth}`);
  if (bufferBytes > image.virtualSize) {
    throw new ImageError('INVALID_ARGUMENT', `requests of ${bufferBytes} bytes do not fit the image's ${image.virtualSize} bytes`);
  }
  const step = options.stepBytes === 0 ? bufferBytes : options.stepBytes;
  const data = new Uint8Array(bufferBytes).fill(options.pattern);
  const readBuffers = write ? [] : Array.from({ length: Math.min(depth, count) }, () => new Uint8Array(bufferBytes));
  let nextOffset = options.offset;
  const advance = (): number => {
    const offset = nextOffset;
    nextOffset += step;
    nextOffset = image.virtualSize <= bufferBytes ? 0 : nextOffset % image.virtualSize;
    return offset;
  };

  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  let sent = 0;
  // Read buffers not in use (one per request in flight; writes all share `data`).
  const free: number[] = readBuffers.map((_, slot) => slot);
  const send = (slot: number): void => {
    const offset = advance();
    const request = (write ? image.write(offset, data) : image.readInto(offset, readBuffers[slot]))
      .catch((error: unknown) => { failure ??= error; })
      .finally(() => {
        inFlight.delete(request);
        if (!write) free.push(slot);
      });
    inFlight.add(request);
  };
  while (sent < count && failure === undefined) {
    while (inFlight.size >= depth) await Promise.race(inFlight);
    if (failure !== undefined) break;
    const slot = write ? 0 : (free.pop() as number);
    send(slot);
    sent++;
    if (write && flushInterval > 0 && sent % flushInterval === 0) {
      if (drainOnFlush) await Promise.all(inFlight);
      const flush = image.flush().catch((error: unknown) => { failure ??= error; }).finally(() => inFlight.delete(flush));
      inFlight.add(flush);
      if (drainOnFlush) await flush;
    }
  }
  await Promise.all(inFlight);
  if (failure !== undefined) throw failure;
}
