// SPDX-License-Identifier: MIT
// One writer per image within a process: every file the path-based helpers open is claimed here
// by its identity (device and inode, or real path), with QEMU's sharing rules: a writer shares
// the file with nobody but readers that asked to share it (QEMU's force-share, -U); a reader
// shares it with other readers only.

import { ImageError } from '../base/errors.js';

/** How an open uses a file. */
export type FileAccess = 'write' | 'read' | 'read-beside-writer';

interface Claims { path: string; write: number; read: number }

// One table per process, even when the package is loaded twice (two bundles, ESM and CJS).
const TABLE_KEY = Symbol.for('qcow2-wasm.open-files');
const table: Map<string, Claims> =
  ((globalThis as Record<symbol, Map<string, Claims> | undefined>)[TABLE_KEY] ??= new Map<string, Claims>());

/**
 * Claims the file with identity `id` (opened as `path`) for `access`, or throws IMAGE_LOCKED
 * naming the file and the open it conflicts with: 'write' conflicts with any other writer and
 * with readers; 'read' conflicts with a writer; 'read-beside-writer' conflicts with nothing.
 * Returns the release function (idempotent).
 */
export function claimFile(id: string, path: string, access: FileAccess): () => void {
  const claims = table.get(id) ?? { path, write: 0, read: 0 };
  if (access === 'write' && claims.write > 0) {
    throw new ImageError('IMAGE_LOCKED', `${path}: the image is already open for writing in this process ` +
      `(as ${claims.path}); close it first: two writers would corrupt it`);
  }
  if (access === 'write' && claims.read > 0) {
    throw new ImageError('IMAGE_LOCKED', `${path}: the image is open read-only in this process (as ${claims.path}, ` +
      'possibly as a backing file); close those images before opening it for writing');
  }
  if (access === 'read' && claims.write > 0) {
    throw new ImageError('IMAGE_LOCKED', `${path}: the image is open for writing in this process (as ${claims.path}); ` +
      'close it first, or pass shareWithWriter: true to read it while it changes');
  }
  if (access === 'read-beside-writer') return () => {};
  if (access === 'write') claims.write++;
  else claims.read++;
  table.set(id, claims);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (access === 'write') claims.write--;
    else claims.read--;
    if (claims.write === 0 && claims.read === 0) table.delete(id);
  };
}
