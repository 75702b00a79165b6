// SPDX-License-Identifier: MIT
// Node entry point `qcow2-wasm/node`: everything of the neutral entry plus the Node file backend
// and helpers that open image files by path.

import { dirname, resolve } from 'node:path';
import type { BlockImage, CreateOptions, OpenOptions } from './image.js';
import { openNodeBackend } from './backends/node.js';
import { RawImage } from './raw-image.js';
import { Qcow2Image, probeFormat } from './qcow2-image.js';

export * from './index.js';
export { openNodeBackend } from './backends/node.js';

/**
 * Opens the image file at `path`, probing qcow2 against raw by its first bytes; writable unless
 * `options.readOnly` (backing files always open read-only). Backing and
 * external data file names recorded in a qcow2 image are resolved next to the image, unless
 * `options.openBacking` / `options.openDataFile` say otherwise.
 */
export async function openImageFile(path: string, options: OpenOptions = {}): Promise<BlockImage> {
  const probe = await openNodeBackend(path, { writable: false });
  let format: 'qcow2' | 'raw';
  try {
    format = await probeFormat(probe);
  } finally {
    await probe.close();
  }
  const directory = dirname(path);
  if (format === 'qcow2') {
    const backend = await openNodeBackend(path, { writable: options.readOnly !== true });
    try {
      return await Qcow2Image.open(backend, {
        ...options,
        openBacking: options.openBacking ?? ((name) => openNodeBackend(resolve(directory, name), { writable: false })),
        openDataFile: options.openDataFile ?? ((name) => openNodeBackend(resolve(directory, name), { writable: options.readOnly !== true })),
      });
    } catch (error) {
      await backend.close();
      throw error;
    }
  }
  const backend = await openNodeBackend(path, { writable: options.readOnly !== true });
  try {
    return await RawImage.open(backend, options);
  } catch (error) {
    await backend.close();
    throw error;
  }
}

/**
 * Creates a qcow2 image file at `path` like `qemu-img create -f qcow2` (an existing file is
 * overwritten; options as createQcow2 in bindings/qcow2-create.ts takes them) and opens it
 * writable. The backing file name is stored as given and, on open, resolved next to the image
 * unless `options.openBacking` says otherwise; create itself never opens it.
 */
export async function createImageFile(path: string, options: CreateOptions & OpenOptions): Promise<Qcow2Image> {
  const backend = await openNodeBackend(path, { writable: true, create: true });
  const directory = dirname(path);
  try {
    return await Qcow2Image.create(backend, {
      ...options,
      openBacking: options.openBacking ?? ((name) => openNodeBackend(resolve(directory, name), { writable: false })),
    });
  } catch (error) {
    await backend.close();
    throw error;
  }
}
