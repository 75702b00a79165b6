// SPDX-License-Identifier: MIT
// Node entry point `qcow2-wasm/node`: everything of the neutral entry plus the Node file backend
// and helpers that open image files by path.

import type { BlockImage, OpenOptions } from './image.js';
import { openNodeBackend } from './backends/node.js';
import { RawImage } from './raw-image.js';
import { ImageError } from './errors.js';

export * from './index.js';
export { openNodeBackend } from './backends/node.js';

const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb];

/**
 * Opens the image file at `path`, writable unless `options.readOnly`. Probes the format by its
 * first bytes: qcow2 files are refused with IMAGE_FORMAT_UNKNOWN until the qcow2 engine lands;
 * anything else opens as raw.
 */
export async function openImageFile(path: string, options: OpenOptions = {}): Promise<BlockImage> {
  const backend = await openNodeBackend(path, { writable: options.readOnly !== true });
  try {
    const head = new Uint8Array(4);
    await backend.preadv(0, [head]);
    if (QCOW2_MAGIC.every((byte, i) => head[i] === byte)) {
      throw new ImageError('IMAGE_FORMAT_UNKNOWN', `${path} is a qcow2 image; this build opens raw images only`);
    }
    return await RawImage.open(backend, options);
  } catch (error) {
    await backend.close();
    throw error;
  }
}
