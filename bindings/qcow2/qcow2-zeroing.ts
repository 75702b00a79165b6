// SPDX-License-Identifier: MIT
// writeZeroes and discard for qcow2: whole clusters are zeroed in the metadata (the zero flag on
// v3 and extended L2; unallocated on v2 without a backing file, where that reads as zeros), with
// extended L2 so are whole subclusters of partly covered clusters; the bytes left get zero data
// through the write path.

import type { Backend } from '../backends/backend.js';
import type { ImageStats } from '../dispatch/image.js';
import type { Qcow2Header } from './qcow2-header.js';
import type { Qcow2Core } from './qcow2-core.js';
import type { Qcow2Writeback } from './qcow2-writeback.js';
import type { Qcow2WritePath } from './qcow2-write-path.js';
import { zeroVector } from '../base/iovec.js';
import { allSettledOrThrow } from '../base/settle.js';

/** What zeroing needs from its image (DispatchedImage's ordering and zero-data writes). */
export interface ZeroingHost {
  readonly counters: ImageStats;
  readonly virtualSize: number;
  /** Whether the image has a backing file (unallocated clusters then do not read as zeros). */
  readonly hasBacking: boolean;
  /** Runs `run` ordered behind every earlier overlapping read and write of guest [start, end). */
  orderedUpdate(start: number, end: number, run: () => Promise<void>): Promise<void>;
  /** Writes zero data to guest [offset, offset + length) as a guest write would. */
  writeZeroData(offset: number, length: number): Promise<void>;
  /** Marks a guest-visible change (the loss window's timer starts if it is idle). */
  changed<T>(work: Promise<T>): Promise<T>;
}

/** Zeroing and discard of one qcow2 image. */
export class Qcow2Zeroing {
  constructor(private readonly core: Qcow2Core, private readonly backend: Backend, private readonly header: Qcow2Header,
              private readonly writeback: Qcow2Writeback, private readonly writes: Qcow2WritePath,
              private readonly host: ZeroingHost) {}

  /** Makes guest [offset, offset + length) read as zeros (writeZeroes). */
  zeroRange(offset: number, length: number): Promise<void> {
    const [start, end] = this.wholeClusters(offset, length);
    const zeroFlag = this.header.version === 3;
    // An external data file is read on its own too (data_file_raw): its zeros must be real.
    if ((!zeroFlag && this.host.hasBacking) || this.header.flags.externalDataFile) return this.host.writeZeroData(offset, length);
    this.host.counters.guestWriteRequests++;
    this.host.counters.guestWriteBytes += Math.max(0, end - start);
    const parts: Promise<void>[] = [];
    if (start < end) {
      parts.push(this.host.orderedUpdate(start, end, () => this.zeroClusters(start, end, zeroFlag)));
      if (offset < start) parts.push(this.zeroPartialClusters(offset, start));
      if (end < offset + length) parts.push(this.zeroPartialClusters(end, offset + length));
    } else {
      parts.push(this.zeroPartialClusters(offset, offset + length));
    }
    return this.host.changed(allSettledOrThrow(parts));
  }

  /** Discard frees whole clusters (reading as zeros afterwards); partial clusters keep their data. */
  async discardRange(offset: number, length: number): Promise<void> {
    const [start, end] = this.wholeClusters(offset, length);
    const zeroFlag = this.header.version === 3;
    if (start < end && (zeroFlag || !this.host.hasBacking) && !this.header.flags.externalDataFile) await this.host.changed(this.zeroClusters(start, end, zeroFlag));
  }

  // Zeroes guest [from, to), which covers no whole cluster: whole subclusters by metadata with
  // extended L2 (ordered like a write of their cluster; a compressed cluster, which has no
  // subclusters, gets zero data inside that same ordered step), the rest with zero data.
  private zeroPartialClusters(from: number, to: number): Promise<void> {
    if (!this.header.flags.extendedL2) return this.host.writeZeroData(from, to - from);
    const clusterBytes = this.header.clusterSize;
    const subclusterBytes = clusterBytes / 32;
    const virtualSize = this.host.virtualSize;
    const parts: Promise<void>[] = [];
    for (let pieceStart = from; pieceStart < to;) {
      const clusterStart = Math.floor(pieceStart / clusterBytes) * clusterBytes;
      const pieceEnd = Math.min(to, clusterStart + clusterBytes);
      const wholeStart = Math.ceil(pieceStart / subclusterBytes) * subclusterBytes;
      const wholeEnd = pieceEnd === virtualSize ? Math.ceil(pieceEnd / subclusterBytes) * subclusterBytes
        : Math.floor(pieceEnd / subclusterBytes) * subclusterBytes;
      if (wholeStart < wholeEnd) {
        parts.push(this.host.orderedUpdate(clusterStart, clusterStart + clusterBytes, async () => {
          if (!(await this.core.zeroSubclusters(wholeStart, wholeEnd, this.backend))) {
            const inside = Math.min(wholeEnd, virtualSize) - wholeStart;
            await this.writes.writeExtent(wholeStart, inside, zeroVector(inside), []);
          }
        }));
        if (pieceStart < wholeStart) parts.push(this.host.writeZeroData(pieceStart, wholeStart - pieceStart));
        if (wholeEnd < pieceEnd) parts.push(this.host.writeZeroData(wholeEnd, pieceEnd - wholeEnd));
      } else {
        parts.push(this.host.writeZeroData(pieceStart, pieceEnd - pieceStart));
      }
      pieceStart = pieceEnd;
    }
    return allSettledOrThrow(parts);
  }

  // The whole clusters inside guest [offset, offset + length); a range reaching the end of the
  // image also covers the last cluster, which may extend past the virtual size.
  private wholeClusters(offset: number, length: number): [number, number] {
    const size = this.header.clusterSize;
    const start = Math.ceil(offset / size) * size;
    const end = offset + length === this.host.virtualSize ? Math.ceil(this.host.virtualSize / size) * size : Math.floor((offset + length) / size) * size;
    return [start, end];
  }

  private async zeroClusters(start: number, end: number, zeroFlag: boolean): Promise<void> {
    await this.writes.settlePending(start, end);
    const freed = await this.core.zeroClusters(start, (end - start) / this.header.clusterSize, zeroFlag, this.backend);
    this.writeback.releaseLater(freed);
  }
}
