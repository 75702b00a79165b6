// SPDX-License-Identifier: MIT
// A block cache with adaptive read-ahead, for remote storage (HTTP parts or ranges) and for an
// emulator's disk: like a page cache, a run of sequential reads widens the window of blocks
// fetched ahead, a jump elsewhere closes it.

/** Knobs of ReadAheadCache. */
export interface ReadAheadOptions {
  /** Most blocks kept (least recently used go first); at least 2 + maxAheadBlocks. */
  cacheBlocks: number;
  /** The widest read-ahead window, in blocks (0: no read-ahead). */
  maxAheadBlocks: number;
  /**
   * On a miss, the other blocks of the aligned run of this many blocks holding the missed one
   * are fetched too, after it (default 1: none). For a file system's disk: related data lies
   * together, so what is near a read is likely read soon.
   */
  neighbourhoodBlocks?: number;
  /**
   * Fetches the `count` blocks from `first` together, resolving with them in order (each exactly
   * its block's bytes); used for the blocks fetched ahead and around a miss, which are not waited
   * for. Default: fetchBlock for each.
   */
  fetchRun?: (first: number, count: number) => Promise<Uint8Array[]>;
}

/**
 * Serves byte ranges of an object of `totalBytes`, stored as blocks of `blockBytes` (the last
 * one shorter), each fetched whole by `fetchBlock(index)`, which must resolve with exactly that
 * block's bytes. The object changes only as the caller says (overwrite, forget, clear).
 *
 * Blocks are cached (LRU), and concurrent reads of one block share one fetch. Sequential access
 * (a read starting in the block where the previous one ended, or the next) doubles the window of
 * blocks fetched ahead, from 1 up to `maxAheadBlocks`, and once fewer than half of them are
 * ready the rest are requested together; any other read closes the window. The blocks a read
 * needs are fetched each by itself and first; those fetched ahead or around a miss go in runs of
 * neighbours, one fetchRun call a run when the option is set. A failed fetch
 * is not cached: a read that needs the block rejects with the fetch's error, and the next read
 * tries again; a failed read-ahead fetch is dropped silently (the read that needs it refetches).
 */
export class ReadAheadCache {
  private readonly cached = new Map<number, Uint8Array>();
  private readonly fetching = new Map<number, Promise<Uint8Array>>();
  private windowBlocks = 0;
  private lastEndBlock = -2;
  private readonly blockCount: number;
  private neighbourhoodBlocks: number;
  /** Blocks fetched so far (read-ahead included); for reports and tests. */
  fetchedBlocks = 0;

  constructor(
    private readonly blockBytes: number,
    private readonly totalBytes: number,
    private readonly fetchBlock: (index: number) => Promise<Uint8Array>,
    private readonly options: ReadAheadOptions,
  ) {
    this.blockCount = Math.ceil(totalBytes / blockBytes);
    this.neighbourhoodBlocks = options.neighbourhoodBlocks ?? 1;
  }

  /**
   * From now on a miss also fetches the other blocks of the aligned run holding it that fits in
   * `bytes` (whole blocks, at most maxAheadBlocks; less than two blocks: none); see
   * ReadAheadOptions.neighbourhoodBlocks. For a backend sizing that run to what its link brings
   * in one round trip.
   */
  setNeighbourhoodBytes(bytes: number): void {
    this.neighbourhoodBlocks = Math.max(1, Math.min(this.options.maxAheadBlocks, Math.floor(bytes / this.blockBytes)));
  }

  /** Copies [position, position + target.byteLength) into `target`; bytes past the end read as zeros. */
  async read(position: number, target: Uint8Array): Promise<void> {
    const end = Math.min(position + target.byteLength, this.totalBytes);
    target.fill(0, Math.max(0, end - position));
    if (end <= position) return;
    const first = Math.floor(position / this.blockBytes);
    const last = Math.floor((end - 1) / this.blockBytes);
    // The blocks this read needs are fetched first, then read-ahead and neighbourhoods (a fetcher
    // that serves its calls in order answers the read first).
    const missed = this.missedBlocks(first, last);
    const blocks = Array.from({ length: last - first + 1 }, (_, i) => this.block(first + i));
    this.adapt(first, last);
    for (const index of missed) this.fetchNeighbourhood(index);
    this.copyOut(position, end, first, await Promise.all(blocks), target);
  }

  /**
   * read() at once when every block the range needs is cached: copies it into `target`, counts
   * as a read for the read-ahead window (starting read-ahead fetches), and returns true.
   * Otherwise it returns false, the cache and its window unchanged (call read()).
   */
  readCached(position: number, target: Uint8Array): boolean {
    const end = Math.min(position + target.byteLength, this.totalBytes);
    target.fill(0, Math.max(0, end - position));
    if (end <= position) return true;
    const first = Math.floor(position / this.blockBytes);
    const last = Math.floor((end - 1) / this.blockBytes);
    const blocks: Uint8Array[] = [];
    for (let index = first; index <= last; index++) {
      const block = this.cached.get(index);
      if (block === undefined) return false;
      blocks.push(block);
    }
    for (let index = first; index <= last; index++) this.touch(index, blocks[index - first]!);
    this.adapt(first, last);
    this.copyOut(position, end, first, blocks, target);
    return true;
  }

  /**
   * For a caller that changed the object underneath (a writable image under a cache of its
   * bytes): puts `data`, now at `position`, into the cached blocks it overlaps, and lets go of
   * fetches in flight for those blocks, which may have read the bytes before the change (a
   * read that waits for such a fetch still gets its bytes; nothing from it is cached, and later
   * reads fetch anew).
   */
  overwrite(position: number, data: Uint8Array): void {
    this.eachBlock(position, data.byteLength, (index, blockStart) => {
      this.fetching.delete(index);
      const block = this.cached.get(index);
      if (block === undefined) return;
      const from = Math.max(position, blockStart);
      const to = Math.min(position + data.byteLength, blockStart + block.byteLength);
      block.set(data.subarray(from - position, to - position), from - blockStart);
    });
  }

  /** Drops the cached blocks overlapping [position, position + lengthBytes) and lets go of fetches in flight for them. */
  forget(position: number, lengthBytes: number): void {
    this.eachBlock(position, lengthBytes, (index) => {
      this.fetching.delete(index);
      this.cached.delete(index);
    });
  }

  /** Drops every cached block, lets go of every fetch in flight and closes the window. */
  clear(): void {
    this.cached.clear();
    this.fetching.clear();
    this.windowBlocks = 0;
    this.lastEndBlock = -2;
  }

  /** The current read-ahead window in blocks (0 after random access). */
  get aheadBlocks(): number {
    return this.windowBlocks;
  }

  /** The blocks of [first, last] neither cached nor being fetched. */
  private missedBlocks(first: number, last: number): number[] {
    const missed: number[] = [];
    for (let index = first; index <= last; index++) if (!this.cached.has(index) && !this.fetching.has(index)) missed.push(index);
    return missed;
  }

  /** Starts fetching the blocks of the aligned run of neighbourhoodBlocks around `index` not yet at hand. */
  private fetchNeighbourhood(index: number): void {
    const run = this.neighbourhoodBlocks;
    if (run <= 1) return;
    const start = index - (index % run);
    this.fetchAhead(start, Math.min(start + run, this.blockCount));
  }

  /** Starts fetching the blocks of [first, end) not yet at hand, runs of neighbours together; failures are dropped. */
  private fetchAhead(first: number, end: number): void {
    for (let index = first; index < end;) {
      if (this.cached.has(index) || this.fetching.has(index)) {
        index++;
        continue;
      }
      let runEnd = index + 1;
      while (runEnd < end && !this.cached.has(runEnd) && !this.fetching.has(runEnd)) runEnd++;
      for (const fetch of this.startFetches(index, runEnd - index)) fetch.catch(() => undefined);
      index = runEnd;
    }
  }

  /** Updates the window from this read's blocks and starts the read-ahead fetches. */
  private adapt(first: number, last: number): void {
    const sequential = first === this.lastEndBlock || first === this.lastEndBlock + 1;
    this.windowBlocks = sequential ? Math.min(this.options.maxAheadBlocks, Math.max(1, this.windowBlocks * 2)) : 0;
    this.lastEndBlock = last;
    // Like a page cache's asynchronous read-ahead: once fewer than half the window's blocks are
    // ready ahead, fetch the rest of the window at once (a caller may join them into one request).
    let ahead = 0;
    while (ahead < this.windowBlocks && (this.cached.has(last + 1 + ahead) || this.fetching.has(last + 1 + ahead))) ahead++;
    if (ahead >= Math.ceil(this.windowBlocks / 2)) return;
    this.fetchAhead(last + 1 + ahead, Math.min(last + this.windowBlocks + 1, this.blockCount));
  }

  private block(index: number): Promise<Uint8Array> {
    const hit = this.cached.get(index);
    if (hit !== undefined) {
      this.touch(index, hit);
      return Promise.resolve(hit);
    }
    return this.fetching.get(index) ?? this.startFetches(index, 1)[0]!;
  }

  /**
   * Starts fetching the `count` blocks from `first` (none cached or being fetched): with one
   * fetchRun call when there are several and it is set, else fetchBlock each. Returns one promise
   * per block.
   */
  private startFetches(first: number, count: number): Promise<Uint8Array>[] {
    this.fetchedBlocks += count;
    const run = count > 1 && this.options.fetchRun !== undefined ? this.options.fetchRun(first, count) : undefined;
    return Array.from({ length: count }, (_, i) => {
      const index = first + i;
      // Only the fetch still registered for the block when it settles is cached (overwrite(),
      // forget() and clear() let go of it).
      const fetch: Promise<Uint8Array> = (run === undefined ? this.fetchBlock(index) : run.then((blocks) => blocks[i]!)).then((bytes) => {
        if (this.fetching.get(index) !== fetch) return bytes;
        this.fetching.delete(index);
        this.cached.set(index, bytes);
        while (this.cached.size > Math.max(this.options.cacheBlocks, this.options.maxAheadBlocks + 2)) {
          this.cached.delete(this.cached.keys().next().value!);
        }
        return bytes;
      }, (error: unknown) => {
        if (this.fetching.get(index) === fetch) this.fetching.delete(index);
        throw error;
      });
      this.fetching.set(index, fetch);
      return fetch;
    });
  }

  /** Marks a cached block as the most recently used (it goes last). */
  private touch(index: number, block: Uint8Array): void {
    this.cached.delete(index);
    this.cached.set(index, block);
  }

  /** Copies [position, end) out of `blocks` (block `first` onwards) into `target`. */
  private copyOut(position: number, end: number, first: number, blocks: readonly Uint8Array[], target: Uint8Array): void {
    blocks.forEach((block, i) => {
      const blockStart = (first + i) * this.blockBytes;
      const from = Math.max(position, blockStart);
      const to = Math.min(end, blockStart + block.byteLength);
      target.set(block.subarray(from - blockStart, to - blockStart), from - position);
    });
  }

  /** Calls `visit` with the index and start of every block overlapping [position, position + lengthBytes). */
  private eachBlock(position: number, lengthBytes: number, visit: (index: number, blockStart: number) => void): void {
    const end = Math.min(position + lengthBytes, this.totalBytes);
    if (end <= position) return;
    for (let index = Math.floor(position / this.blockBytes); index <= Math.floor((end - 1) / this.blockBytes); index++) {
      visit(index, index * this.blockBytes);
    }
  }
}
