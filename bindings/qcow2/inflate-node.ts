// SPDX-License-Identifier: MIT
// node:zlib's raw-deflate decoder for compressed qcow2 clusters: native code in libuv's thread
// pool, so the clusters of one read decode in parallel. Installed by the Node entry point.

import { constants, inflateRaw } from 'node:zlib';
import type { NativeDeflateDecoder } from './decompress.js';

/**
 * Inflates a cluster's raw deflate stream with node:zlib. Output stops at `clusterBytes`: a
 * stream that would produce more resolves undefined (the portable decoder then takes it and stops
 * at a full cluster); a truncated stream resolves with what it produced; bytes after the stream's
 * end are ignored.
 */
export const nodeDeflateDecoder: NativeDeflateDecoder = (compressed, clusterBytes) => new Promise((resolve, reject) => {
  inflateRaw(compressed, { finishFlush: constants.Z_SYNC_FLUSH, maxOutputLength: clusterBytes, chunkSize: Math.max(clusterBytes, constants.Z_MIN_CHUNK) }, (error, output) => {
    if ((error as { code?: string } | null)?.code === 'ERR_BUFFER_TOO_LARGE') resolve(undefined);
    else if (error) reject(error);
    else resolve(output);
  });
});
