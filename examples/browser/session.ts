// SPDX-License-Identifier: MIT
// Opens a read-only image (a picked File or a URL) under a writable qcow2 overlay kept in OPFS:
// the image is probed for its format and size, and an overlay made for it earlier is reused.

import {
  BackendError, Qcow2Image, RawImage, createBlobBackend, openHttpBackend, openOpfsBackend, probeFormat,
  type Backend, type BlockImage,
} from 'qcow2-wasm/browser';

/** Where the base image comes from. */
export interface ImageSource {
  /** Shown to the user and recorded as the overlay's backing file name. */
  label: string;
  /** A new read-only backend over the image (called once per open). */
  open(): Promise<Backend>;
}

/** A picked file as an ImageSource. */
export function fileSource(file: File): ImageSource {
  return { label: file.name, open: async () => createBlobBackend(file) };
}

/** An image served over HTTP (the server must answer Range requests) as an ImageSource. */
export function urlSource(url: URL): ImageSource {
  return { label: url.href, open: () => openHttpBackend(url) };
}

/** An open overlay over its base image. */
export interface Session {
  source: ImageSource;
  /** The overlay; its `backing` is the base image. */
  overlay: Qcow2Image;
  /** The base image, as opened through the overlay (read-only). */
  base: BlockImage;
  /** Bytes of the base image's file. */
  baseFileBytes: number;
  /** OPFS path of the overlay, relative to the OPFS root. */
  overlayPath: string;
  /** The overlay's backend, for its current file size. */
  overlayBackend: Backend;
  /** True when an overlay made earlier for the same image was reopened. */
  reused: boolean;
}

/** OPFS folder holding this example's overlays. */
const OVERLAY_FOLDER = 'qcow2-wasm-example';

/** The overlay path for a source: its label made into one safe file name. */
export function overlayPathFor(source: ImageSource): string {
  return `${OVERLAY_FOLDER}/${source.label.replace(/[^A-Za-z0-9._-]+/g, '_').slice(-120)}.overlay.qcow2`;
}

/** Opens a backend as qcow2 or raw, probed by its first bytes, read-only. */
async function openProbed(backend: Backend): Promise<BlockImage> {
  const format = await probeFormat(backend);
  return format === 'qcow2' ? Qcow2Image.open(backend, { readOnly: true }) : RawImage.open(backend, { readOnly: true });
}

/**
 * Opens `source` under its OPFS overlay: reuses the overlay when one exists for the same backing
 * name and size, otherwise creates a fresh one (a qcow2 image with `source` as backing file, the
 * base's cluster size when the base is qcow2).
 */
export async function openSession(source: ImageSource): Promise<Session> {
  // Probe the base on its own first: its format and size decide the overlay's header.
  const probeBackend = await source.open();
  let virtualSize: number;
  let format: 'qcow2' | 'raw';
  let clusterSize: number | undefined;
  let baseFileBytes: number;
  try {
    baseFileBytes = await probeBackend.getSize();
    const probe = await openProbed(probeBackend);
    virtualSize = probe.virtualSize;
    format = probe instanceof Qcow2Image ? 'qcow2' : 'raw';
    clusterSize = probe instanceof Qcow2Image ? probe.header.clusterSize : undefined;
    await probe.close();
  } catch (error) {
    await probeBackend.close().catch(() => {});
    throw error;
  }

  const overlayPath = overlayPathFor(source);
  const openBacking = () => source.open();
  const existing = await openExistingOverlay(overlayPath, openBacking);
  if (existing && existing.image.header.backingFile === source.label && existing.image.virtualSize === virtualSize) {
    return sessionOf(source, existing.image, existing.backend, overlayPath, baseFileBytes, true);
  }
  if (existing) await existing.image.close();

  const backend = await openOpfsBackend(overlayPath, { writable: true, create: true });
  try {
    const overlay = await Qcow2Image.create(backend, {
      virtualSize, clusterSize, backingFile: source.label, backingFormat: format, openBacking,
    });
    return sessionOf(source, overlay, backend, overlayPath, baseFileBytes, false);
  } catch (error) {
    await backend.close().catch(() => {});
    throw error;
  }
}

function sessionOf(source: ImageSource, overlay: Qcow2Image, overlayBackend: Backend, overlayPath: string,
                   baseFileBytes: number, reused: boolean): Session {
  if (!overlay.backing) throw new Error(`the overlay ${overlayPath} has no backing image`);
  return { source, overlay, base: overlay.backing, baseFileBytes, overlayPath, overlayBackend, reused };
}

/** The overlay at `path` if the file exists and opens as qcow2; undefined if it is missing or unusable. */
async function openExistingOverlay(path: string, openBacking: () => Promise<Backend>): Promise<{ image: Qcow2Image; backend: Backend } | undefined> {
  let backend: Backend;
  try {
    backend = await openOpfsBackend(path, { writable: true });
  } catch (error) {
    if (error instanceof BackendError && (error.cause as Error | undefined)?.name === 'NotFoundError') return undefined;
    throw error;
  }
  try {
    return { image: await Qcow2Image.open(backend, { openBacking }), backend };
  } catch {
    // Not an overlay this page can use (e.g. half-written, or its image changed): start afresh.
    await backend.close().catch(() => {});
    return undefined;
  }
}

/** Deletes the overlay file of `source` from OPFS (close its session first). */
export async function discardOverlay(source: ImageSource): Promise<void> {
  const root = await navigator.storage.getDirectory();
  const [folder, name] = overlayPathFor(source).split('/') as [string, string];
  const directory = await root.getDirectoryHandle(folder, { create: true });
  await directory.removeEntry(name).catch((error: unknown) => {
    if ((error as Error).name !== 'NotFoundError') throw error;
  });
}
