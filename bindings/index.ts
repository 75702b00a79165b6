// SPDX-License-Identifier: MIT
// Platform-neutral entry point `qcow2-wasm`: images, the backend contract, the memory backend,
// errors and wasm initialisation. Platform backends live in their own entry points.

export { RawImage } from './raw-image.js';
export { Qcow2Image } from './qcow2-image.js';
export { checkQcow2, checkExitCode, qemuCheckJson, type Qcow2CheckOptions, type Qcow2CheckReport, type Qcow2RepairMode } from './qcow2-check.js';
export { createQcow2 } from './qcow2-create.js';
export { probeFormat } from './qcow2-image.js';
export { mapImage, type MapEntry } from './qcow2-map.js';
export { allocationMap, type AllocationMap } from './allocation-map.js';
export { convertToQcow2, convertToRaw, convertInto, convertToRawStream, type ConvertOptions, type ConvertToQcow2Options, type ConvertIntoOptions, type ConvertResult } from './convert.js';
export { ConcatenatedImage, type ConcatenatedPart } from './concatenated-image.js';
export { createInlineCompressor, type ClusterCompressor, type CompressionType } from './compress.js';
export type { Qcow2Snapshot } from './qcow2-snapshots.js';
export { createSnapshot, applySnapshot, deleteSnapshot, readSnapshotVmState, SnapshotNotFoundError, type CreateSnapshotOptions } from './qcow2-snapshot-ops.js';
export { resizeQcow2, type ResizeOptions } from './resize.js';
export { amendQcow2, type AmendOptions } from './amend.js';
export { commitImage, layerRanges, type CommitOptions, type LayerRange } from './commit.js';
export { copyBackingDifferences, type RebaseCopyOptions } from './rebase.js';
export { writeBackingFileName } from './qcow2-backing-name.js';
export { emptyActiveLayer } from './qcow2-make-empty.js';
export type { BlockImage, WriteRequest, ImageStats, OpenOptions, CreateOptions } from './image.js';
export type { MergeMode } from './merge-core.js';
export type { Backend, BackendCapabilities, BackendLimits } from './backend.js';
export { pread, pwrite } from './backend.js';
export { createMemoryBackend } from './backends/memory.js';
export { Qcow2WasmError, BackendError, ImageError, type ErrorCode } from './errors.js';
export { init, type InitOptions } from './wasm.js';
