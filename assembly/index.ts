// SPDX-License-Identifier: MIT
// The wasm export surface: entry points, and the constants TypeScript reads at init so the
// region map, record strides and codes have exactly one definition. No logic lives here.

import {
  MAX_BATCH_REQUESTS as MAX_BATCH, REQUEST_STRIDE as REQ, REQUEST_MAP_STRIDE as MAP,
  PIECE_STRIDE as PIECE, EXTENT_STRIDE as EXTENT, RUN_STRIDE as RUNS_STRIDE, Region,
} from './layout';
import { Status } from './status';
import { MergeMode, GAP_REQUEST as GAP } from './merge';
import { GapPolicy } from './gap';

export { initLayout, regionOffset, regionBytes, fixedRegionsEnd, Region } from './layout';
export { Status } from './status';
export { mergeWrites } from './merge';
export { setGapPolicy } from './gap';

export const MAX_BATCH_REQUESTS: i32 = MAX_BATCH;
export const REQUEST_STRIDE: i32 = REQ;
export const REQUEST_MAP_STRIDE: i32 = MAP;
export const PIECE_STRIDE: i32 = PIECE;
export const EXTENT_STRIDE: i32 = EXTENT;
export const REGION_REQUESTS: i32 = Region.REQUESTS;
export const REGION_REQUEST_MAP: i32 = Region.REQUEST_MAP;
export const REGION_PIECES: i32 = Region.PIECES;
export const REGION_EXTENTS: i32 = Region.EXTENTS;
export const STATUS_INVALID: i32 = Status.INVALID;
export const STATUS_OUTPUT_FULL: i32 = Status.OUTPUT_FULL;
export const MERGE_OFF: i32 = MergeMode.OFF;
export const MERGE_ADJACENT: i32 = MergeMode.ADJACENT;
export const MERGE_FULL: i32 = MergeMode.FULL;
export const GAP_REQUEST: i32 = GAP;
export const GAP_POLICY_NEVER: i32 = GapPolicy.NEVER;
export const GAP_POLICY_WITHIN_BLOCK: i32 = GapPolicy.WITHIN_BLOCK;
export const GAP_POLICY_WITHIN_FRESH_CLUSTER: i32 = GapPolicy.WITHIN_FRESH_CLUSTER;

// qcow2 header parsing (assembly/header.ts, header-error.ts). HeaderError members export as globals named
// "HeaderError.<MEMBER>", read by bindings/qcow2/qcow2-header.ts.
export {
  parseHeader, MAX_UNKNOWN_EXTENSIONS,
  headerVersion, headerClusterBits, headerVirtualSize, headerL1Size, headerL1TableOffset,
  headerRefcountTableOffset, headerRefcountTableClusters, headerRefcountOrder,
  headerSnapshotCount, headerSnapshotsOffset, headerLengthBytes, headerCompressionType,
  headerIncompatibleFeaturesLow, headerIncompatibleFeaturesHigh,
  headerCompatibleFeaturesLow, headerCompatibleFeaturesHigh,
  headerAutoclearFeaturesLow, headerAutoclearFeaturesHigh,
  headerUnknownIncompatibleLow, headerUnknownIncompatibleHigh,
  headerIsDirty, headerIsCorrupt, headerHasLazyRefcounts, headerHasExtendedL2,
  headerHasExternalDataFile, headerIsDataFileRaw,
  headerBackingFileNameOffset, headerBackingFileNameBytes, headerBackingFormatOffset,
  headerBackingFormatBytes, headerDataFileNameOffset, headerDataFileNameBytes,
  headerFeatureTableOffset, headerFeatureNameCount, headerFeatureNameType, headerFeatureNameBit,
  headerFeatureNameOffset, headerFeatureNameBytes,
  headerUnknownExtensionCount, headerUnknownExtensionType, headerUnknownExtensionOffset,
  headerUnknownExtensionBytes,
} from './header';
export { HeaderError, headerErrorReason, headerErrorDetail, headerErrorDetailLow, headerErrorDetailHigh } from './header-error';
export { HEADER_REGION_BYTES } from './layout';
export { HeaderField, CompressionType, FeatureType } from './format';
export const REGION_HEADER: i32 = Region.HEADER;
export const STATUS_CORRUPT: i32 = Status.CORRUPT;
export const STATUS_UNSUPPORTED: i32 = Status.UNSUPPORTED;

// qcow2 image geometry, metadata caches, read mapping and write planning.
export { requiredMemoryBytes, configureImage } from './image-regions';
export { needCacheId, needHostOffset, needL1Index } from './need';
export {
  slotCount, slotHostOffset, slotAddress, isSlotDirty, slotGeneration, markSlotClean, CacheId,
  beginSliceLoad, commitSliceLoadAt as commitSliceLoad, abandonSliceLoad,
} from './cache';
export { mapRange, mapDataInCluster, mappedBytes, sliceBytes, corruptReason, corruptGuestOffset, RunKind, MappingCorruption } from './mapping';
export {
  planWrite, PlanKind,
  commitAllocation, commitSubclusters, committedCountOf, freedCountOf, zeroClusters, zeroSubclusters, ZeroMode, allocationHintCluster, skipAllocationTo,
  l1DirtyFirstOf, l1DirtyEndOf, l1ChangeCount, markL1Clean,
  allocateTableCopy, tableCopySourceOf, tableCopyTargetOf, switchToTableCopy,
} from './allocate';
// The write plan record and the per-cluster write states. PlanKind, PlanField, CopyField,
// CopySource and WriteState members export as globals named "<Enum>.<MEMBER>", read by
// bindings/qcow2/qcow2-core.ts.
export { setBackingBytes, describeContent, CopySource, PlanField, CopyField, PLAN_FIELDS, COPY_FIELDS } from './write-plan';
export { classifyClusters, inPlaceHostOffset, WriteState } from './write-state';
export {
  releaseCluster, reftableDirty, reftableChangeCount, markReftableClean, reftableEntryCount,
  growReftable, grownTableHostOffset, grownTableClusterCount,
} from './refcount';
export { tableOverlap, MetadataOverlap } from './table-index';
export { newTableFrom, l1TableHostOffset, markTableWritten } from './new-tables';
export const REGION_RUNS: i32 = Region.RUNS;
export const REGION_L1_TABLE: i32 = Region.L1_TABLE;
export const REGION_REFTABLE: i32 = Region.REFTABLE;
export const REGION_FREED: i32 = Region.FREED;
export const RUN_STRIDE: i32 = RUNS_STRIDE;
export const STATUS_NEED_TABLE: i32 = Status.NEED_TABLE;
export const STATUS_NEED_WRITEBACK: i32 = Status.NEED_WRITEBACK;
export const STATUS_NO_SPACE: i32 = Status.NO_SPACE;
export const STATUS_NEED_GROWTH: i32 = Status.NEED_GROWTH;
export const STATUS_NEED_TABLE_COPY: i32 = Status.NEED_TABLE_COPY;

// Image creation (assembly/create.ts). CreateError and CreateFlag members export as globals
// named "CreateError.<MEMBER>" / "CreateFlag.<MEMBER>", read by bindings/qcow2/qcow2-create.ts.
export {
  planCreate, renderCreate, CreateError, CreateFlag, createErrorReason, createErrorDetail,
  createFileBytes, createClusterCount, createExtentCount, createExtentStart, createExtentBytes,
} from './create';

// Consistency check and repair (assembly/check*.ts). CheckRegion, WalkMode, RepairMode, CheckCount,
// CheckEvent and RepairBlocker members export as globals named "<Enum>.<MEMBER>", read by
// bindings/qcow2/qcow2-check-session.ts.
export { configureCheck, checkBegin } from './check';
export {
  checkRegionsBytes, checkRegionOffset, checkRegionBytes, checkCount, checkEventCount, checkEventsDropped,
  clearCheckEvents, CheckRegion, CheckCount, CheckEvent, CHECK_EVENT_CAPACITY, CHECK_EVENT_STRIDE,
} from './check-state';
export { snapshotTableConsume, snapshotIdPosition, snapshotIdBytes, snapshotNameBytes } from './check-snapshots';
export {
  checkAddRange, l1WalkBegin, l1ChunkHostOffset, l1ChunkBytes, l1ChunkProcess, l1ChunkChanged, l2TableProcess,
  checkRefblocks, WalkMode,
} from './check-walk';
export {
  compareBlockCount, compareBlockHostOffset, compareBlock, planRepair, repairBlockHostOffset, repairBlock,
  RepairMode, RepairBlocker,
} from './check-refcounts';

// Snapshot table entries for listing (assembly/snapshot.ts).
export {
  parseSnapshotEntry, snapshotIdStart, snapshotIdLength, snapshotNameLength, snapshotL1Offset, snapshotL1Entries,
  snapshotDateSeconds, snapshotDateNanoseconds, snapshotVmClockNanoseconds, snapshotVmStateBytes, snapshotDiskBytes,
  snapshotIcount,
} from './snapshot';

// Metadata tools (snapshots, resize, amend, commit, check repair): table entries, snapshot table
// entries and headers read and written in the HEADER region, the window TypeScript places bytes in
// (assembly/table-entries.ts, assembly/snapshot.ts, assembly/header-render.ts).
export {
  entryHostOffset, setEntryHostOffset, setEntryCopied, l2EntryIsCompressed, l2EntryHasZeroFlag, l2EntryReadsAsZeros,
  compressedDataOffset, compressedRunStart, compressedRunBytes, relocateL2Entry, setL2DataEntry,
  setL2CompressedEntry, setL2ZeroEntry,
  reftableEntryOffset, setReftableEntry, refcountAt, setRefcountAt,
} from './table-entries';
export { renderSnapshotEntry, setSnapshotEntryL1Offset } from './snapshot';
export {
  headerPatchSourceBytes, headerPatchBegin, headerPatchStart, headerPatchEnd, patchHeaderTables, patchHeaderReftable,
  patchHeaderSetCorrupt, patchHeaderClearFlags, patchHeaderClearAutoclear,
  renderHeader, headerExtensionDataAt, appendHeaderExtension, appendFeatureNameTable, finishHeader,
} from './header-render';
