// SPDX-License-Identifier: MIT
// The fetch the remote backends (openHttpBackend, openSplitBackend) use when their options name
// none: the global fetch, unless a platform entry sets another (qcow2-wasm/browser sets one that
// runs on a worker, worker-fetch.ts).

let remoteFetch: typeof fetch | undefined;

/** Sets (or, with undefined, removes) the fetch the remote backends use by default. */
export function setDefaultRemoteFetch(fetchFn: typeof fetch | undefined): void {
  remoteFetch = fetchFn;
}

/** The fetch the remote backends use when their options name none: the one set, else the global fetch. */
export function defaultRemoteFetch(): typeof fetch {
  return remoteFetch ?? globalThis.fetch.bind(globalThis);
}
