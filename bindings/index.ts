// SPDX-License-Identifier: MIT
// Platform-neutral entry point `qcow2-wasm`: images, the backend contract, the memory backend,
// errors and wasm initialisation. Platform backends live in their own entry points.

export { RawImage } from './raw/raw-image.js';
export { Qcow2Image } from './qcow2/qcow2-image.js';
export { checkQcow2, checkExitCode, qemuCheckJson, type Qcow2CheckOptions, type Qcow2CheckReport, type Qcow2RepairMode } from './qcow2/qcow2-check.js';
export { createQcow2 } from './qcow2/qcow2-create.js';
export { probeFormat } from './qcow2/qcow2-image.js';
export { mapImage, type MapEntry } from './tools/qcow2-map.js';
export { allocationMap, type AllocationMap } from './tools/allocation-map.js';
export { convertToQcow2, convertToRaw, convertInto, convertToRawStream, type ConvertOptions, type ConvertToQcow2Options, type ConvertIntoOptions, type ConvertResult } from './tools/convert.js';
export { convertToQcow2Stream, type ConvertToQcow2StreamOptions } from './tools/convert-stream.js';
export { convertIntoCompressed, type ConvertIntoCompressedOptions } from './tools/convert-compressed-into.js';
export { ConcatenatedImage, type ConcatenatedPart } from './tools/concatenated-image.js';
export { createInlineCompressor, type ClusterCompressor, type CompressionType } from './qcow2/compress.js';
export type { Qcow2Snapshot } from './qcow2/qcow2-snapshots.js';
export { createSnapshot, applySnapshot, deleteSnapshot, readSnapshotVmState, SnapshotNotFoundError, type CreateSnapshotOptions } from './qcow2/qcow2-snapshot-ops.js';
export { writeCompressedClusters, CompressedOverwriteError, type CompressedClusterWrite } from './qcow2/qcow2-compressed-write.js';
export { resizeQcow2, type ResizeOptions } from './tools/resize.js';
export { amendQcow2, type AmendOptions } from './tools/amend.js';
export { commitImage, layerRanges, type CommitOptions, type LayerRange } from './tools/commit.js';
export { copyBackingDifferences, type RebaseCopyOptions } from './tools/rebase.js';
export { writeBackingFileName } from './qcow2/qcow2-backing-name.js';
export { emptyActiveLayer } from './qcow2/qcow2-make-empty.js';
export type { BlockImage, WriteRequest, ImageStats, OpenOptions, CreateOptions } from './dispatch/image.js';
export type { MergeMode } from './core/merge-core.js';
export type { Backend, BackendCapabilities, BackendLimits } from './backends/backend.js';
export { pread, pwrite } from './backends/backend.js';
export { createMemoryBackend } from './backends/memory.js';
export { Qcow2WasmError, BackendError, ImageError, type ErrorCode } from './base/errors.js';
export { init, type InitOptions } from './core/wasm.js';
