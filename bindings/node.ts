// SPDX-License-Identifier: MIT
// Node entry point `qcow2-wasm/node`: everything of the neutral entry plus the Node file backend
// and helpers that open image files by path.

import { dirname, resolve } from 'node:path';
import type { BlockImage, CreateOptions, OpenOptions } from './image.js';
import type { Qcow2Image } from './qcow2-image.js';
import { openNodeBackend } from './backends/node.js';
import { createImageWith, openImageWith, type ImageFiles } from './open-image.js';
import { setNativeDeflateDecoder } from './decompress.js';
import { nodeDeflateDecoder } from './inflate-node.js';

export * from './index.js';

// Compressed clusters (zlib) decode with node:zlib in the thread pool instead of in JavaScript.
setNativeDeflateDecoder(nodeDeflateDecoder);
export { openNodeBackend } from './backends/node.js';

/** Node files for the path-based helpers: names resolve against the image's directory. */
const nodeFiles: ImageFiles = {
  open: (path, options) => openNodeBackend(path, options),
  resolveBeside: (imagePath, name) => resolve(dirname(imagePath), name),
};

/**
 * Opens the image file at `path`, probing qcow2 against raw by its first bytes; writable unless
 * `options.readOnly` (backing files always open read-only). Backing and
 * external data file names recorded in a qcow2 image are resolved next to the image, unless
 * `options.openBacking` / `options.openDataFile` say otherwise.
 */
export function openImageFile(path: string, options: OpenOptions = {}): Promise<BlockImage> {
  return openImageWith(nodeFiles, path, options);
}

/**
 * Creates a qcow2 image file at `path` like `qemu-img create -f qcow2` (an existing file is
 * overwritten; options as createQcow2 in bindings/qcow2-create.ts takes them) and opens it
 * writable. The backing file name is stored as given and, on open, resolved next to the image
 * unless `options.openBacking` says otherwise; create itself never opens it.
 */
export function createImageFile(path: string, options: CreateOptions & OpenOptions): Promise<Qcow2Image> {
  return createImageWith(nodeFiles, path, options);
}
