// SPDX-License-Identifier: MIT
// Typed errors with stable string codes. Every error this library raises is a Qcow2WasmError;
// the platform or backend failure behind it, if any, is attached as `cause`.

/** Stable error codes, grouped by prefix: what failed, not where. */
export type ErrorCode =
  | 'INVALID_ARGUMENT' // a caller passed a value outside the documented domain
  | 'IMAGE_OUT_OF_RANGE' // a guest range reaches past the image's virtual size
  | 'IMAGE_READ_ONLY' // a write to an image opened read-only
  | 'IMAGE_CLOSED' // any call after close()
  | 'IMAGE_IO_ERROR' // a host I/O carrying this request failed; the backend error is the cause
  | 'IMAGE_FORMAT_UNKNOWN' // the bytes are not an image format this entry point opens
  | 'IMAGE_LOCKED' // the file is already open in a way this open conflicts with (one writer per image; in browsers: another tab or worker)
  | 'IMAGE_WRITE_REFUSED' // a write that would make a probed raw image probe as another format
  | 'QCOW2_CORRUPT' // the image's metadata is inconsistent
  | 'QCOW2_UNSUPPORTED_FEATURE' // a valid image using something this engine does not implement
  | 'QCOW2_READ_ONLY' // the image may only be opened read-only (e.g. corrupt bit set)
  | 'QCOW2_NO_SPACE' // the image cannot grow further
  | 'BACKEND_READ_ONLY' // a write, truncate or discard on a read-only backend
  | 'BACKEND_CLOSED' // any call after the backend was closed
  | 'BACKEND_IO_ERROR' // the platform's I/O call failed; its error is the cause
  | 'BACKEND_NOT_SUPPORTED' // an optional operation the backend does not offer
  | 'WASM_INTERNAL'; // the wasm core reported an internal inconsistency (a bug)

/** Base class of every error this library throws or rejects with. */
export class Qcow2WasmError extends Error {
  /** Stable machine-readable code; safe to switch on. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
// Names are set as literals: a minifier renames classes, and `error.name` must stay readable.
Qcow2WasmError.prototype.name = 'Qcow2WasmError';

/** An error raised by a storage backend (codes `BACKEND_*`). */
export class BackendError extends Qcow2WasmError {}
BackendError.prototype.name = 'BackendError';

/** An error raised by an image: bad arguments, failed requests, format problems. */
export class ImageError extends Qcow2WasmError {}
ImageError.prototype.name = 'ImageError';

/**
 * A value as a message should print it: an integer in full decimal (2 ** 63 prints as
 * 9223372036854775808, not 9223372036854776000), anything else as String() gives it.
 */
export function exactNumber(value: unknown): string {
  return typeof value === 'number' && Number.isInteger(value) ? BigInt(value).toString() : String(value);
}
