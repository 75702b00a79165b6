// SPDX-License-Identifier: MIT
// A storage quota error, injected at the platform call (filling a real quota takes gigabytes):
// shared by the in-page quota test (test/browser/quota.test.ts) and the reload pages, which fail
// a write of an overlay and, after a reload, open it again (quota-phase.ts).

/** Where the injection applies: OPFS writable streams, or IndexedDB object stores. */
export type QuotaStore = 'opfs' | 'indexeddb';

/** Makes `platformCall` fail with QuotaExceededError until the returned function restores it. */
function injectQuotaError(owner: object, method: string, failsBy: 'throw' | 'reject'): () => void {
  const target = owner as Record<string, unknown>;
  const original = target[method];
  target[method] = function quotaExceeded() {
    const error = new DOMException('the quota has been exceeded', 'QuotaExceededError');
    if (failsBy === 'throw') throw error;
    return Promise.reject(error);
  };
  return () => { target[method] = original; };
}

/** Makes every write into `store` fail with QuotaExceededError until the returned function is called. */
export function injectQuotaErrorInto(store: QuotaStore): () => void {
  return store === 'indexeddb'
    ? injectQuotaError(IDBObjectStore.prototype, 'put', 'throw')
    : injectQuotaError(FileSystemWritableFileStream.prototype, 'write', 'reject');
}

/** True when `err` or an error in its cause chain is named `name`. */
export function causedBy(err: unknown, name: string): boolean {
  for (let e = err as { name?: string; cause?: unknown } | undefined; e !== undefined && e !== null; e = e.cause as typeof e) {
    if (e.name === name) return true;
  }
  return false;
}
