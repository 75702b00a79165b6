// SPDX-License-Identifier: MIT
// The two halves of the reload test's quota case, run in the page: a qcow2 overlay over a base,
// both kept in OPFS (async) or IndexedDB, takes a flushed write, then a write that fails with an
// injected QuotaExceededError; after a reload, the overlay opens again, checks without corruption
// and holds the flushed data and the base's. Each answer is plain data for the Node side.
import {
  checkQcow2, openIndexedDbBackend, openOpfsBackend, Qcow2Image, Qcow2WasmError, type Backend, type OpenOptions,
} from '../../../bindings/browser.js';
import { makePrng } from '../../helpers/prng.js';
import { causedBy, injectQuotaErrorInto, type QuotaStore } from './quota-tools.js';

const MiB = 1024 * 1024;
const VIRTUAL_BYTES = 4 * MiB;
/** Where the base's data sits, and where the flushed and the failing writes of the overlay go. */
const BASE_OFFSET = 2 * MiB;
const FLUSHED_OFFSET = 0;
const FAILING_OFFSET = MiB;

/** What the failing half reports. */
export interface QuotaFailureReport {
  /** The code of the typed error the write or the flush after it failed with ('' when none failed). */
  code: string;
  causedByQuota: boolean;
  /** The code close() failed with afterwards ('' when it closed). */
  closeCode: string;
}

/** What the reopening half reports. */
export interface QuotaReopenReport {
  corruptions: number;
  flushedIntact: boolean;
  baseIntact: boolean;
}

const open = (store: QuotaStore, name: string, writable: boolean): Promise<Backend> =>
  store === 'indexeddb'
    ? openIndexedDbBackend(name, { create: writable, writable })
    : openOpfsBackend(name, writable ? { create: true, writable: true, mode: 'async' } : { mode: 'async' });

/** The data of `seed`: the base's, the flushed write's and the failing write's. */
function data(seed: number): { base: Uint8Array; flushed: Uint8Array; failing: Uint8Array } {
  const prng = makePrng(seed);
  return { base: prng.fill(new Uint8Array(256 * 1024)), flushed: prng.fill(new Uint8Array(128 * 1024)), failing: prng.fill(new Uint8Array(192 * 1024)) };
}

const backingOptions = (store: QuotaStore): OpenOptions => ({ openBacking: (name) => open(store, name, false) });
const codeOf = (err: unknown): string => (err instanceof Qcow2WasmError ? err.code : `untyped: ${String(err)}`);

/** Creates `prefix`-base and `prefix`-overlay in `store`, flushes a write, then fails one with a quota error. */
export async function failWithQuota(store: QuotaStore, prefix: string, seed: number): Promise<QuotaFailureReport> {
  const { base: baseData, flushed, failing } = data(seed);
  const baseBackend = await open(store, `${prefix}-base`, true);
  await baseBackend.truncate!(0);
  const base = await Qcow2Image.create(baseBackend, { virtualSize: VIRTUAL_BYTES });
  await base.write(BASE_OFFSET, baseData);
  await base.close();
  const overlayBackend = await open(store, `${prefix}-overlay`, true);
  await overlayBackend.truncate!(0);
  const overlay = await Qcow2Image.create(overlayBackend, {
    ...backingOptions(store), virtualSize: VIRTUAL_BYTES, backingFile: `${prefix}-base`, backingFormat: 'qcow2',
  });
  await overlay.write(FLUSHED_OFFSET, flushed);
  await overlay.flush();
  const restore = injectQuotaErrorInto(store);
  let failure: unknown;
  try {
    failure = await overlay.write(FAILING_OFFSET, failing).then(() => undefined, (e: unknown) => e);
    failure ??= await overlay.flush().then(() => undefined, (e: unknown) => e);
  } finally {
    restore();
  }
  const closing = await overlay.close().then(() => undefined, (e: unknown) => e);
  return { code: failure === undefined ? '' : codeOf(failure), causedByQuota: causedBy(failure, 'QuotaExceededError'), closeCode: closing === undefined ? '' : codeOf(closing) };
}

/** Opens `prefix`-overlay (from a new page) read-only: its check, the flushed write, the base through it. */
export async function reopenAfterQuota(store: QuotaStore, prefix: string, seed: number): Promise<QuotaReopenReport> {
  const { base: baseData, flushed } = data(seed);
  const backend = await open(store, `${prefix}-overlay`, false);
  const report = await checkQcow2(backend);
  const overlay = await Qcow2Image.open(backend, { ...backingOptions(store), readOnly: true });
  const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((byte, i) => byte === b[i]);
  const result = {
    corruptions: report.corruptions,
    flushedIntact: same(await overlay.read(FLUSHED_OFFSET, flushed.byteLength), flushed),
    baseIntact: same(await overlay.read(BASE_OFFSET, baseData.byteLength), baseData),
  };
  await overlay.close();
  return result;
}
