// SPDX-License-Identifier: MIT
// Status codes every exported wasm entry point returns. The core never throws across the
// boundary; TypeScript maps these to typed errors (bindings/core/wasm.ts).

/** Result of a wasm call. Negative return values of count-returning calls are `-Status`. */
export enum Status {
  /** Success. */
  OK = 0,
  /** An argument is outside its documented domain (a bug in the caller). */
  INVALID = 1,
  /** The output regions cannot hold the result; retry with a smaller batch. */
  OUTPUT_FULL = 2,
  /** Linear memory is too small for the fixed regions. */
  NO_MEMORY = 3,
  /** The image's metadata is invalid (TypeScript: QCOW2_CORRUPT); a reason code says which check. */
  CORRUPT = 4,
  /** The image is valid but uses something this engine does not implement (QCOW2_UNSUPPORTED_FEATURE). */
  UNSUPPORTED = 5,
  /** A metadata table slice must be read first: see the NEED record (need.ts). */
  NEED_TABLE = 6,
  /** A metadata cache holds only dirty slices: write metadata back first (need.ts). */
  NEED_WRITEBACK = 7,
  /** The image cannot grow further (the refcount table is full). */
  NO_SPACE = 8,
  /** The refcount table is full: grow it (refcount.ts growReftable), then call again. */
  NEED_GROWTH = 9,
  /**
   * An L2 entry must change in a table this image shares (its L1 entry lacks COPIED, e.g. after
   * an internal snapshot): copy the table first (allocate.ts allocateTableCopy), then call again.
   * The NEED record names the L1 entry (need.ts).
   */
  NEED_TABLE_COPY = 10,
}
