// SPDX-License-Identifier: MIT
// The host side of the v86 Linux guest (this folder's init): the V86 options it boots with, and
// its serial protocol. The guest prints report lines "QW <words> (at <uptime> s)" on COM1 and ends
// with "QW DONE", or "QW FAIL <reason>" followed by the kernel log; the kernel itself may panic.
// Platform-neutral: the Node tests and the Chromium pages (tests, boot benchmark) share it.

import type { V86, V86Image, V86Options } from 'v86';

const MiB = 1024 * 1024;

/** What a boot of the guest needs besides the disk: v86's wasm, SeaBIOS and the built kernel and initramfs. */
export interface GuestFiles {
  /** Where v86.wasm is (a path in Node, a URL in a browser). */
  wasmPath: string;
  bios: V86Image;
  bzimage: V86Image;
  initrd: V86Image;
}

/** GuestFiles fetched by v86 from URLs `prefix` + v86.wasm, bios.bin, bzImage and initramfs.cpio. */
export function guestFilesAt(prefix: string): GuestFiles {
  return {
    wasmPath: `${prefix}v86.wasm`,
    bios: { url: `${prefix}bios.bin` },
    bzimage: { url: `${prefix}bzImage` },
    initrd: { url: `${prefix}initramfs.cpio` },
  };
}

/**
 * The V86 options of a guest boot: `files`, the kernel command line `cmdline` (guest.json's
 * kernelArgs and a qw.mode=), `hda` as the first disk (a disk object or v86's own image options),
 * 128 MiB of memory, no screen, keyboard, mouse or speaker, started at once.
 */
export function guestOptions(files: GuestFiles, cmdline: string, hda: unknown): V86Options {
  return {
    wasm_path: files.wasmPath,
    bios: files.bios,
    bzimage: files.bzimage,
    initrd: files.initrd,
    cmdline,
    hda: hda as V86Options['hda'],
    memory_size: 128 * MiB,
    vga_memory_size: 2 * MiB,
    autostart: true,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
  };
}

/** What the guest reported up to the line waited for. */
export interface GuestReport {
  /** The report lines in order, without the "QW " prefix and the "(at N s)" time. */
  lines: string[];
  /** When each of `lines` arrived, on the host's clock (performance.now()). */
  linesAtMs: number[];
  /** The line that ended the wait (without prefix and time). */
  matched: string;
  /** Everything the guest wrote to COM1. */
  serial: string;
}

/**
 * Collects COM1 of `emulator` and resolves once a report line matches `until` (e.g. /^DONE$/).
 * Rejects with the whole serial output when the guest reports FAIL, the kernel panics, or
 * `timeoutMs` passes first. Start it right after constructing the emulator.
 */
export function waitForGuestLine(emulator: Pick<V86, 'add_listener' | 'remove_listener'>, until: RegExp, timeoutMs: number): Promise<GuestReport> {
  return new Promise((resolve, reject) => {
    let serial = '';
    let lineStart = 0;
    const lines: string[] = [];
    const linesAtMs: number[] = [];
    let settled = false;
    let failing = false;
    const settle = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      emulator.remove_listener('serial0-output-byte', onByte);
      outcome();
    };
    const onByte = (byte: number): void => {
      serial += String.fromCharCode(byte);
      if (byte !== 10) return;
      const line = serial.slice(lineStart).replace(/\r?\n$/, '');
      lineStart = serial.length;
      if (line.includes('Kernel panic')) {
        settle(() => reject(new Error(`the guest's kernel panicked; serial:\n${serial}`)));
        return;
      }
      if (!line.startsWith('QW ') || failing) return;
      const report = line.slice(3).replace(/ \(at [\d.]+ s\)$/, '');
      lines.push(report);
      linesAtMs.push(performance.now());
      if (report.startsWith('FAIL')) {
        // The guest prints the kernel log after FAIL: give it a moment to arrive.
        failing = true;
        setTimeout(() => settle(() => reject(new Error(`the guest reported ${report}; serial:\n${serial}`))), 500);
      } else if (until.test(report)) {
        settle(() => resolve({ lines, linesAtMs, matched: report, serial }));
      }
    };
    const timer = setTimeout(() => settle(() => reject(new Error(`the guest did not report ${until} within ${timeoutMs} ms; serial so far:\n${serial}`))), timeoutMs);
    emulator.add_listener('serial0-output-byte', onByte);
  });
}
