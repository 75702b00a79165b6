// SPDX-License-Identifier: MIT
// saveState / restoreState (bindings/emulators/v86-state.ts): machine state and disk in one qcow2 file, as
// an internal snapshot with VM state. First against a stand-in emulator that records its calls,
// then with the real v86 running SeaBIOS over the disk.

import { describe, it, expect } from 'vitest';
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { openNodeBackend } from '../bindings/backends/node.js';
import { RawImage } from '../bindings/raw/raw-image.js';
import { toV86Disk, saveState, restoreState, type V86StateEmulator } from '../bindings/v86.js';
import { SnapshotNotFoundError } from '../bindings/qcow2/qcow2-snapshot-ops.js';
import { hasQemuImg, qemuCheck, qemuImg } from './helpers/qemu.js';

const MiB = 1024 * 1024;
const BIOS_PATH = process.env.SEABIOS_PATH ?? '/usr/share/seabios/bios.bin';

/** A stand-in emulator: its "machine state" is a counter it bumps on every run(). */
function fakeEmulator() {
  const calls: string[] = [];
  let running = true;
  let generation = 7;
  const emulator: V86StateEmulator & { generation: () => number } = {
    save_state: () => { calls.push('save_state'); return Promise.resolve(new Uint8Array(100_000).fill(generation).buffer); },
    restore_state: (state: ArrayBuffer) => { calls.push('restore_state'); generation = new Uint8Array(state)[0]; return Promise.resolve(); },
    is_running: () => running,
    stop: () => { calls.push('stop'); running = false; },
    run: () => { calls.push('run'); running = true; generation++; },
    generation: () => generation,
  };
  return { emulator, calls };
}

describe('saveState / restoreState with a stand-in emulator', () => {
  it('keeps the machine state with the disk and brings both back', async () => {
    const image = await Qcow2Image.create(createMemoryBackend(0), { virtualSize: 4 * MiB });
    const disk = toV86Disk(image, { flushIdleMs: Infinity, flushMaxDelayMs: Infinity });
    await disk.load();
    const { emulator, calls } = fakeEmulator();
    await new Promise<void>((resolve) => disk.set(0, new Uint8Array(512).fill(1), resolve));
    const snapshot = await saveState(emulator, disk, 'boot');
    expect(calls).toEqual(['stop', 'save_state', 'run']);
    expect(snapshot.vmStateBytes).toBe(100_000);
    // The guest goes on: the machine and the disk change.
    disk.set(0, new Uint8Array(512).fill(2), () => undefined);
    disk.set(MiB, new Uint8Array(512).fill(3), () => undefined);
    expect(emulator.generation()).toBe(8);
    calls.length = 0;
    await restoreState(emulator, disk, 'boot');
    expect(calls).toEqual(['stop', 'restore_state', 'run']);
    expect(emulator.generation()).toBe(8); // restored 7, then run() once
    expect(disk.get_from_cache(0, 512)).toEqual(new Uint8Array(512).fill(1));
    expect(await image.read(0, 512)).toEqual(new Uint8Array(512).fill(1));
    expect(await image.read(MiB, 512)).toEqual(new Uint8Array(512));
    await expect(restoreState(emulator, disk, 'missing')).rejects.toBeInstanceOf(SnapshotNotFoundError);
    await disk.close();
  });

  it('refuses a disk without snapshots and a snapshot without machine state', async () => {
    const { emulator } = fakeEmulator();
    const raw = toV86Disk(await RawImage.open(createMemoryBackend(MiB)));
    await expect(saveState(emulator, raw, 'x')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await raw.close();
    const image = await Qcow2Image.create(createMemoryBackend(0), { virtualSize: MiB });
    await image.createSnapshot('disk-only');
    const disk = toV86Disk(image);
    await expect(restoreState(emulator, disk, 'disk-only')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: "snapshot 'disk-only' holds no machine state" });
    await disk.close();
  });
});

const v86Missing = !existsSync(BIOS_PATH) ? `${BIOS_PATH} not found (install Debian's seabios package)` : !hasQemuImg() ? 'qemu-img not found' : undefined;
const ci = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== '0' && process.env.CI.toLowerCase() !== 'false';
if (v86Missing && !ci) console.warn(`\n*** SKIPPING the real-v86 saveState test: ${v86Missing}. ***\n`);

describe.skipIf(v86Missing !== undefined && !ci)('saveState / restoreState with the real v86', () => {
  it('saves SeaBIOS running over a qcow2 disk into the image and restores it after the disk changed', async () => {
    if (v86Missing) throw new Error(`CI is set: ${v86Missing}`);
    const dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-v86-state-'));
    try {
      const path = join(dir, 'disk.qcow2');
      await (await Qcow2Image.create(await openNodeBackend(path, { writable: true, create: true }), { virtualSize: 8 * MiB })).close();
      const image = await Qcow2Image.open(await openNodeBackend(path, { writable: true }));
      await image.write(0, new Uint8Array(4096).fill(0x5a)); // no boot signature: SeaBIOS keeps looking
      const disk = toV86Disk(image);
      const { V86 } = await import('v86');
      const v86Build = dirname(createRequire(import.meta.url).resolve('v86'));
      const emulator = new V86({
        wasm_path: join(v86Build, 'v86.wasm'), bios: { buffer: new Uint8Array(readFileSync(BIOS_PATH)).buffer },
        memory_size: 16 * MiB, vga_memory_size: 2 * MiB, autostart: true, disable_keyboard: true, disable_mouse: true, disable_speaker: true, hda: disk,
      } as ConstructorParameters<typeof V86>[0]);
      try {
        await new Promise((resolve) => setTimeout(resolve, 1500));
        // v86's own state, captured on its way into the image.
        let saved: ArrayBuffer | undefined;
        const recording: V86StateEmulator = {
          save_state: async () => (saved = await emulator.save_state()),
          restore_state: (state) => emulator.restore_state(state),
          is_running: () => emulator.is_running(), stop: () => emulator.stop(), run: () => emulator.run(),
        };
        const snapshot = await saveState(recording, disk, 'seabios');
        expect(snapshot.vmStateBytes).toBe(saved!.byteLength);
        expect(Buffer.compare(await image.readSnapshotVmState('seabios'), new Uint8Array(saved!))).toBe(0);
        expect(emulator.is_running()).toBe(true);
        await image.write(0, new Uint8Array(4096).fill(0x77));
        await restoreState(recording, disk, 'seabios');
        expect(emulator.is_running()).toBe(true);
        expect((await image.read(0, 4096)).every((b) => b === 0x5a)).toBe(true);
        await new Promise((resolve) => setTimeout(resolve, 300));
      } finally {
        await emulator.destroy();
      }
      await disk.close();
      const report = qemuCheck(path);
      expect({ corruptions: report.corruptions ?? 0, leaks: report.leaks ?? 0 }).toEqual({ corruptions: 0, leaks: 0 });
      expect(qemuImg(['snapshot', '-l', path]).stdout).toMatch(/seabios/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
