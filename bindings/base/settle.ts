// SPDX-License-Identifier: MIT
// Waiting for a group of I/O calls without settling early: a failure is reported only once every
// call of the group is over, so no caller sees a result while I/O on its buffers is in flight.

/** Resolves when every promise has settled; then rejects with the first failure, if any. */
export async function allSettledOrThrow(promises: readonly Promise<unknown>[]): Promise<void> {
  if (promises.length === 1) {
    await promises[0];
    return;
  }
  const results = await Promise.allSettled(promises);
  for (const result of results) if (result.status === 'rejected') throw result.reason;
}
