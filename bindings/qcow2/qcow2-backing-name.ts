// SPDX-License-Identifier: MIT
// Naming a qcow2 image's backing file in its header (what qemu-img rebase -u and amend's
// backing_file change): the header is rewritten crash-safely as QEMU rewrites it.

import type { Backend } from '../backends/backend.js';
import { ImageError } from '../base/errors.js';
import { ShadowUpdate, type TableCapacity } from './qcow2-shadow-update.js';
import { currentHeaderFields, serializeHeader } from './qcow2-header-write.js';

/**
 * Names `backingFile` (with `backingFormat`) as the backing file of the qcow2 image in `backend`
 * (writable, not open elsewhere for writing), or no backing file when undefined: the header is
 * rewritten as QEMU rewrites it. Throws INVALID_ARGUMENT for a name without a format (QEMU
 * refuses those too) or a header too large for cluster 0, and ShadowUpdate's errors (`capacity`
 * as ShadowUpdate.begin takes it).
 */
export async function writeBackingFileName(backend: Backend, backingFile: string | undefined, backingFormat?: string,
                                           capacity?: TableCapacity): Promise<void> {
  if (backingFile !== undefined && backingFile !== '' && !backingFormat) throw new ImageError('INVALID_ARGUMENT', 'backing format must be specified');
  const update = await ShadowUpdate.begin(backend, capacity);
  const fields = currentHeaderFields(update.header);
  fields.backingFile = backingFile === '' ? undefined : backingFile;
  fields.backingFormat = fields.backingFile === undefined ? undefined : backingFormat;
  await update.commit((switchFields) => serializeHeader(update.header, fields, switchFields));
}
