// SPDX-License-Identifier: MIT
// Opening and creating image files by path, for any platform that can open a file as a Backend:
// format probing (or the format given), one writer per image, the first-sector guard of probed
// raw images, and backing and data file names resolved next to the image that names them.
// Platform entry points (node.ts, deno.ts) supply the file opener and the path rules.

import type { Backend } from '../backends/backend.js';
import type { BlockImage, CreateOptions, OpenOptions } from '../dispatch/image.js';
import { ImageError, Qcow2WasmError } from '../base/errors.js';
import { RawImage } from '../raw/raw-image.js';
import { Qcow2Image } from '../qcow2/qcow2-image.js';
import { PROBE_SECTOR_BYTES, probeSectorFormat } from '../raw/format-probe.js';
import { guardProbedRaw } from '../raw/probed-raw-guard.js';
import { claimFile, type FileAccess } from './open-files.js';

/** How a platform locks a file against other processes while it is open. */
export type FileLock = 'exclusive' | 'shared' | 'none';

/** What a platform gives the path-based helpers: how to open a file and where names resolve. */
export interface ImageFiles {
  /**
   * Opens the file at `path` as a Backend; `create` (only with `writable`) creates a missing file
   * without truncating an existing one. `lock` asks for an advisory lock against other processes
   * where the platform has one (an IMAGE_LOCKED rejection when another holds a conflicting one);
   * platforms without one ignore it.
   */
  open(path: string, options: { writable: boolean; create?: boolean; lock: FileLock }): Promise<Backend>;
  /** The path of the file called `name` (as an image records it) next to the image at `imagePath`. */
  resolveBeside(imagePath: string, name: string): string;
  /** A string equal for every path of one file (device and inode, or real path); rejects when it is missing. */
  identify(path: string): Promise<string>;
}

/** Options of the path-based open: the image options plus the file's format and sharing. */
export interface FileOpenOptions extends OpenOptions {
  /**
   * The image's format. Given, the file is opened as it without probing; left out, it is probed
   * from the first sector, and a raw image then refuses writes that would make it probe as
   * another format (IMAGE_WRITE_REFUSED). Pass it whenever the format is known, always when the
   * guest is not trusted.
   */
  format?: 'qcow2' | 'raw';
  /**
   * Read-only opens only: open the image even while it is open for writing (QEMU's force-share,
   * qemu-img -U). Reads may then see data the writer is changing. Without it such an open is
   * refused with IMAGE_LOCKED, as is any writable open of a file already open.
   */
  shareWithWriter?: boolean;
}

/** A backend whose close() also runs `release` (once, after the backend closed or failed to). */
function releasingOnClose(backend: Backend, release: () => void): Backend {
  const wrapped: Backend = {
    kind: backend.kind,
    capabilities: backend.capabilities,
    limits: backend.limits,
    getSize: () => backend.getSize(),
    preadv: (position, buffers) => backend.preadv(position, buffers),
    pwritev: (position, buffers) => backend.pwritev(position, buffers),
    flush: () => backend.flush(),
    close: () => backend.close().finally(release),
  };
  if (backend.truncate) wrapped.truncate = backend.truncate.bind(backend);
  if (backend.discard) wrapped.discard = backend.discard.bind(backend);
  return wrapped;
}

/**
 * The files of one image and its backing chain as one open call opens them: each is claimed in
 * this process (open-files.ts) and locked against others before it is opened, and released when
 * its backend closes. `ids[depth]` is the identity of the chain's link at that depth (0: the
 * image itself), which finds loops however the names are spelled.
 */
class ChainFiles {
  readonly ids: string[] = [];
  private readonly paths: string[] = [];

  constructor(private readonly files: ImageFiles, private readonly shareWithWriter: boolean) {}

  /** Opens the file at `path` as link `depth` of the chain (-1: a data file, no link), claimed for `access`. */
  async open(path: string, depth: number, access: FileAccess, create = false): Promise<Backend> {
    let id = await this.files.identify(path).catch(() => undefined);
    if (id !== undefined && depth > 0) this.refuseLoop(path, depth, id);
    let release = id === undefined ? undefined : claimFile(id, path, access);
    const lock: FileLock = access === 'write' ? 'exclusive' : access === 'read' ? 'shared' : 'none';
    let backend: Backend;
    try {
      backend = await this.files.open(path, { writable: access === 'write', create, lock });
    } catch (error) {
      release?.();
      throw error;
    }
    if (id === undefined) {
      // Missing before the open (so created by it): claim it now.
      try {
        id = await this.files.identify(path);
        release = claimFile(id, path, access);
      } catch (error) {
        await backend.close();
        throw error;
      }
    }
    if (depth >= 0) {
      this.ids[depth] = id;
      this.paths[depth] = path;
    }
    return release === undefined ? backend : releasingOnClose(backend, release);
  }

  /** Throws QCOW2_CORRUPT when the file `id` is already a link above `depth`. */
  private refuseLoop(path: string, depth: number, id: string): void {
    const again = this.ids.slice(0, depth).indexOf(id);
    if (again < 0) return;
    throw new ImageError('QCOW2_CORRUPT', `${this.paths[depth - 1]}: backing chain loop: its backing file ${path} is ` +
      `${this.paths[again]} again; point the chain elsewhere (qemu-img rebase -u -b NEW ${this.paths[depth - 1]})`);
  }

  /** The path of the image that `namedBy` (backing names from the top down) leads to from `top`. */
  pathOf(top: string, namedBy: readonly string[]): string {
    return namedBy.reduce((imagePath, name) => this.files.resolveBeside(imagePath, name), top);
  }

  /**
   * `options` with backing and data file names of the chain under `top` resolved through this
   * object, unless they bring their own openers.
   */
  chainOptions<T extends OpenOptions>(top: string, writable: boolean, options: T): T {
    const readAccess: FileAccess = this.shareWithWriter ? 'read-beside-writer' : 'read';
    return {
      ...options,
      openBacking: options.openBacking ?? (async (name, format, namedBy = []) => {
        const path = this.files.resolveBeside(this.pathOf(top, namedBy), name);
        const backend = await this.open(path, namedBy.length + 1, readAccess);
        if (format !== undefined) return backend;
        // The image does not record the backing file's format: it is probed, and a file that
        // claims a format this package does not open is refused rather than read as raw.
        try {
          await probeFile(backend, path);
        } catch (error) {
          await backend.close();
          throw error;
        }
        return backend;
      }),
      openDataFile: options.openDataFile ?? ((name, namedBy = []) => {
        // A data file is not a link of the chain: it is claimed, but not checked for loops.
        const path = this.files.resolveBeside(this.pathOf(top, namedBy), name);
        return this.open(path, -1, writable && namedBy.length === 0 ? 'write' : readAccess);
      }),
    };
  }
}

/** Checks the format option; undefined means probe. */
function checkFormat(format: unknown): 'qcow2' | 'raw' | undefined {
  if (format === undefined || format === 'qcow2' || format === 'raw') return format;
  throw new ImageError('INVALID_ARGUMENT', `format must be 'qcow2' or 'raw', not ${String(format)}`);
}

/** The format the file's first sector probes as: qcow2 or raw, else IMAGE_FORMAT_UNKNOWN. */
async function probeFile(backend: Backend, path: string): Promise<'qcow2' | 'raw'> {
  const sector = new Uint8Array(PROBE_SECTOR_BYTES);
  await backend.preadv(0, [sector]);
  const format = probeSectorFormat(sector);
  if (format === 'qcow2' || format === 'raw') return format;
  throw new ImageError('IMAGE_FORMAT_UNKNOWN', `${path}: the file looks like a ${format} image, which this package ` +
    `does not open; convert it to qcow2 (qemu-img convert -O qcow2), or pass format 'raw' to open its bytes as a raw disk`);
}

/**
 * Opens the image file at `path` through `files`, writable unless `options.readOnly`.
 * `options.format` skips probing; without it the format is probed from the first sector, and a
 * raw image then refuses guest writes that would make it probe as another format. One writer per
 * file in this process: a writable open of a file already open, or a read-only open of a file
 * open for writing (unless `options.shareWithWriter`), is refused with IMAGE_LOCKED; platforms
 * with file locks also lock against other processes. Backing files open read-only. Each backing
 * and external data file name is resolved next to the image that records it (absolute names as
 * they are), unless `options.openBacking` / `options.openDataFile` say otherwise; a chain that
 * comes back to one of its files is QCOW2_CORRUPT. On failure every file it opened is closed.
 */
export async function openImageWith(files: ImageFiles, path: string, options: FileOpenOptions = {}): Promise<BlockImage> {
  const writable = options.readOnly !== true;
  const given = checkFormat(options.format);
  const shareWithWriter = options.shareWithWriter === true;
  if (shareWithWriter && writable) {
    throw new ImageError('INVALID_ARGUMENT', `${path}: shareWithWriter is for read-only opens; add readOnly: true`);
  }
  const chain = new ChainFiles(files, shareWithWriter);
  const access: FileAccess = writable ? 'write' : shareWithWriter ? 'read-beside-writer' : 'read';
  const backend = await chain.open(path, 0, access);
  try {
    const format = given ?? (await probeFile(backend, path));
    if (format === 'qcow2') return await Qcow2Image.open(backend, chain.chainOptions(path, writable, options));
    const guarded = given === undefined && writable ? await guardProbedRaw(backend, path) : backend;
    return await RawImage.open(guarded, options);
  } catch (error) {
    await backend.close();
    throw namingFile(error, path);
  }
}

/**
 * `error` with `path` in front of its message unless it names it already. The error is one this
 * open caused, so it is edited in place: its class, code and fields stay.
 */
function namingFile(error: unknown, path: string): unknown {
  if (error instanceof Qcow2WasmError && !error.message.includes(path)) error.message = `${path}: ${error.message}`;
  return error;
}

/**
 * Refuses (INVALID_ARGUMENT, nothing written) a backing file that is the image to be created at
 * `path`, or whose backing chain contains it: creating would overwrite a file the new image
 * reads through, and leave a chain that loops. The backing chain is opened read-only beside any
 * writer and closed again.
 */
export async function refuseBackingLoop(files: ImageFiles, path: string, options: Pick<CreateOptions, 'backingFile' | 'backingFormat'>): Promise<void> {
  const name = options.backingFile!;
  const backingPath = files.resolveBeside(path, name);
  const pathId = await files.identify(path).catch(() => undefined);
  const backingId = pathId === undefined ? undefined : await files.identify(backingPath).catch(() => undefined);
  if (backingPath === path || name === path || (pathId !== undefined && backingId === pathId)) {
    throw new ImageError('INVALID_ARGUMENT', `${path}: Trying to create an image with the same filename as the backing ` +
      `file ('${name}' is this file); name another backing file`);
  }
  if (pathId === undefined) return;
  const chain = new ChainFiles(files, true);
  const backend = await chain.open(backingPath, 0, 'read-beside-writer');
  try {
    const format = options.backingFormat ?? (await probeFile(backend, backingPath));
    const image = format === 'qcow2'
      ? await Qcow2Image.open(backend, chain.chainOptions(backingPath, false, { readOnly: true }))
      : await RawImage.open(backend, { readOnly: true });
    await image.close();
  } catch (error) {
    await backend.close();
    throw error;
  }
  const link = chain.ids.indexOf(pathId);
  if (link >= 0) {
    throw new ImageError('INVALID_ARGUMENT', `${path}: the backing file '${name}' has this file in its backing chain ` +
      `(${link === 0 ? 'as itself' : `${link} links down`}); creating it would overwrite that link and make the chain loop; name another backing file`);
  }
}

/**
 * Creates a qcow2 image file at `path` through `files` like `qemu-img create -f qcow2` (an
 * existing file is overwritten; options as createQcow2 takes them)
 * and opens it writable. Refused, with the existing file left as it was: a file open in this
 * process (IMAGE_LOCKED), and a backing file that is the file itself or has it in its chain
 * (INVALID_ARGUMENT, qemu-img's message). The backing file name is stored as given and, on open,
 * resolved next to the image unless `options.openBacking` says otherwise.
 */
export async function createImageWith(files: ImageFiles, path: string, options: CreateOptions & OpenOptions): Promise<Qcow2Image> {
  if (options.backingFile !== undefined) await refuseBackingLoop(files, path, options);
  const chain = new ChainFiles(files, false);
  const backend = await chain.open(path, 0, 'write', true);
  try {
    return await Qcow2Image.create(backend, chain.chainOptions(path, true, options));
  } catch (error) {
    await backend.close();
    throw error;
  }
}
