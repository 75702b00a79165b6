// SPDX-License-Identifier: MIT
// Node entry point `qcow2-wasm/node`: everything of the neutral entry plus the Node file backend
// and helpers that open image files by path.

import type { BlockImage, CreateOptions, OpenOptions } from './dispatch/image.js';
import type { Qcow2Image } from './qcow2/qcow2-image.js';
import { nodeFiles } from './files/node-files.js';
import { createImageWith, openImageWith, type FileOpenOptions } from './files/open-image.js';
import { installNodeDecoders } from './qcow2/node-decoders.js';
import { pageAlignedBuffer, setChunkAllocator, setConvertChunkBytes } from './tools/convert-chunk-size.js';

export * from './index.js';

// Compressed clusters decode natively (node:zlib, WebAssembly zstd), not in JavaScript.
installNodeDecoders();
// Convert's chunk buffers: 2 MiB (eight in flight and the spares stay in the CPU's cache between
// the read into them and the write out of them: with 4 MiB and more, copying the page cache out
// of them took twice the system time and more), each starting on a page (the kernel copies into
// and out of such buffers faster).
setConvertChunkBytes(2 << 20);
setChunkAllocator(pageAlignedBuffer);
export { openNodeBackend } from './backends/node.js';
export { createWorkerCompressor } from './qcow2/compress-node.js';

export type { FileOpenOptions } from './files/open-image.js';

/**
 * Opens the image file at `path`, writable unless `options.readOnly` (backing files always open
 * read-only). Pass `options.format` ('qcow2' or 'raw') when it is known: without it the format is
 * probed, and a probed raw image refuses guest writes that would make it probe as another format
 * (IMAGE_WRITE_REFUSED). One writer per file in this process (IMAGE_LOCKED; read-only opens
 * beside a writer need `options.shareWithWriter`); other processes are not locked out. Backing
 * and external data file names are resolved next to the image that records them, unless
 * `options.openBacking` / `options.openDataFile` say otherwise. A failed open closes what it opened.
 */
export function openImageFile(path: string, options: FileOpenOptions = {}): Promise<BlockImage> {
  return openImageWith(nodeFiles, path, options);
}

/**
 * Creates a qcow2 image file at `path` like `qemu-img create -f qcow2` (an existing file is
 * overwritten; options as {@link createQcow2} takes them) and opens it
 * writable. Refused with the existing file untouched: a file open in this process (IMAGE_LOCKED),
 * a backing file that is the file itself or has it in its backing chain (INVALID_ARGUMENT). The
 * backing file name is stored as given and resolved next to the image unless
 * `options.openBacking` says otherwise.
 */
export function createImageFile(path: string, options: CreateOptions & OpenOptions): Promise<Qcow2Image> {
  return createImageWith(nodeFiles, path, options);
}
