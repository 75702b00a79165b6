// SPDX-License-Identifier: MIT
// The first-sector guard of a raw image whose format was probed (not given): a write that would
// make the file's first sector probe as another format is refused, as QEMU refuses it. Without
// it a guest could write, say, a qcow2 header naming a host file as its backing file, and the
// next probing open would read that host file into the guest.

import type { Backend } from '../backends/backend.js';
import { ImageError } from '../base/errors.js';
import { PROBE_SECTOR_BYTES, probeSectorFormat } from './format-probe.js';

/**
 * Wraps the backend of a raw image opened by probing. The guard keeps a copy of the first
 * sector; every pwritev, discard (as if it zeroed) and truncate reaching into it is checked
 * against that copy before it is issued, and refused with IMAGE_WRITE_REFUSED (nothing written)
 * when the sector would then probe as a format other than raw. The image orders overlapping
 * writes, so checks see the sector as the writes before them leave it; after a failed call, and
 * after a discard (which may keep the old bytes), the copy is read again from the file.
 * Everything else passes through; close() closes `backend`.
 */
export async function guardProbedRaw(backend: Backend, path: string): Promise<Backend> {
  let sector: Uint8Array = new Uint8Array(PROBE_SECTOR_BYTES);
  await backend.preadv(0, [sector]);

  /** The sector after `change` (which edits a copy); throws when it would probe as another format. */
  const check = (what: string, change: (next: Uint8Array) => void): Uint8Array => {
    const next = sector.slice();
    change(next);
    const format = probeSectorFormat(next);
    if (format !== 'raw') {
      throw new ImageError('IMAGE_WRITE_REFUSED',
        `${path}: ${what} refused: the first sector would make this raw image probe as ${format} ` +
        `(the format was probed, not given); open it with format 'raw' to allow such writes`);
    }
    return next;
  };

  /** Reads the sector from the file again (after a failed call, or a discard that may keep old bytes). */
  const reread = async () => {
    const actual = new Uint8Array(PROBE_SECTOR_BYTES);
    await backend.preadv(0, [actual]);
    sector = actual;
  };

  /**
   * Issues `call` with the sector checked as `change` leaves it. After a failed call, or when
   * `rereadAfter` (the call's effect on the bytes is not known), the sector is read again.
   */
  const guarded = async (reaches: boolean, what: string, change: (next: Uint8Array) => void, call: () => Promise<void>,
                         rereadAfter = false): Promise<void> => {
    if (!reaches) return call();
    sector = check(what, change);
    try {
      await call();
    } catch (error) {
      await reread().catch(() => {});
      throw error;
    }
    if (rereadAfter) await reread();
  };

  const guardedBackend: Backend = {
    kind: backend.kind,
    capabilities: backend.capabilities,
    limits: backend.limits,
    getSize: () => backend.getSize(),
    preadv: (position, buffers) => backend.preadv(position, buffers),
    // Writes past the sector (nearly all) go straight through, with nothing made for the check.
    pwritev: (position, buffers) => position >= PROBE_SECTOR_BYTES ? backend.pwritev(position, buffers) : guarded(true, `a write at offset ${position}`, (next) => {
      let at = position;
      for (const buffer of buffers) {
        if (at >= PROBE_SECTOR_BYTES) break;
        next.set(buffer.subarray(0, PROBE_SECTOR_BYTES - at), at);
        at += buffer.byteLength;
      }
    }, () => backend.pwritev(position, buffers)),
    flush: () => backend.flush(),
    close: () => backend.close(),
  };
  if (backend.truncate) {
    const truncate = backend.truncate.bind(backend);
    guardedBackend.truncate = (size) => guarded(size < PROBE_SECTOR_BYTES, `truncating to ${size} bytes`,
      (next) => next.fill(0, Math.max(0, size)), () => truncate(size));
  }
  if (backend.discard) {
    const discard = backend.discard.bind(backend);
    guardedBackend.discard = (position, length) => guarded(position < PROBE_SECTOR_BYTES && length > 0,
      `a discard at offset ${position}`, (next) => next.fill(0, position, position + length), () => discard(position, length), true);
  }
  return guardedBackend;
}
