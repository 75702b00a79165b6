// SPDX-License-Identifier: MIT
// Export: writes the open disk as a new qcow2 image, either flattened (base and overlay as one
// image) or the overlay alone (the base named as its backing file), streamed straight into a file:
// memory stays at a few chunks whatever the disk's size (the library's browser defaults: 2 MiB
// chunks, 8 at once). Where the page may ask where to save
// (showSaveFilePicker, Chromium), into the file the user picks; elsewhere into a file in the
// site's OPFS, which is then offered as a download (the File of an OPFS file is read from disk,
// not held in memory).

import {
  Qcow2Image, convertToQcow2, createWritableStreamBackend, openOpfsBackend, type Backend, type WritableStreamBackend,
} from 'qcow2-wasm/browser';
import type { Session } from './session.js';

/** What to export: everything the guest sees, or only what the overlay holds. */
export type ExportKind = 'flattened' | 'overlay';

/** Where an export went. */
export interface ExportOutcome {
  fileName: string;
  fileBytes: number;
  /** 'picked-file': the file the user picked; 'download': an OPFS file offered as a download. */
  savedTo: 'picked-file' | 'download';
}

/** OPFS folder of exports offered as downloads; each export replaces the file of the same name. */
const EXPORT_FOLDER = 'qcow2-wasm-example-exports';

/** The file name an export of `kind` of `session` gets: the image's name, the kind, ".qcow2". */
export function exportFileName(session: Session, kind: ExportKind): string {
  const last = session.source.label.split(/[/\\]/).pop() ?? '';
  const stem = last.replace(/\.(qcow2|img|raw)$/i, '').replace(/[^A-Za-z0-9._-]+/g, '_') || 'disk';
  return `${stem}.${kind}.qcow2`;
}

/** showSaveFilePicker's part this page uses (not in TypeScript's DOM types). */
type SaveFilePicker = (options: { suggestedName: string; types: { description: string; accept: Record<string, string[]> }[] }) => Promise<FileSystemFileHandle>;

/**
 * Asks the user where to save `fileName` (call it from the click itself: the picker needs the
 * click's user activation). Resolves with the picked file; 'cancelled' when the user cancelled;
 * undefined where the page cannot ask (no showSaveFilePicker, or the browser refused it), so the
 * export goes to a download instead.
 */
export async function pickSaveFile(fileName: string): Promise<FileSystemFileHandle | 'cancelled' | undefined> {
  const picker = (window as { showSaveFilePicker?: SaveFilePicker }).showSaveFilePicker;
  if (typeof picker !== 'function') return undefined;
  try {
    return await picker({ suggestedName: fileName, types: [{ description: 'qcow2 disk image', accept: { 'application/octet-stream': ['.qcow2'] } }] });
  } catch (error) {
    if ((error as Error).name === 'AbortError') return 'cancelled';
    console.warn('showSaveFilePicker failed; exporting as a download instead:', error);
    return undefined;
  }
}

/** A writable backend over `file`, written in one stream; through the library's OPFS worker where streams are missing. */
async function targetBackend(file: FileSystemFileHandle, opfsPath: string | undefined): Promise<Backend | WritableStreamBackend> {
  if (typeof file.createWritable === 'function') return createWritableStreamBackend(await file.createWritable(), file.name);
  if (opfsPath === undefined) throw new Error(`cannot write ${file.name}: this browser has no writable file streams`);
  return openOpfsBackend(opfsPath, { writable: true, create: true });
}

/** The file `name` in the OPFS export folder, created when missing. */
async function opfsExportFile(name: string): Promise<FileSystemFileHandle> {
  const folder = await (await navigator.storage.getDirectory()).getDirectoryHandle(EXPORT_FOLDER, { create: true });
  return folder.getFileHandle(name, { create: true });
}

/** Starts the browser's download of `file` as `name`. */
function offerDownload(file: File, name: string): void {
  const link = document.createElement('a');
  link.href = URL.createObjectURL(file);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  // The download holds the File itself; the URL is only needed to start it.
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

/**
 * Exports `kind` of `session` as a qcow2 image into `picked` (from pickSaveFile), or, when that is
 * undefined, into an OPFS file offered as a download. Reports progress as a fraction (0 to 1).
 * The overlay is flushed first; it stays open and usable. On failure the target file is left
 * as it was (the stream is aborted) and the error is rethrown.
 */
export async function exportDisk(session: Session, kind: ExportKind, picked: FileSystemFileHandle | undefined,
                                 onProgress: (fraction: number) => void): Promise<ExportOutcome> {
  await session.overlay.flush();
  const fileName = picked?.name ?? exportFileName(session, kind);
  const file = picked ?? await opfsExportFile(fileName);
  const backend = await targetBackend(file, picked ? undefined : `${EXPORT_FOLDER}/${fileName}`);
  const backingFormat = session.base instanceof Qcow2Image ? 'qcow2' : 'raw';
  try {
    await convertToQcow2(session.overlay, backend, {
      create: {
        clusterSize: session.overlay.header.clusterSize,
        ...(kind === 'overlay' ? { backingFile: session.source.label, backingFormat } : {}),
      },
      onProgress: (done, total) => onProgress(total === 0 ? 1 : done / total),
    });
  } catch (error) {
    await ('abort' in backend ? backend.abort(error) : backend.close()).catch(() => {});
    throw error;
  }
  await backend.close();
  const saved = await file.getFile();
  if (!picked) offerDownload(saved, fileName);
  return { fileName, fileBytes: saved.size, savedTo: picked ? 'picked-file' : 'download' };
}
