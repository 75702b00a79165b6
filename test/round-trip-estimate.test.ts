// SPDX-License-Identifier: MIT
// What a round trip to a server is worth (bindings/backends/round-trip-estimate.ts): latency times
// body throughput, as running averages of the responses recorded.

import { describe, expect, it } from 'vitest';
import { RoundTripEstimate } from '../bindings/backends/round-trip-estimate.js';

describe('RoundTripEstimate', () => {
  it('knows nothing before a body was recorded; a response without one tells only its latency', () => {
    const estimate = new RoundTripEstimate();
    expect(estimate.bytesPerRoundTrip()).toBeUndefined();
    estimate.record(40, 0, 0);
    expect(estimate.bytesPerRoundTrip()).toBeUndefined();
    estimate.record(40, 4000, 10); // 400 bytes a millisecond
    expect(estimate.bytesPerRoundTrip()).toBe(40 * 400);
  });

  it('counts a body that took no measurable time as taking a millisecond', () => {
    const estimate = new RoundTripEstimate();
    estimate.record(100, 65536, 0);
    expect(estimate.bytesPerRoundTrip()).toBe(100 * 65536);
  });

  it('follows a link that changes, the newest response weighing a quarter', () => {
    const estimate = new RoundTripEstimate();
    estimate.record(100, 1000, 10);
    estimate.record(20, 1000, 10);
    expect(estimate.bytesPerRoundTrip()).toBe((100 + 0.25 * (20 - 100)) * 100);
    for (let i = 0; i < 40; i++) estimate.record(20, 1000, 10);
    expect(estimate.bytesPerRoundTrip()).toBeCloseTo(20 * 100, 0);
  });
});
