// SPDX-License-Identifier: MIT
// Opening what a qcow2 image refers to: its backing chain (raw or qcow2 links, loops and depth
// refused) and its external data file, only through the caller's callbacks since the names come
// from the image; and probing a backend for qcow2 by its magic.

import type { Backend } from '../backends/backend.js';
import type { BlockImage, OpenOptions } from '../dispatch/image.js';
import type { Qcow2Header } from './qcow2-header.js';
import { ImageError } from '../base/errors.js';
import { RawImage } from '../raw/raw-image.js';
import { chainRevisits } from './chain-names.js';

/** Deepest backing chain opened; deeper chains are refused as a probable loop. */
const MAX_BACKING_DEPTH = 64;
const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb];

/** What open() threads through a backing chain to detect loops: the link's depth and the names above it. */
export interface ChainContext { depth: number; names: string[] }

/**
 * Opens the external data file the header names, through `options.openDataFile` (the name is
 * untrusted); INVALID_ARGUMENT when the header names none or no callback is given.
 */
export async function openDataFile(header: Qcow2Header, options: OpenOptions, chain: ChainContext): Promise<Backend> {
  if (header.dataFile === undefined) {
    throw new ImageError('INVALID_ARGUMENT', 'the image uses an external data file but does not name it');
  }
  if (!options.openDataFile) {
    throw new ImageError('INVALID_ARGUMENT', `the image's data is in the external file '${header.dataFile}': pass openDataFile to open it`);
  }
  return options.openDataFile(header.dataFile, chain.names);
}

/**
 * Opens the backing image the header names, read-only, through `options.openBacking` (the name
 * is untrusted): raw, or qcow2 through `openQcow2` one link deeper. Refuses loops and chains
 * deeper than MAX_BACKING_DEPTH (QCOW2_CORRUPT) and other formats; closes the backend on failure.
 */
export async function openBackingImage(header: Qcow2Header, options: OpenOptions, chain: ChainContext,
                                       openQcow2: (backend: Backend, options: OpenOptions, chain: ChainContext) => Promise<BlockImage>): Promise<BlockImage> {
  const name = header.backingFile!;
  if (!options.openBacking) {
    throw new ImageError('INVALID_ARGUMENT', `the image has the backing file '${name}': pass openBacking to open it`);
  }
  if (chain.depth >= MAX_BACKING_DEPTH || chainRevisits([...chain.names, name])) {
    throw new ImageError('QCOW2_CORRUPT', `backing chain loop or too deep at '${name}' (chain: ${[...chain.names, name].join(' -> ')})`);
  }
  const backend = await options.openBacking(name, header.backingFormat, chain.names);
  try {
    const format = header.backingFormat ?? (await probeFormat(backend));
    const nested: OpenOptions = { ...options, readOnly: true };
    if (format === 'raw') return await RawImage.open(backend, nested);
    if (format === 'qcow2') return await openQcow2(backend, nested, { depth: chain.depth + 1, names: [...chain.names, name] });
    throw new ImageError('QCOW2_UNSUPPORTED_FEATURE', `backing file format '${format}' is not supported (qcow2 and raw are)`);
  } catch (error) {
    await backend.close();
    throw error;
  }
}

/** 'qcow2' when the backend starts with the qcow2 magic, otherwise 'raw'. */
export async function probeFormat(backend: Backend): Promise<'qcow2' | 'raw'> {
  const head = new Uint8Array(4);
  await backend.preadv(0, [head]);
  return QCOW2_MAGIC.every((byte, i) => head[i] === byte) ? 'qcow2' : 'raw';
}
