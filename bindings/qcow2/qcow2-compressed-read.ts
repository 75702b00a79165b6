// SPDX-License-Identifier: MIT
// Reading compressed clusters of a qcow2 image: a group of neighbouring compressed clusters with
// one host read and one decode call, or one cluster at a time, keeping the last decoded cluster so
// that small reads inside it (and copy-on-write of its parts) decode it once.

import type { Backend } from '../backends/backend.js';
import type { ImageStats } from '../dispatch/image.js';
import type { Qcow2Header } from './qcow2-header.js';
import type { MappedRun } from './qcow2-core.js';
import type { CompressedRunGroup } from './compressed-run-groups.js';
import { compressedInputBuffer, decodeCluster, decodeClusters, holdClusterBatchDecoder } from './decompress.js';

/** Decodes the compressed clusters of one image, counting its host reads in `counters`. */
export class Qcow2CompressedReader {
  private lastInflated: { hostOffset: number; cluster: Uint8Array } | undefined;
  /** Lets the batch decoder go (held from the first group read until close). */
  private releaseBatchDecoder: (() => void) | undefined;

  constructor(private readonly backend: Backend, private readonly header: Qcow2Header, private readonly counters: ImageStats) {}

  /** Lets the batch decoder go: when no open image holds it, it ends its threads. */
  close(): void {
    this.releaseBatchDecoder?.();
    this.releaseBatchDecoder = undefined;
  }

  /** Drops the kept cluster (after the image's metadata was rewritten: host offsets may be reused). */
  forget(): void {
    this.lastInflated = undefined;
  }

  /**
   * Reads the compressed bytes of `group` with one host read, then decodes them all at once
   * (decodeClusters): whole clusters straight into `targetOf(run)`, partial ones through a
   * cluster buffer (the last kept as the last inflated cluster).
   */
  async readGroup(group: CompressedRunGroup, targetOf: (run: MappedRun) => Uint8Array): Promise<void> {
    this.releaseBatchDecoder ??= holdClusterBatchDecoder();
    const clusterBytes = this.header.clusterSize;
    const compressed = compressedInputBuffer(this.header.compressionType, group.hostEnd - group.hostStart, group.runs.length, clusterBytes);
    this.counters.hostReadCalls++;
    this.counters.hostReadBytes += compressed.byteLength;
    await this.backend.preadv(group.hostStart, [compressed]);
    const partial: { run: MappedRun; cluster: Uint8Array }[] = [];
    const pieces = group.runs.map((run) => {
      const start = run.hostOffset - group.hostStart;
      const whole = run.guestOffset % clusterBytes === 0 && run.length === clusterBytes;
      const cluster = whole ? targetOf(run) : new Uint8Array(clusterBytes);
      if (!whole) partial.push({ run, cluster });
      return { start, end: start + run.compressedBytes, hostOffset: run.hostOffset, cluster };
    });
    await decodeClusters(this.header.compressionType, compressed, pieces);
    for (const { run, cluster } of partial) {
      const inCluster = run.guestOffset % clusterBytes;
      targetOf(run).set(cluster.subarray(inCluster, inCluster + run.length));
      this.lastInflated = { hostOffset: run.hostOffset, cluster };
    }
  }

  /**
   * The guest cluster whose `compressedBytes` bytes of compressed data are at `hostOffset`,
   * decoded (the last one decoded is kept, so reading it piece by piece decodes it once).
   */
  async inflated(hostOffset: number, compressedBytes: number): Promise<Uint8Array> {
    const cached = this.lastInflated;
    if (cached && cached.hostOffset === hostOffset) return cached.cluster;
    const compressed = new Uint8Array(compressedBytes);
    this.counters.hostReadCalls++;
    this.counters.hostReadBytes += compressed.byteLength;
    await this.backend.preadv(hostOffset, [compressed]);
    const cluster = new Uint8Array(this.header.clusterSize);
    await decodeCluster(this.header.compressionType, compressed, cluster, hostOffset);
    this.lastInflated = { hostOffset, cluster };
    return cluster;
  }
}
