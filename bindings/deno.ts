// SPDX-License-Identifier: MIT
// Deno entry point `qcow2-wasm/deno`: everything of the neutral entry plus the Deno file backend
// and helpers that open image files by path. Nothing here imports node: modules.

import type { BlockImage, CreateOptions, OpenOptions } from './image.js';
import type { Qcow2Image } from './qcow2-image.js';
import { openDenoBackend } from './backends/deno.js';
import { createImageWith, openImageWith, type ImageFiles } from './open-image.js';

export * from './index.js';
export { openDenoBackend, type DenoBackendOptions } from './backends/deno.js';

/**
 * The path of `name` next to the image at `imagePath`: `name` itself when absolute (`/...`,
 * `C:\...`, `\\server\...`), else joined to the image's directory ("." when it has none).
 */
function resolveBeside(imagePath: string, name: string): string {
  if (/^(?:[/\\]|[A-Za-z]:[/\\])/.test(name)) return name;
  const cut = Math.max(imagePath.lastIndexOf('/'), imagePath.lastIndexOf('\\'));
  if (cut < 0) return name;
  return `${imagePath.slice(0, cut + 1)}${name}`;
}

/** Deno files for the path-based helpers. */
const denoFiles: ImageFiles = {
  open: (path, options) => openDenoBackend(path, options),
  resolveBeside,
};

/**
 * Opens the image file at `path` in Deno, probing qcow2 against raw by its first bytes; writable
 * unless `options.readOnly` (backing files always open read-only). Backing and external data
 * file names recorded in a qcow2 image are resolved next to the image, unless
 * `options.openBacking` / `options.openDataFile` say otherwise. Needs --allow-read for the image
 * and the files it names, and --allow-write unless read-only.
 */
export function openImageFile(path: string, options: OpenOptions = {}): Promise<BlockImage> {
  return openImageWith(denoFiles, path, options);
}

/**
 * Creates a qcow2 image file at `path` in Deno like `qemu-img create -f qcow2` (an existing file
 * is overwritten; options as createQcow2 in bindings/qcow2-create.ts takes them) and opens it
 * writable. The backing file name is stored as given and, on open, resolved next to the image
 * unless `options.openBacking` says otherwise; create itself never opens it.
 */
export function createImageFile(path: string, options: CreateOptions & OpenOptions): Promise<Qcow2Image> {
  return createImageWith(denoFiles, path, options);
}
