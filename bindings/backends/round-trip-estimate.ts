// SPDX-License-Identifier: MIT
// What one request to a server costs, learned from its responses: the wait for a response's
// headers and the rate its bodies arrive at. Their product, the bytes a body brings in the time a
// request waits, says how much a read of remote storage should fetch at once: less leaves the
// link idle for most of each round trip, more only delays the reads behind it.

/** Weight of the newest response in the running averages. */
const NEWEST_WEIGHT = 0.25;
/** A body's time is counted as at least this long (a small body can arrive in no measurable time). */
const MIN_BODY_MS = 1;

/**
 * Running averages of a link's latency and body throughput. record() takes each response;
 * bytesPerRoundTrip() is undefined until a body was recorded.
 */
export class RoundTripEstimate {
  private latencyMs: number | undefined;
  private bodyBytes: number | undefined;
  private bodyMs: number | undefined;

  /**
   * Takes one response: `latencyMs` from sending the request to its headers, then `bodyBytes`
   * arriving in `bodyMs` (0 bytes: a response without a body, which tells only the latency).
   */
  record(latencyMs: number, bodyBytes: number, bodyMs: number): void {
    this.latencyMs = average(this.latencyMs, Math.max(0, latencyMs));
    if (bodyBytes <= 0) return;
    this.bodyBytes = average(this.bodyBytes, bodyBytes);
    this.bodyMs = average(this.bodyMs, Math.max(MIN_BODY_MS, bodyMs));
  }

  /** The bytes a body brings while a request waits for its headers (latency times throughput); undefined before the first body. */
  bytesPerRoundTrip(): number | undefined {
    if (this.latencyMs === undefined || this.bodyBytes === undefined || this.bodyMs === undefined) return undefined;
    return this.latencyMs * (this.bodyBytes / this.bodyMs);
  }
}

function average(previous: number | undefined, sample: number): number {
  return previous === undefined ? sample : previous + NEWEST_WEIGHT * (sample - previous);
}
