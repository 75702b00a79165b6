// SPDX-License-Identifier: MIT
// Machine state and disk in one qcow2 file: saveState keeps v86's own save state as the VM
// state of an internal snapshot of the disk image (where QEMU keeps a snapshot's VM state),
// restoreState brings both back.

import type { V86Disk } from './v86-disk.js';
import type { Qcow2Snapshot } from '../qcow2/qcow2-snapshots.js';
import type { CreateSnapshotOptions } from '../qcow2/qcow2-snapshot-ops.js';
import { ImageError } from '../base/errors.js';

/** The members of a v86 emulator (V86, 0.5.462) that saveState and restoreState use. */
export interface V86StateEmulator {
  /** The machine's state (CPU, memory, devices) as v86 serialises it. */
  save_state(): Promise<ArrayBuffer>;
  /** Loads a state save_state returned. */
  restore_state(state: ArrayBuffer): Promise<void>;
  /** True while the machine runs. */
  is_running(): boolean;
  /** Stops the machine. */
  stop(): Promise<void> | void;
  /** Starts the machine again. */
  run(): Promise<void> | void;
}

/** What an image needs for machine-state snapshots (Qcow2Image has it). */
interface SnapshotImage {
  createSnapshot(name: string, options?: CreateSnapshotOptions): Promise<Qcow2Snapshot>;
  applySnapshot(nameOrId: string): Promise<Qcow2Snapshot>;
  readSnapshotVmState(nameOrId: string): Promise<Uint8Array>;
}

function snapshotImage(disk: V86Disk): SnapshotImage {
  const image = disk.image as Partial<SnapshotImage>;
  if (typeof image.createSnapshot !== 'function' || typeof image.applySnapshot !== 'function' || typeof image.readSnapshotVmState !== 'function') {
    throw new ImageError('INVALID_ARGUMENT', 'the disk image has no internal snapshots (open a qcow2 image, writable)');
  }
  return image as SnapshotImage;
}

// Runs `action` with the emulator stopped (and running again afterwards if it was running).
async function whileStopped<T>(emulator: V86StateEmulator, action: () => Promise<T>): Promise<T> {
  const wasRunning = emulator.is_running();
  if (wasRunning) await emulator.stop();
  try {
    return await action();
  } finally {
    if (wasRunning) await emulator.run();
  }
}

/**
 * Saves the emulator's state (v86's save_state) and the disk's content at the same instant as
 * internal snapshot `name` of the disk's qcow2 image: the machine is stopped meanwhile, every
 * write the guest made before is in the snapshot. Returns the snapshot. Throws INVALID_ARGUMENT
 * when the disk's image is not a writable qcow2 image, and createSnapshot's errors.
 */
export async function saveState(emulator: V86StateEmulator, disk: V86Disk, name: string): Promise<Qcow2Snapshot> {
  const image = snapshotImage(disk);
  return whileStopped(emulator, async () => {
    const state = await emulator.save_state();
    return image.createSnapshot(name, { vmState: new Uint8Array(state) });
  });
}

/**
 * Brings back what saveState saved as snapshot `name` (id or name): the disk's content (the
 * snapshot is applied to the image; what the guest wrote since is gone) and the emulator's
 * state (v86's restore_state). The machine is stopped meanwhile and runs again afterwards if it
 * was running. Throws SnapshotNotFoundError, INVALID_ARGUMENT for a snapshot without VM state
 * or a disk image without snapshots, and applySnapshot's errors.
 */
export async function restoreState(emulator: V86StateEmulator, disk: V86Disk, name: string): Promise<Qcow2Snapshot> {
  const image = snapshotImage(disk);
  return whileStopped(emulator, async () => {
    const state = await image.readSnapshotVmState(name);
    if (state.length === 0) throw new ImageError('INVALID_ARGUMENT', `snapshot '${name}' holds no machine state`);
    const snapshot = await image.applySnapshot(name);
    await disk.refresh();
    await emulator.restore_state(state.buffer.slice(state.byteOffset, state.byteOffset + state.byteLength) as ArrayBuffer);
    return snapshot;
  });
}
