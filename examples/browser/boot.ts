// SPDX-License-Identifier: MIT
// Boots an image in the v86 emulator with a BIOS the user supplies. v86 and its wasm are loaded
// only when a boot starts, so the page costs nothing extra until then.

import type { BlockImage } from 'qcow2-wasm/browser';
import v86WasmUrl from 'v86/build/v86.wasm?url';

/** What a boot needs from the page. */
export interface BootOptions {
  /** The system BIOS image, e.g. SeaBIOS bios.bin (required: v86 ships none with its npm package). */
  bios: Blob;
  /** A VGA BIOS, e.g. vgabios-stdvga.bin; without it the screen stays in text mode and some BIOSes print nothing. */
  vgaBios?: Blob;
  /** The element v86 draws the screen into. */
  screen: HTMLElement;
  /** Called with every byte the guest writes to its first serial port. */
  onSerialByte(byte: number): void;
}

/** A running guest. */
export interface Boot {
  /** Stops the emulator, then flushes and closes the disk (and so the image). */
  stop(): Promise<void>;
}

/**
 * Starts v86 with `image` as its first hard disk (it boots from it). The disk adapter takes the
 * image over: it flushes on its own schedule and closes the image when the boot is stopped.
 */
export async function boot(image: BlockImage, options: BootOptions): Promise<Boot> {
  const [{ V86 }, { toV86Disk }] = await Promise.all([import('v86'), import('qcow2-wasm/v86')]);
  const disk = toV86Disk(image);
  const emulator = new V86({
    wasm_path: v86WasmUrl,
    bios: { buffer: await options.bios.arrayBuffer() },
    vga_bios: options.vgaBios ? { buffer: await options.vgaBios.arrayBuffer() } : undefined,
    // The adapter is v86's duck-typed disk object (get/set/load...), which v86.d.ts does not list.
    hda: disk as unknown as { buffer: ArrayBuffer },
    memory_size: 128 << 20,
    vga_memory_size: 8 << 20,
    screen_container: options.screen,
    autostart: true,
  });
  emulator.add_listener('serial0-output-byte', options.onSerialByte);
  // A closing tab waits for no timer: flush what the guest wrote when the page goes away.
  const flushOnHide = () => { if (document.visibilityState === 'hidden') void disk.flush().catch(() => {}); };
  document.addEventListener('visibilitychange', flushOnHide);
  return {
    async stop() {
      document.removeEventListener('visibilitychange', flushOnHide);
      await emulator.destroy();
      await disk.close();
    },
  };
}
