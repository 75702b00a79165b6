// SPDX-License-Identifier: MIT
// Export: converts the open disk into a new qcow2 image in OPFS (the flattened disk, base and
// overlay as one image, or the overlay alone with the base as its backing file name) and offers
// the OPFS file as a download. The image goes from disk to disk: memory stays at a few chunks.

import { Qcow2Image, convertToQcow2, openOpfsBackend } from 'qcow2-wasm/browser';
import type { Session } from './session.js';

/** OPFS folder of the exported files (the overlays' folder). */
const EXPORT_FOLDER = 'qcow2-wasm-example';

/** What to export: everything the guest sees, or only what the overlay holds. */
export type ExportKind = 'flattened' | 'overlay';

/**
 * Writes `kind` of `session` to `<label>.<kind>.qcow2` in OPFS, reporting progress (0 to 1), and
 * starts a download of it. Resolves with the file's size in bytes.
 */
export async function exportDisk(session: Session, kind: ExportKind, onProgress: (fraction: number) => void): Promise<number> {
  await session.overlay.flush();
  const name = `${session.source.label.replace(/[^A-Za-z0-9._-]+/g, '_').slice(-100)}.${kind}.qcow2`;
  const backend = await openOpfsBackend(`${EXPORT_FOLDER}/${name}`, { writable: true, create: true });
  try {
    const backingFormat = session.base instanceof Qcow2Image ? 'qcow2' : 'raw';
    await convertToQcow2(session.overlay, backend, {
      create: kind === 'overlay' ? { backingFile: session.source.label, backingFormat } : {},
      onProgress: (done, total) => onProgress(total === 0 ? 1 : done / total),
    });
  } finally {
    await backend.close();
  }
  const folder = await (await navigator.storage.getDirectory()).getDirectoryHandle(EXPORT_FOLDER);
  const file = await (await folder.getFileHandle(name)).getFile();
  const link = document.createElement('a');
  link.href = URL.createObjectURL(file);
  link.download = name.replace(/^.*?([^_]*\.(?:flattened|overlay)\.qcow2)$/, '$1');
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  return file.size;
}
