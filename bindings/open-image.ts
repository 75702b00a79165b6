// SPDX-License-Identifier: MIT
// Opening and creating image files by path, for any platform that can open a file as a Backend:
// format probing and resolving backing and data file names next to the image. Platform entry
// points (node.ts, deno.ts) supply the file opener and the path rule.

import type { Backend } from './backend.js';
import type { BlockImage, CreateOptions, OpenOptions } from './image.js';
import { RawImage } from './raw-image.js';
import { Qcow2Image, probeFormat } from './qcow2-image.js';

/** What a platform gives the path-based helpers: how to open a file and where names resolve. */
export interface ImageFiles {
  /**
   * Opens the file at `path` as a Backend; `create` (only with `writable`) creates a missing file
   * without truncating an existing one.
   */
  open(path: string, options: { writable: boolean; create?: boolean }): Promise<Backend>;
  /** The path of the file called `name` (as an image records it) next to the image at `imagePath`. */
  resolveBeside(imagePath: string, name: string): string;
}

/**
 * Opens the image file at `path` through `files`, probing qcow2 against raw by its first bytes;
 * writable unless `options.readOnly` (backing files always open read-only). Backing and external
 * data file names recorded in a qcow2 image are resolved with `files.resolveBeside`, unless
 * `options.openBacking` / `options.openDataFile` say otherwise. On failure the image's backend
 * is closed again.
 */
export async function openImageWith(files: ImageFiles, path: string, options: OpenOptions = {}): Promise<BlockImage> {
  const probe = await files.open(path, { writable: false });
  let format: 'qcow2' | 'raw';
  try {
    format = await probeFormat(probe);
  } finally {
    await probe.close();
  }
  const writable = options.readOnly !== true;
  const backend = await files.open(path, { writable });
  try {
    if (format === 'qcow2') {
      return await Qcow2Image.open(backend, {
        ...options,
        openBacking: options.openBacking ?? ((name) => files.open(files.resolveBeside(path, name), { writable: false })),
        openDataFile: options.openDataFile ?? ((name) => files.open(files.resolveBeside(path, name), { writable })),
      });
    }
    return await RawImage.open(backend, options);
  } catch (error) {
    await backend.close();
    throw error;
  }
}

/**
 * Creates a qcow2 image file at `path` through `files` like `qemu-img create -f qcow2` (an
 * existing file is overwritten; options as createQcow2 in bindings/qcow2-create.ts takes them)
 * and opens it writable. The backing file name is stored as given and, on open, resolved with
 * `files.resolveBeside` unless `options.openBacking` says otherwise; create itself never opens it.
 */
export async function createImageWith(files: ImageFiles, path: string, options: CreateOptions & OpenOptions): Promise<Qcow2Image> {
  const backend = await files.open(path, { writable: true, create: true });
  try {
    return await Qcow2Image.create(backend, {
      ...options,
      openBacking: options.openBacking ?? ((name) => files.open(files.resolveBeside(path, name), { writable: false })),
    });
  } catch (error) {
    await backend.close();
    throw error;
  }
}
