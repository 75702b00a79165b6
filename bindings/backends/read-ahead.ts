// SPDX-License-Identifier: MIT
// A block cache with adaptive read-ahead for read-only remote storage (HTTP parts or ranges):
// like a page cache, a run of sequential reads widens the window of blocks fetched ahead, a
// jump elsewhere closes it.

/** Knobs of ReadAheadCache. */
export interface ReadAheadOptions {
  /** Most blocks kept (least recently used go first); at least 2 + maxAheadBlocks. */
  cacheBlocks: number;
  /** The widest read-ahead window, in blocks (0: no read-ahead). */
  maxAheadBlocks: number;
}

/**
 * Serves byte ranges of a read-only object of `totalBytes`, stored as blocks of `blockBytes`
 * (the last one shorter), each fetched whole by `fetchBlock(index)`, which must resolve with
 * exactly that block's bytes.
 *
 * Blocks are cached (LRU), and concurrent reads of one block share one fetch. Sequential access
 * (a read starting in the block where the previous one ended, or the next) doubles the window of
 * blocks fetched ahead, from 1 up to `maxAheadBlocks`, and once fewer than half of them are
 * ready the rest are requested together; any other read closes the window. A failed fetch
 * is not cached: a read that needs the block rejects with the fetch's error, and the next read
 * tries again; a failed read-ahead fetch is dropped silently (the read that needs it refetches).
 */
export class ReadAheadCache {
  private readonly cached = new Map<number, Uint8Array>();
  private readonly fetching = new Map<number, Promise<Uint8Array>>();
  private windowBlocks = 0;
  private lastEndBlock = -2;
  private readonly blockCount: number;
  /** Blocks fetched so far (read-ahead included); for reports and tests. */
  fetchedBlocks = 0;

  constructor(
    private readonly blockBytes: number,
    private readonly totalBytes: number,
    private readonly fetchBlock: (index: number) => Promise<Uint8Array>,
    private readonly options: ReadAheadOptions,
  ) {
    this.blockCount = Math.ceil(totalBytes / blockBytes);
  }

  /** Copies [position, position + target.byteLength) into `target`; bytes past the end read as zeros. */
  async read(position: number, target: Uint8Array): Promise<void> {
    const end = Math.min(position + target.byteLength, this.totalBytes);
    target.fill(0, Math.max(0, end - position));
    if (end <= position) return;
    const first = Math.floor(position / this.blockBytes);
    const last = Math.floor((end - 1) / this.blockBytes);
    this.adapt(first, last);
    const blocks = await Promise.all(Array.from({ length: last - first + 1 }, (_, i) => this.block(first + i)));
    blocks.forEach((block, i) => {
      const blockStart = (first + i) * this.blockBytes;
      const from = Math.max(position, blockStart);
      const to = Math.min(end, blockStart + block.byteLength);
      target.set(block.subarray(from - blockStart, to - blockStart), from - position);
    });
  }

  /** The current read-ahead window in blocks (0 after random access). */
  get aheadBlocks(): number {
    return this.windowBlocks;
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
    for (let index = last + 1 + ahead; index <= last + this.windowBlocks && index < this.blockCount; index++) {
      if (!this.cached.has(index) && !this.fetching.has(index)) this.block(index).catch(() => undefined);
    }
  }

  private block(index: number): Promise<Uint8Array> {
    const hit = this.cached.get(index);
    if (hit !== undefined) {
      this.cached.delete(index); // most recently used goes last
      this.cached.set(index, hit);
      return Promise.resolve(hit);
    }
    let pending = this.fetching.get(index);
    if (pending === undefined) {
      this.fetchedBlocks++;
      pending = this.fetchBlock(index).then((bytes) => {
        this.cached.set(index, bytes);
        while (this.cached.size > Math.max(this.options.cacheBlocks, this.options.maxAheadBlocks + 2)) {
          this.cached.delete(this.cached.keys().next().value!);
        }
        return bytes;
      }).finally(() => this.fetching.delete(index));
      this.fetching.set(index, pending);
    }
    return pending;
  }
}
