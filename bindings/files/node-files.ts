// SPDX-License-Identifier: MIT
// How the Node path-based helpers and the CLI open files: the Node file backend, names resolved
// next to the image that names them, files known by device and inode.

import { stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { openNodeBackend } from '../backends/node.js';
import type { ImageFiles } from './open-image.js';

/**
 * Node files for the path-based helpers: names resolve against the directory of the image that
 * names them; a file is known by its device and inode. Node has no portable file lock, so the
 * `lock` request is not honoured: one writer per image holds within this process only.
 */
export const nodeFiles: ImageFiles = {
  open: (path, options) => openNodeBackend(path, { writable: options.writable, create: options.create }),
  resolveBeside: (imagePath, name) => resolve(dirname(imagePath), name),
  identify: async (path) => {
    const { dev, ino } = await stat(path, { bigint: true });
    return `${dev}:${ino}`;
  },
};
