// SPDX-License-Identifier: MIT
// Export as a qcow2 image into a WritableStream that only appends (a download through a service
// worker, a pipe, an HTTP upload): two passes over the source. The first reads only its
// allocation map and decides every guest cluster's fate, so the image's tables are laid out and
// written first (bindings/qcow2/qcow2-stream-layout.ts); the second reads the data and streams
// the data clusters in guest order behind them.
//
// A cluster the map says holds data is written even if its bytes turn out to be zeros: by then
// the tables that place it are already written. (Reading the data twice to find such clusters
// would double the bytes read, over HTTP the slow part.) So the image can be larger than
// convertToQcow2's, never different in what it reads.

import type { BlockImage } from '../dispatch/image.js';
import { ImageError } from '../base/errors.js';
import { Qcow2StreamLayout, StreamedCluster } from '../qcow2/qcow2-stream-layout.js';
import { classifySource } from './convert-plan.js';
import { convertChunkBytes } from './convert-chunk-size.js';
import { readRanges, runPipeline, APPLIED, type Action, type Applied } from './convert-pipeline.js';
import { ClusterNeed, clusterNeeds } from './convert-cluster-plan.js';
import { checkOptions, type ConvertOptions, type ConvertResult, type ConvertToQcow2Options } from './convert.js';

/** Options of convertToQcow2Stream: convert's, and the new image's create options. */
export interface ConvertToQcow2StreamOptions extends ConvertOptions {
  /** As convertToQcow2's `create` (virtualSize defaults to the source's; `preallocation` refused). */
  create?: ConvertToQcow2Options['create'];
  /** Called once the layout is known, before anything is written, with the length of the whole file. */
  onFileBytes?: (fileBytes: number) => void;
}

/** Guest bytes the map pass classifies at once. */
const MAP_BYTES = 1 << 30;

/**
 * Writes `source` as a new qcow2 image into `stream`, strictly front to back (the stream never
 * seeks): options.create as convertToQcow2 takes them (a `backingFile` makes it an overlay of
 * what the source's top layer holds, as qemu-img convert -B). Unallocated and zero ranges are
 * left out as convertToQcow2 leaves them, judged by the source's allocation map (-S: a cluster
 * mapped as data is stored even if it holds zeros; `minSparseBytes` 0 stores every cluster).
 * The source must not change while this runs. Each buffer handed to the stream is its own (the
 * stream may keep it); writes wait for the stream's backpressure (`ready`). Closes the stream
 * when done; aborts it on failure and rethrows. Errors: Qcow2CreateError for create options,
 * INVALID_ARGUMENT, source read errors, the stream's errors.
 */
export async function convertToQcow2Stream(source: BlockImage, stream: WritableStream<Uint8Array>,
  options: ConvertToQcow2StreamOptions = {}): Promise<ConvertResult> {
  const { minSparse, inFlight } = checkOptions(options);
  const virtualSize = options.create?.virtualSize ?? source.virtualSize;
  if (virtualSize < source.virtualSize) {
    throw new ImageError('INVALID_ARGUMENT', `the target's virtual size ${virtualSize} is below the source's ${source.virtualSize}`);
  }
  if (stream.locked) throw new ImageError('INVALID_ARGUMENT', 'the target stream is locked: another writer holds it');
  const layout = await Qcow2StreamLayout.start({ ...options.create, virtualSize });
  const writer = stream.getWriter();
  const write = async (bytes: Uint8Array): Promise<void> => {
    await writer.ready;
    writer.write(bytes).catch(() => {}); // a failed write errors the stream: ready and close reject with it
  };
  try {
    const targetHasBacking = options.create?.backingFile !== undefined && options.create.backingFile !== '';
    await planClusters(source, layout, targetHasBacking, minSparse === 0);
    const fileBytes = layout.place();
    options.onFileBytes?.(fileBytes);
    for await (const bytes of layout.metadata()) await write(bytes);

    const clusterBytes = layout.clusterBytes;
    let dataClusters = 0;
    const prepare = async (start: number, length: number, buffer: Uint8Array): Promise<Action[]> => {
      const firstCluster = start / clusterBytes;
      const clusterCount = Math.ceil(length / clusterBytes);
      const runs: [number, number][] = [];
      for (let c = 0; c < clusterCount; c++) {
        if (layout.clusters[firstCluster + c] !== StreamedCluster.DATA) continue;
        const from = start + c * clusterBytes;
        const to = from + clusterBytes;
        const last = runs[runs.length - 1];
        if (last && last[1] === from) last[1] = to;
        else runs.push([from, to]);
      }
      // What lies past the source (its end, or a larger target) reads as zeros.
      buffer.fill(0, Math.max(0, source.virtualSize - start));
      const readable = runs.map(([from, to]): [number, number] => [from, Math.min(to, source.virtualSize)]).filter(([from, to]) => from < to);
      await readRanges(source, start, buffer, readable);
      return runs.map(([from, to]) => ({ kind: 'data', guestOffset: from, bytes: buffer.subarray(from - start, to - start) }));
    };
    const apply = async (actions: Action[]): Promise<Applied> => {
      for (const action of actions) {
        if (action.kind !== 'data') continue;
        await write(action.bytes);
        dataClusters += action.bytes.byteLength / clusterBytes;
      }
      return APPLIED;
    };
    const dataBytes = await runPipeline({
      source, clusterBytes, chunkBytes: Math.ceil(convertChunkBytes() / clusterBytes) * clusterBytes, inFlight,
      prepare, apply, pooled: false, onProgress: options.onProgress,
    });
    await writer.close();
    const zeroClusters = layout.clusters.reduce((n, kind) => n + (kind === StreamedCluster.ZERO ? 1 : 0), 0);
    return { virtualSize, dataBytes, qcow2: { fileBytes, dataClusters, compressedClusters: 0, zeroClusters } };
  } catch (error) {
    await writer.abort(error).catch(() => {});
    throw error;
  }
}

/** The map pass: marks each guest cluster of `layout` DATA, ZERO or NONE from the source's allocation, reading no data. */
async function planClusters(source: BlockImage, layout: Qcow2StreamLayout, targetHasBacking: boolean, fullyAllocate: boolean): Promise<void> {
  const clusterBytes = layout.clusterBytes;
  const span = Math.max(1, Math.floor(MAP_BYTES / clusterBytes)) * clusterBytes;
  for (let start = 0; start < source.virtualSize; start += span) {
    const length = Math.min(span, source.virtualSize - start);
    const clusterCount = Math.ceil(length / clusterBytes);
    const segments = await classifySource(source, start, length, targetHasBacking, fullyAllocate);
    const needs = clusterNeeds(segments, start, clusterCount, clusterBytes);
    const first = start / clusterBytes;
    for (let c = 0; c < clusterCount; c++) {
      const need = needs[c];
      let kind: StreamedCluster = StreamedCluster.NONE;
      if (need === ClusterNeed.DATA) kind = StreamedCluster.DATA;
      // A new image reads zeros already; over a backing file zeros must be stored (as data where there is no zero flag).
      else if (need === ClusterNeed.ZERO && targetHasBacking) kind = layout.zeroFlagSupported ? StreamedCluster.ZERO : StreamedCluster.DATA;
      layout.clusters[first + c] = kind;
    }
  }
}
