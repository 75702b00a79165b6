// SPDX-License-Identifier: MIT
// Ordering of overlapping guest I/O in flight. Backends only promise correct results for
// concurrent calls on non-overlapping ranges, so the image orders overlaps itself: a write waits
// for every earlier overlapping read or write, a read for every earlier overlapping write.

/** One registered operation; `settled` resolves (never rejects) when its I/O is over. */
export interface InflightEntry {
  readonly start: number;
  readonly end: number;
  readonly isWrite: boolean;
  settled: Promise<void>;
  slot: number;
}

/** The set of guest ranges with I/O in flight, in registration order. */
export class InflightRanges {
  private entries: InflightEntry[] = [];

  /**
   * Registers an operation on [start, end) and starts it: `run` receives the settled-promises of
   * the earlier entries it must wait for (reads wait for writes, writes for both; empty when
   * none) and returns the operation's promise. The entry is removed when that settles; its
   * result is returned.
   */
  register<T>(start: number, end: number, isWrite: boolean, run: (wait: Promise<void>[]) => Promise<T>): Promise<T> {
    const wait: Promise<void>[] = [];
    for (const other of this.entries) {
      if (other.start < end && start < other.end && (isWrite || other.isWrite)) wait.push(other.settled);
    }
    const entry: InflightEntry = { start, end, isWrite, settled: Promise.resolve(), slot: this.entries.length };
    this.entries.push(entry);
    const result = run(wait);
    entry.settled = result.then(() => this.remove(entry), () => this.remove(entry));
    return result;
  }

  /**
   * Whether an operation on [start, end) must wait for one in flight now (a read for an
   * overlapping write, a write for any overlapping operation).
   */
  mustWait(start: number, end: number, isWrite: boolean): boolean {
    for (const other of this.entries) if (other.start < end && start < other.end && (isWrite || other.isWrite)) return true;
    return false;
  }

  /**
   * Registers an operation on [start, end) that started already (nothing it must wait for was
   * in flight: see mustWait) as `result`; the entry is removed when that settles. Returns `result`.
   */
  track(start: number, end: number, isWrite: boolean, result: Promise<void>): Promise<void> {
    const entry: InflightEntry = { start, end, isWrite, settled: Promise.resolve(), slot: this.entries.length };
    this.entries.push(entry);
    const remove = () => this.remove(entry);
    entry.settled = result.then(remove, remove);
    return result;
  }

  /** Settled-promises of every write in flight now. */
  writesInFlight(): Promise<void>[] {
    const out: Promise<void>[] = [];
    for (const entry of this.entries) if (entry.isWrite) out.push(entry.settled);
    return out;
  }

  /** Settled-promises of every operation in flight now. */
  allInFlight(): Promise<void>[] {
    return this.entries.map((entry) => entry.settled);
  }

  private remove(entry: InflightEntry): void {
    const last = this.entries.pop()!;
    if (last !== entry) {
      this.entries[entry.slot] = last;
      last.slot = entry.slot;
    }
  }
}
