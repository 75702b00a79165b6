// SPDX-License-Identifier: MIT
// Entry point `qcow2-wasm/v86`: the adapter that lets the v86 emulator use any BlockImage as a
// disk, and saving v86's machine state together with its disk in one qcow2 file.

export * from './emulators/v86-disk.js';
export type { V86ReadCacheOptions } from './emulators/v86-read-cache.js';
export { saveState, restoreState, type V86StateEmulator } from './emulators/v86-state.js';
