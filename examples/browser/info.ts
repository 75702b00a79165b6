// SPDX-License-Identifier: MIT
// What the page shows about an image, as `qemu-img info` would name it, written into a <dl>.

import { Qcow2Image, type BlockImage } from 'qcow2-wasm/browser';

/** One line of info: a stable field name (the dd's data-field), a label and the text shown. */
export interface InfoRow {
  field: string;
  label: string;
  value: string;
}

const UNITS = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** `bytes` as qemu-img prints sizes, with the exact count: "64 MiB (67108864 bytes)". */
export function formatBytes(bytes: number): string {
  let unit = 0;
  let value = bytes;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  const short = unit === 0 ? `${bytes} bytes` : `${Number(value.toFixed(value < 10 ? 3 : 2))} ${UNITS[unit]}`;
  return unit === 0 ? short : `${short} (${bytes} bytes)`;
}

/** The info rows of `image`, whose file holds `fileBytes` bytes. */
export function imageInfo(image: BlockImage, fileBytes: number): InfoRow[] {
  const rows: InfoRow[] = [
    { field: 'format', label: 'file format', value: image instanceof Qcow2Image ? 'qcow2' : 'raw' },
    { field: 'virtual-size', label: 'virtual size', value: formatBytes(image.virtualSize) },
    { field: 'file-size', label: 'file size', value: formatBytes(fileBytes) },
  ];
  if (!(image instanceof Qcow2Image)) return rows;
  const header = image.header;
  rows.push(
    { field: 'cluster-size', label: 'cluster size', value: String(header.clusterSize) },
    { field: 'compat', label: 'compat', value: header.version === 2 ? '0.10' : '1.1' },
    { field: 'refcount-bits', label: 'refcount bits', value: String(2 ** header.refcountOrder) },
    { field: 'compression-type', label: 'compression type', value: header.compressionType },
    { field: 'extended-l2', label: 'extended L2', value: String(header.flags.extendedL2) },
    { field: 'lazy-refcounts', label: 'lazy refcounts', value: String(header.flags.lazyRefcounts) },
    { field: 'snapshots', label: 'internal snapshots', value: String(header.snapshotCount) },
  );
  if (header.backingFile !== undefined) {
    rows.push({ field: 'backing-file', label: 'backing file', value: header.backingFile });
    if (header.backingFormat !== undefined) rows.push({ field: 'backing-format', label: 'backing file format', value: header.backingFormat });
  }
  return rows;
}

/** Replaces the contents of `list` with `rows`. */
export function showInfo(list: HTMLDListElement, rows: readonly InfoRow[]): void {
  list.replaceChildren(...rows.flatMap((row) => {
    const term = document.createElement('dt');
    term.textContent = row.label;
    const value = document.createElement('dd');
    value.dataset.field = row.field;
    value.textContent = row.value;
    return [term, value];
  }));
}
