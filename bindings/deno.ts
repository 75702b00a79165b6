// SPDX-License-Identifier: MIT
// Deno entry point `qcow2-wasm/deno`: everything of the neutral entry plus the Deno file backend
// and helpers that open image files by path. Nothing here imports node: modules.

import type { BlockImage, CreateOptions, OpenOptions } from './dispatch/image.js';
import type { Qcow2Image } from './qcow2/qcow2-image.js';
import { openDenoBackend } from './backends/deno.js';
import { createImageWith, openImageWith, type FileOpenOptions, type ImageFiles } from './files/open-image.js';

export * from './index.js';
export { openDenoBackend, type DenoBackendOptions } from './backends/deno.js';
export type { FileOpenOptions } from './files/open-image.js';

/** The part of the Deno namespace the path rules use (declared: bindings/ compiles without Deno's types). */
interface DenoPaths {
  stat(path: string): Promise<{ dev: number | null; ino: number | null }>;
  realPath(path: string): Promise<string>;
}

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

/** The file's device and inode where the platform reports them, else its real path. */
async function identify(path: string): Promise<string> {
  const deno = (globalThis as unknown as { Deno: DenoPaths }).Deno;
  const { dev, ino } = await deno.stat(path);
  return ino === null ? `path:${await deno.realPath(path)}` : `${dev}:${ino}`;
}

/** Deno files for the path-based helpers: files lock with flock (FsFile.tryLock). */
const denoFiles: ImageFiles = {
  open: (path, options) => openDenoBackend(path, options),
  resolveBeside,
  identify,
};

/**
 * Opens the image file at `path` in Deno, writable unless `options.readOnly` (backing files
 * always open read-only). Pass `options.format` when it is known: without it the format is
 * probed, and a probed raw image refuses guest writes that would make it probe as another format
 * (IMAGE_WRITE_REFUSED). One writer per file, in this process and among Deno processes (an
 * advisory flock: exclusive for a writer, shared for a reader, none with
 * `options.shareWithWriter`); a conflict is IMAGE_LOCKED. Backing and external data file names
 * are resolved next to the image that records them, unless `options.openBacking` /
 * `options.openDataFile` say otherwise. Needs --allow-read for the image and the files it names,
 * and --allow-write unless read-only. A failed open closes what it opened.
 */
export function openImageFile(path: string, options: FileOpenOptions = {}): Promise<BlockImage> {
  return openImageWith(denoFiles, path, options);
}

/**
 * Creates a qcow2 image file at `path` in Deno like `qemu-img create -f qcow2` (an existing file
 * is overwritten; options as {@link createQcow2} takes them) and opens it
 * writable. Refused with the existing file untouched: a file open or locked (IMAGE_LOCKED), a
 * backing file that is the file itself or has it in its backing chain (INVALID_ARGUMENT). The
 * backing file name is stored as given and resolved next to the image unless
 * `options.openBacking` says otherwise.
 */
export function createImageFile(path: string, options: CreateOptions & OpenOptions): Promise<Qcow2Image> {
  return createImageWith(denoFiles, path, options);
}
