// SPDX-License-Identifier: MIT
// Loads the wasm core: compiles the embedded bytes once (async, so browsers' main-thread limits
// never apply), and instantiates one core per image on its own fixed-size imported memory.
// Hot paths call the raw instance exports; @assemblyscript/loader only instantiates, with its
// synchronous call on the module already compiled (its async call probes the global Response,
// which makes Node load its fetch implementation at every start). The one
// place the rest of the bindings get the core from: its exports are typed by
// wasm-core.generated.ts (generated from the compiled module), every core loaded is checked
// against that, and enum and constant values come from there too.

import { instantiateSync } from '@assemblyscript/loader';
import { CORE_WASM_BASE64 } from './wasm-bytes.generated.js';
import { CORE_CONSTANTS, CORE_ENUMS, CORE_FUNCTION_ARITY, type CoreExports, type Region } from './wasm-core.generated.js';
import { ImageError } from '../base/errors.js';

// The generated declarations: CoreExports, CORE_CONSTANTS and every exported enum (Status, Region, ...).
export * from './wasm-core.generated.js';

/** A core instance with its memory. Memory never grows, so views over it stay valid. */
export interface CoreInstance {
  /** The raw instance exports, as generated from the module (wasm-core.generated.ts). */
  readonly exports: WebAssembly.Exports & CoreExports;
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
/** Pages of the smallest memory a core runs in (the minimum the module declares for its memory). */
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

/** Node's Buffer, where there is one: it decodes base64 natively. */
const nodeBuffer = (globalThis as { Buffer?: { from(text: string, encoding: 'base64'): Uint8Array } }).Buffer;

function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  // Node decodes natively; elsewhere atob and a loop (a few ms run once, cold, in Node's start).
  if (typeof nodeBuffer?.from === 'function') return new Uint8Array(nodeBuffer.from(text, 'base64'));
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
  let instance: WebAssembly.Instance;
  try {
    ({ instance } = instantiateSync<Record<string, unknown>>(module, { env: { memory } }));
  } catch (error) {
    throw error instanceof WebAssembly.LinkError ? mismatch(`needs imports besides its memory (${error.message})`) : error;
  }
  const exports = instance.exports;
  checkBindings(module, exports);
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

/** Modules already found to match the generated declarations. */
const checkedModules = new WeakSet<WebAssembly.Module>();

/**
 * The value of the exported global `name` of a core's exports. Throws INVALID_ARGUMENT when the
 * core lacks it (a core built from other sources than these bindings).
 */
export function coreGlobal(exports: WebAssembly.Exports, name: string): number {
  const global = exports[name];
  if (!(global instanceof WebAssembly.Global)) throw mismatch(`lacks the global ${name}`);
  return global.value as number;
}

// A module given to init() that is not this package's core is the caller's mistake (the embedded
// core always matches: the build generates the declarations from it).
function mismatch(what: string): ImageError {
  return new ImageError('INVALID_ARGUMENT', `the wasm core ${what}: it is not the core this version of qcow2-wasm was built with (use its own core.wasm)`);
}

// Checks (once per module) that the instance's exports are exactly the generated declarations:
// every declared function with its parameter count, every constant and enum member with its
// value, and nothing undeclared. Throws INVALID_ARGUMENT naming the first difference.
function checkBindings(module: WebAssembly.Module, exports: WebAssembly.Exports): asserts exports is WebAssembly.Exports & CoreExports {
  if (checkedModules.has(module)) return;
  const arity: Readonly<Record<string, number>> = CORE_FUNCTION_ARITY;
  const values = new Map<string, number>(Object.entries(CORE_CONSTANTS));
  for (const [enumName, members] of Object.entries(CORE_ENUMS)) {
    for (const [member, value] of Object.entries(members)) values.set(`${enumName}.${member}`, value);
  }
  for (const [name, parameters] of Object.entries(arity)) {
    const fn = exports[name];
    if (typeof fn !== 'function') throw mismatch(`lacks the function ${name}`);
    if (fn.length !== parameters) throw mismatch(`function ${name} takes ${fn.length} parameters, not ${parameters}`);
  }
  for (const [name, value] of values) {
    const actual = coreGlobal(exports, name);
    if (actual !== value) throw mismatch(`global ${name} is ${actual}, not ${value}`);
  }
  for (const { name, kind } of WebAssembly.Module.exports(module)) {
    if ((kind === 'function' && !(name in arity)) || (kind === 'global' && !values.has(name))) throw mismatch(`exports an undeclared ${kind} ${name}`);
  }
  checkedModules.add(module);
}

/** Byte offset and size of `region` in a core's memory (placed by initLayout or configureImage). */
export function regionBounds(core: CoreInstance, region: Region): { offset: number; bytes: number } {
  return { offset: core.exports.regionOffset(region) >>> 0, bytes: core.exports.regionBytes(region) >>> 0 };
}

/** `region` of a core's memory as bytes (valid for the core's life: its memory never grows). */
export function byteRegion(core: CoreInstance, region: Region): Uint8Array {
  const { offset, bytes } = regionBounds(core, region);
  return new Uint8Array(core.memory.buffer, offset, bytes);
}

/** `region` of a core's memory as 64-bit floats (its records' byte positions and counts). */
export function float64Region(core: CoreInstance, region: Region): Float64Array {
  const { offset, bytes } = regionBounds(core, region);
  return new Float64Array(core.memory.buffer, offset, bytes / 8);
}

/** `region` of a core's memory as 32-bit integers. */
export function int32Region(core: CoreInstance, region: Region): Int32Array {
  const { offset, bytes } = regionBounds(core, region);
  return new Int32Array(core.memory.buffer, offset, bytes / 4);
}

/** The member names of a generated enum by value: what a status or reason code means. */
export function enumNames<E extends Readonly<Record<string, number>>>(values: E): ReadonlyMap<number, keyof E & string> {
  return new Map(Object.entries(values).map(([name, value]) => [value, name]));
}
