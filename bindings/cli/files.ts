// SPDX-License-Identifier: MIT
// Naming and opening the files a command works on: backing names joined as QEMU joins them, images
// opened read-only with their chain, headers read alone.

import { isAbsolute, resolve } from 'node:path';
import type { Backend } from '../backends/backend.js';
import type { BlockImage } from '../dispatch/image.js';
import { nodeFiles } from '../files/node-files.js';
import { openImageWith } from '../files/open-image.js';
import { parseQcow2Header, qcow2HeaderBytesNeeded, type Qcow2Header } from '../qcow2/qcow2-header.js';
import { instantiateCore } from '../core/wasm.js';
import { openNodeBackend } from '../backends/node.js';
import { installNodeDecoders } from '../qcow2/node-decoders.js';
import { CliError, describe, type CliIo } from './io.js';

// Every verb opens its images here: compressed clusters decode natively, as with the Node entry.
installNodeDecoders();

/** QEMU's path_combine: a relative name is relative to the directory of `base` as written. */
export function pathCombine(base: string, name: string): string {
  if (isAbsolute(name)) return name;
  const slash = base.lastIndexOf('/');
  return slash < 0 ? name : base.slice(0, slash + 1) + name;
}

/**
 * Opens `path` read-only as an image (probing the format unless given) with its backing chain,
 * each backing name resolved next to the image that records it. `shareWithWriter` (-U) opens it
 * even while this process has it open for writing.
 */
export async function openImage(io: CliIo, path: string, format: 'qcow2' | 'raw' | undefined, shareWithWriter = false): Promise<BlockImage> {
  try {
    return await openImageWith(nodeFiles, resolve(io.cwd, path), { readOnly: true, format, shareWithWriter });
  } catch (error) {
    throw new CliError(`Could not open '${path}': ${describe(error)}`);
  }
}

/** True when `a` and `b` are one file: the same path, or the same device and inode. */
export async function isSameFile(a: string, b: string): Promise<boolean> {
  if (a === b) return true;
  const [idA, idB] = await Promise.all([a, b].map((p) => nodeFiles.identify(p).catch(() => undefined)));
  return idA !== undefined && idA === idB;
}

/** Reads and validates only the header of a qcow2 file (no tables, no backing file). */
export async function readHeader(backend: Backend): Promise<Qcow2Header> {
  const core = await instantiateCore();
  const fileBytes = await backend.getSize();
  const bytes = new Uint8Array(qcow2HeaderBytesNeeded(core, fileBytes));
  await backend.preadv(0, [bytes]);
  return parseQcow2Header(core, bytes, fileBytes);
}

/** Why a file did not open, worded as qemu-img words the common errors. */
export function openFailure(file: string, error: unknown): string {
  const code = (error as { cause?: { code?: unknown } } | undefined)?.cause?.code;
  const reason = code === 'ENOENT' ? 'No such file or directory' : code === 'EACCES' ? 'Permission denied' : code === 'EROFS' ? 'Read-only file system' : undefined;
  return reason ? `Could not open '${file}': ${reason}` : describe(error);
}

/** Opens `file` (relative to io.cwd) as a file backend; a failure ends the command in qemu-img's words. */
export async function openFileBackend(io: CliIo, file: string, writable: boolean): Promise<Backend> {
  try {
    return await openNodeBackend(resolve(io.cwd, file), { writable });
  } catch (error) {
    throw new CliError(`Could not open '${file}': ${openFailure(file, error)}`);
  }
}
