// SPDX-License-Identifier: MIT
// Loads the wasm core: compiles the embedded bytes once (async, so browsers' main-thread limits
// never apply), and instantiates one core per image on its own fixed-size imported memory.
// Hot paths call the raw instance exports; @assemblyscript/loader only instantiates.

import { instantiate } from '@assemblyscript/loader';
import { CORE_WASM_BASE64 } from './wasm-bytes.generated.js';
import { ImageError } from './errors.js';

/** The raw exports of the core (assembly/index.ts). Every export takes and returns numbers. */
export interface CoreExports {
  initLayout(): number;
  regionOffset(region: number): number;
  regionBytes(region: number): number;
  fixedRegionsEnd(): number;
  mergeWrites(requestCount: number, mode: number, maxIov: number, maxTransfer: number): number;
  setGapPolicy(policy: number, blockBits: number): number;
}

/** A core instance with its memory. Memory never grows, so views over it stay valid. */
export interface CoreInstance {
  readonly exports: CoreExports;
  readonly memory: WebAssembly.Memory;
}

/** Where init() may take the core from instead of the embedded bytes (e.g. strict-CSP pages). */
export interface InitOptions {
  /** An already compiled module. */
  module?: WebAssembly.Module;
  /** The module's bytes. */
  bytes?: BufferSource;
  /** A URL to fetch the module from (served as application/wasm for streaming compile). */
  url?: string | URL;
}

const WASM_PAGE_BYTES = 65536;
/** Pages of the smallest memory a core runs in (the import's declared minimum). */
export const CORE_MIN_PAGES = 32;

let modulePromise: Promise<WebAssembly.Module> | undefined;
let sharedCorePromise: Promise<CoreInstance> | undefined;

/**
 * Chooses where the wasm core comes from. Optional: without it the embedded bytes are used.
 * Call before opening the first image; a later call replaces the module for later opens.
 */
export function init(options: InitOptions = {}): Promise<void> {
  sharedCorePromise = undefined;
  if (options.module) modulePromise = Promise.resolve(options.module);
  else if (options.bytes) modulePromise = WebAssembly.compile(options.bytes);
  else if (options.url) {
    const url = options.url;
    modulePromise = fetch(url).then(async (response) => {
      if (!response.ok) throw new ImageError('INVALID_ARGUMENT', `fetching the wasm core from ${url} gave HTTP ${response.status}`);
      return WebAssembly.compile(await response.arrayBuffer());
    });
  } else modulePromise = WebAssembly.compile(decodeBase64(CORE_WASM_BASE64));
  return modulePromise.then(() => undefined);
}

function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * Instantiates a core on a new memory of `pages` 64 KiB pages (at least CORE_MIN_PAGES) and lays
 * out its regions. Rejects with WASM_INTERNAL if the regions do not fit.
 */
export async function instantiateCore(pages: number = CORE_MIN_PAGES): Promise<CoreInstance> {
  if (!modulePromise) await init();
  const module = await modulePromise!;
  const size = Math.max(CORE_MIN_PAGES, Math.ceil(pages));
  const memory = new WebAssembly.Memory({ initial: size, maximum: size });
  const { instance } = await instantiate<Record<string, unknown>>(module, { env: { memory } });
  const exports = instance.exports as unknown as CoreExports;
  if (exports.initLayout() !== 0) {
    throw new ImageError('WASM_INTERNAL', `wasm core regions do not fit ${size * WASM_PAGE_BYTES} bytes of memory`);
  }
  return { exports, memory };
}

/**
 * One core shared by short computations that finish without awaiting (header parsing, sizing):
 * saves an instance per image opened, which matters for long backing chains. Never keep a
 * result in its memory across an await.
 */
export function sharedCore(): Promise<CoreInstance> {
  sharedCorePromise ??= instantiateCore();
  return sharedCorePromise;
}
