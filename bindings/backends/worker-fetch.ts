// SPDX-License-Identifier: MIT
// Fetching remote image bytes on a dedicated worker in browsers. A fetch made on the page's main
// thread needs that thread's turns to go out and to come back, and an emulator keeps it busy: on
// a loaded machine a request waited hundreds of milliseconds before the server saw it. A worker's
// thread is idle, so its requests leave at once; the page gets the response's head and then its
// body's chunks as messages, which it takes in one turn however many arrived meanwhile.

/** A request to the worker: fetch `url`; or stop reading the body of request `id`. */
type WorkerFetchRequest =
  | { id: number; url: string; method: string; headers: [string, string][] }
  | { id: number; cancel: true };

/** The worker's messages about request `id`, in order: its head, its body's chunks, its end (or a failure at any point). */
type WorkerFetchMessage =
  | { id: number; kind: 'head'; status: number; statusText: string; headers: [string, string][]; hasBody: boolean }
  | { id: number; kind: 'chunk'; chunk: Uint8Array }
  | { id: number; kind: 'end' }
  | { id: number; kind: 'error'; message: string };

/** The part of a dedicated worker's global scope the script uses. */
interface FetchWorkerScope {
  onmessage: ((event: MessageEvent<WorkerFetchRequest>) => void) | null;
  postMessage(message: WorkerFetchMessage, transfer?: Transferable[]): void;
  fetch: typeof fetch;
}

// The worker's code: fetches each request and posts its head, then its body's bytes, then the end;
// a cancel stops reading that body. The bytes go in one message (its own buffer, transferred)
// each time the worker would wait for more, or once `postBytes` gathered: a message costs the page a
// turn of its thread, and a network body comes in many small chunks. Refers to nothing outside
// itself (its source text is the worker's script).
function serveFetches(scope: FetchWorkerScope, postBytes: number): void {
  const readers = new Map<number, ReadableStreamDefaultReader<Uint8Array>>();
  const streamBody = async (id: number, reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> => {
    let gathered: Uint8Array[] = [];
    let gatheredBytes = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const post = (): void => {
      clearTimeout(timer);
      timer = undefined;
      if (gatheredBytes === 0 || !readers.has(id)) return;
      let chunk = gathered.length === 1 ? gathered[0]! : new Uint8Array(gatheredBytes);
      if (gathered.length > 1) {
        let at = 0;
        for (const part of gathered) {
          chunk.set(part, at);
          at += part.byteLength;
        }
      } else if (chunk.byteOffset !== 0 || chunk.byteLength !== chunk.buffer.byteLength) {
        chunk = chunk.slice();
      }
      gathered = [];
      gatheredBytes = 0;
      scope.postMessage({ id, kind: 'chunk', chunk }, [chunk.buffer]);
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done || !readers.has(id)) break;
      gathered.push(value);
      gatheredBytes += value.byteLength;
      // Chunks already here come in microtasks; the timer fires once the body makes us wait.
      if (gatheredBytes >= postBytes) post();
      else timer ??= setTimeout(post, 0);
    }
    post();
  };
  scope.onmessage = async ({ data }) => {
    if ('cancel' in data) {
      void readers.get(data.id)?.cancel().catch(() => undefined);
      readers.delete(data.id);
      return;
    }
    const { id } = data;
    try {
      const response = await scope.fetch(data.url, { method: data.method, headers: data.headers });
      const headers: [string, string][] = [];
      response.headers.forEach((value, name) => headers.push([name, value]));
      scope.postMessage({ id, kind: 'head', status: response.status, statusText: response.statusText, headers, hasBody: response.body !== null });
      if (response.body !== null) {
        const reader = response.body.getReader();
        readers.set(id, reader);
        await streamBody(id, reader);
        readers.delete(id);
      }
      scope.postMessage({ id, kind: 'end' });
    } catch (error) {
      readers.delete(id);
      scope.postMessage({ id, kind: 'error', message: error instanceof Error ? error.message : String(error) });
    }
  };
}

/** Most body bytes the worker gathers before it posts them (it posts sooner whenever it would wait). */
const POST_BYTES = 1 << 20;

/** Statuses whose responses cannot carry a body (the Response constructor refuses one). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

interface Pending {
  resolve: (response: Response) => void;
  reject: (error: Error) => void;
  body?: ReadableStreamDefaultController<Uint8Array>;
  /** The request as asked for, to send it with `fallback` if the worker never answered anything. */
  input: string;
  method: string;
  headers: [string, string][];
}

/**
 * A fetch whose requests run on a dedicated worker (a classic worker started from a Blob at the
 * first request), for reads of remote storage on a page where an emulator keeps the main thread
 * busy; undefined where there is no Worker. It takes a URL (or a string) and an init with
 * `method` and `headers` only, which is what the remote backends send; anything else is refused
 * with a TypeError. The Response it resolves with has the worker's response's status, status
 * text and headers, and a body that streams the worker's chunks as they arrive (cancelling it
 * stops the worker reading). A failure of the worker's fetch, or of its body, rejects (or errors
 * the body) with a TypeError carrying the worker's message, as a failed fetch does.
 * If the worker fails (an error event) before it answered anything (it cannot start here, e.g. a
 * Content Security Policy without blob: in worker-src), its requests and all later ones go to
 * `fallback`; if it fails later, the requests in flight fail with a TypeError and later ones go
 * to `fallback`.
 */
export function createWorkerFetch(fallback: typeof fetch = globalThis.fetch.bind(globalThis)): typeof fetch | undefined {
  if (typeof Worker !== 'function' || typeof Blob !== 'function' || typeof URL.createObjectURL !== 'function') return undefined;
  const pending = new Map<number, Pending>();
  let worker: Worker | undefined;
  let nextId = 0;
  let failed = false;
  let answered = false;

  const settleFailed = (request: Pending, error: Error): void => {
    if (request.body !== undefined) request.body.error(error);
    else request.reject(error);
  };

  const onMessage = ({ data }: MessageEvent<WorkerFetchMessage>): void => {
    answered = true;
    const request = pending.get(data.id);
    if (request === undefined) return;
    switch (data.kind) {
      case 'head': {
        const hasBody = data.hasBody && request.method !== 'HEAD' && !NULL_BODY_STATUSES.has(data.status);
        const body = hasBody
          ? new ReadableStream<Uint8Array>({
            start: (controller) => { request.body = controller; },
            cancel: () => {
              pending.delete(data.id);
              worker?.postMessage({ id: data.id, cancel: true } satisfies WorkerFetchRequest);
            },
          })
          : null;
        if (!hasBody) {
          pending.delete(data.id);
          if (data.hasBody) worker?.postMessage({ id: data.id, cancel: true } satisfies WorkerFetchRequest);
        }
        request.resolve(new Response(body, { status: data.status, statusText: data.statusText, headers: data.headers }));
        break;
      }
      case 'chunk':
        request.body?.enqueue(data.chunk);
        break;
      case 'end':
        request.body?.close();
        pending.delete(data.id);
        break;
      case 'error':
        settleFailed(request, new TypeError(data.message));
        pending.delete(data.id);
        break;
    }
  };

  const onError = (event: ErrorEvent): void => {
    event.preventDefault();
    failed = true;
    worker?.terminate();
    const requests = [...pending.values()];
    pending.clear();
    const error = new TypeError(`the fetching worker failed: ${event.message || 'it could not be loaded'}`);
    for (const request of requests) {
      if (answered) settleFailed(request, error);
      else fallback(request.input, { method: request.method, headers: request.headers }).then(request.resolve, request.reject);
    }
  };

  const started = (): Worker => {
    if (worker === undefined) {
      worker = new Worker(URL.createObjectURL(new Blob([`(${serveFetches.toString()})(self, ${POST_BYTES});\n`], { type: 'text/javascript' })));
      worker.onmessage = onMessage;
      worker.onerror = onError;
    }
    return worker;
  };

  return (input, init) => {
    if (failed) return fallback(input, init);
    const { method = 'GET', headers, ...rest } = init ?? {};
    if (Object.keys(rest).length > 0 || input instanceof Request) {
      return Promise.reject(new TypeError(`the worker fetch takes a URL, method and headers only, not ${input instanceof Request ? 'a Request' : Object.keys(rest).join(', ')}`));
    }
    const id = nextId++;
    const url = new URL(String(input), location.href).href;
    const headerList: [string, string][] = [];
    new Headers(headers).forEach((value, name) => headerList.push([name, value]));
    return new Promise<Response>((resolve, reject) => {
      let target: Worker;
      try {
        target = started();
      } catch {
        failed = true; // no worker can be made here
        fallback(input, init).then(resolve, reject);
        return;
      }
      pending.set(id, { resolve, reject, input: url, method: method.toUpperCase(), headers: headerList });
      target.postMessage({ id, url, method, headers: headerList } satisfies WorkerFetchRequest);
    });
  };
}
