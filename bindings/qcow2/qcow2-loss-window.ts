// SPDX-License-Identifier: MIT
// The bounded loss window: metadata that completed writes changed reaches the file within a
// fixed delay, without waiting for flush(). A process that dies (killed, a closed tab) then
// loses at most the writes of the last delay; the image stays consistent, because the metadata
// is written in the write-back's safe order. flush() remains the barrier against power loss.

/** One timer per quiet period: changes schedule a write-back that runs `delayMs` after the first. */
export class LossWindow {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private disposed = false;

  /**
   * `writeBack` runs when the timer fires (never awaited here; it must not reject). Changes that
   * complete while it runs schedule the next one.
   */
  constructor(private readonly delayMs: number, private readonly writeBack: () => void) {}

  /**
   * Records that a change completed: arms the timer unless it is armed. The timer keeps a Node
   * or Deno process alive until it fires, so a program that ends without close() still writes
   * its metadata back.
   */
  changed(): void {
    if (this.timer !== undefined || this.disposed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.disposed) this.writeBack();
    }, this.delayMs);
  }

  /** Stops the timer for good (on close, which writes everything back itself). */
  dispose(): void {
    this.disposed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** Default delay: 1 second. */
export const DEFAULT_WRITEBACK_DELAY_MS = 1000;

/**
 * The delay an OpenOptions.writebackDelayMs value asks for, or undefined for none (false or 0).
 * Anything else that is not a non-negative finite number throws the error `invalid` makes.
 */
export function writebackDelay(option: number | false | undefined, invalid: (message: string) => Error): number | undefined {
  if (option === undefined) return DEFAULT_WRITEBACK_DELAY_MS;
  if (option === false || option === 0) return undefined;
  if (typeof option !== 'number' || !Number.isFinite(option) || option < 0) {
    throw invalid(`writebackDelayMs must be a number of milliseconds or false, not ${String(option)}`);
  }
  return option;
}
