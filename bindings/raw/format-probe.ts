// SPDX-License-Identifier: MIT
// Format probing by a file's first sector, as QEMU probes: which image format the bytes claim
// to be. Only qcow2 and raw are opened by this package; the other formats are recognised so
// that a file claiming one is not silently opened as raw, and so that a guest cannot turn a
// probed raw image into one (QEMU refuses such writes for the same reason, CVE-2008-2004).

/** Bytes of the first sector, the part of a file probing reads and guards. */
export const PROBE_SECTOR_BYTES = 512;

const ascii = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));

/** Formats QEMU 7.2 detects by a magic at the start of the file (raw is what none claims). */
const MAGICS: readonly { format: string; at: number; magic: Uint8Array }[] = [
  { format: 'qcow2', at: 0, magic: Uint8Array.of(0x51, 0x46, 0x49, 0xfb) }, // qcow2 and qcow (version 1)
  { format: 'qed', at: 0, magic: ascii('QED\0') },
  { format: 'vmdk', at: 0, magic: ascii('KDMV') },
  { format: 'vmdk', at: 0, magic: ascii('COWD') },
  { format: 'vhdx', at: 0, magic: ascii('vhdxfile') },
  { format: 'vpc', at: 0, magic: ascii('conectix') },
  { format: 'vdi', at: 0x40, magic: Uint8Array.of(0x7f, 0x10, 0xda, 0xbe) },
  { format: 'parallels', at: 0, magic: ascii('WithoutFreeSpace') },
  { format: 'parallels', at: 0, magic: ascii('WithouFreSpacExt') },
  { format: 'luks', at: 0, magic: Uint8Array.of(0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe) },
  { format: 'bochs', at: 0, magic: ascii('Bochs Virtual HD Image') },
  { format: 'cloop', at: 0, magic: ascii('#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0') },
];

/**
 * A VMDK text descriptor as QEMU's probe sees one: after comment lines ('#' to the end of the
 * line), spaces and empty lines, the first line is "version=1", "=2" or "=3".
 */
function isVmdkDescriptor(sector: Uint8Array): boolean {
  const text = String.fromCharCode(...sector);
  let at = 0;
  while (at < text.length) {
    const c = text[at];
    if (c === '#') {
      const newline = text.indexOf('\n', at);
      if (newline < 0) return false;
      at = newline + 1;
    } else if (c === ' ' || c === '\n') {
      at++;
    } else {
      return /^version=[123]\r?\n/.test(text.slice(at));
    }
  }
  return false;
}

/**
 * The image format `sector` (a file's first bytes, at most PROBE_SECTOR_BYTES are looked at)
 * probes as: 'qcow2', another format QEMU detects by content ('vmdk', 'vdi', ...), or 'raw'
 * when it claims none. Bytes past a short file count as zeros.
 */
export function probeSectorFormat(sector: Uint8Array): string {
  const head = new Uint8Array(PROBE_SECTOR_BYTES);
  head.set(sector.subarray(0, PROBE_SECTOR_BYTES));
  for (const { format, at, magic } of MAGICS) {
    if (magic.every((byte, i) => head[at + i] === byte)) return format;
  }
  return isVmdkDescriptor(head) ? 'vmdk' : 'raw';
}
