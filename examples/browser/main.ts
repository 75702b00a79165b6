// SPDX-License-Identifier: MIT
// The example page's wiring: loads the wasm core, opens the image the user picks (or names by
// URL, or by ?image=URL) under its OPFS overlay, shows info and the allocation map, exports the
// disk or the overlay alone as qcow2 files, boots v86.
// Query parameters: ?image=URL opens that image at once; ?core=URL loads the wasm core from URL
// (init({ url })) instead of the bytes embedded in the library.

import * as qcow2 from 'qcow2-wasm/browser';
import { allocationMap, init } from 'qcow2-wasm/browser';
import { drawAllocationMap } from './draw-map.js';
import { formatBytes, imageInfo, showInfo } from './info.js';
import { discardOverlay, fileSource, openSession, urlSource, type ImageSource, type Session } from './session.js';
import { boot, type Boot } from './boot.js';
import { exportDisk, exportFileName, pickSaveFile, type ExportKind } from './export.js';

/** Buckets of the allocation map (64 columns x 16 rows at most). */
const MAP_BUCKETS = 1024;
/** How often the map is redrawn while a guest runs. */
const LIVE_MAP_INTERVAL_MS = 2000;

const element = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const statusLine = element<HTMLDivElement>('status');
const imageFile = element<HTMLInputElement>('image-file');
const urlForm = element<HTMLFormElement>('url-form');
const imageUrl = element<HTMLInputElement>('image-url');
const imageInfoList = element<HTMLDListElement>('image-info');
const overlayInfoList = element<HTMLDListElement>('overlay-info');
const refreshButton = element<HTMLButtonElement>('refresh');
const discardButton = element<HTMLButtonElement>('discard');
const exportFlatButton = element<HTMLButtonElement>('export-flat');
const exportOverlayButton = element<HTMLButtonElement>('export-overlay');
const mapCanvas = element<HTMLCanvasElement>('map');
const mapCaption = element<HTMLParagraphElement>('map-caption');
const biosFile = element<HTMLInputElement>('bios-file');
const vgaBiosFile = element<HTMLInputElement>('vga-bios-file');
const bootButton = element<HTMLButtonElement>('boot');
const stopButton = element<HTMLButtonElement>('stop');
const screen = element<HTMLDivElement>('screen');
const serial = element<HTMLPreElement>('serial');

let session: Session | undefined;
let running: Boot | undefined;
let liveMap: ReturnType<typeof setInterval> | undefined;
/** Page actions run one at a time, in order. */
let queue: Promise<unknown> = Promise.resolve();

type PageState = 'loading' | 'ready' | 'busy' | 'open' | 'booted' | 'error';

function setStatus(state: PageState, text: string): void {
  document.body.dataset.state = state;
  statusLine.dataset.state = state === 'error' ? 'error' : 'ok';
  statusLine.textContent = text;
  updateButtons();
}

/** Enables what the page's state allows. */
function updateButtons(): void {
  const state = document.body.dataset.state as PageState;
  const idle = state === 'open' || state === 'ready' || state === 'error';
  refreshButton.disabled = !session || state === 'busy';
  discardButton.disabled = !session || !idle;
  exportFlatButton.disabled = !session || !idle;
  exportOverlayButton.disabled = !session || !idle;
  bootButton.disabled = !session || !idle || !biosFile.files?.length;
  stopButton.disabled = state !== 'booted';
}

/** An error as the user should read it, with a hint where the cause is a known setup problem. */
function explain(error: unknown): string {
  // The library's errors by their stable code (class names do not survive minification).
  const text = error instanceof qcow2.Qcow2WasmError ? `${error.code}: ${error.message}`
    : error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  if (/Content Security Policy|wasm-unsafe-eval|unsafe-eval/i.test(text)) {
    return `${text}\n\nThis page's Content-Security-Policy forbids compiling WebAssembly: add 'wasm-unsafe-eval' to script-src.`;
  }
  if (error instanceof qcow2.BackendError && error.code === 'BACKEND_NOT_SUPPORTED') {
    return `${text}\n\nThis browser lacks a storage API the page needs (see "What this page needs").`;
  }
  return text;
}

/** Runs `action` after the previous one; failures are shown, not thrown. */
function run(busyText: string, action: () => Promise<void>): Promise<void> {
  const next = queue.then(async () => {
    setStatus('busy', busyText);
    try {
      await action();
    } catch (error) {
      console.error(error);
      setStatus('error', explain(error));
    }
  });
  queue = next;
  return next;
}

async function refresh(): Promise<void> {
  if (!session) return;
  await session.overlay.flush();
  showInfo(imageInfoList, [{ field: 'source', label: 'source', value: session.source.label }, ...imageInfo(session.base, session.baseFileBytes)]);
  showInfo(overlayInfoList, [
    { field: 'path', label: 'OPFS path', value: session.overlayPath },
    ...imageInfo(session.overlay, await session.overlayBackend.getSize()),
    { field: 'host-writes', label: 'host writes since open', value: String(session.overlay.stats().hostWriteCalls) },
  ]);
  const map = await allocationMap(session.overlay, MAP_BUCKETS);
  drawAllocationMap(mapCanvas, map);
  mapCaption.textContent = `${map.bucketCount} cells of ${formatBytes(map.bucketBytes)} each, filled bottom-up by what serves their bytes.`;
}

/** Stops the guest, if one runs. Its disk adapter owns the overlay and closes it: the session ends too. */
async function stopGuest(): Promise<void> {
  const guest = running;
  if (!guest) return;
  clearInterval(liveMap);
  running = undefined;
  session = undefined;
  await guest.stop();
}

async function closeSession(): Promise<void> {
  await stopGuest();
  const open = session;
  session = undefined;
  if (open) await open.overlay.close();
}

function open(source: ImageSource): Promise<void> {
  return run(`Opening ${source.label}…`, async () => {
    await closeSession();
    session = await openSession(source);
    await refresh();
    setStatus('open', `${session.reused ? 'Reopened the overlay of' : 'Created an overlay for'} ${source.label}: writes go to OPFS ${session.overlayPath}.`);
  });
}

imageFile.addEventListener('change', () => {
  const file = imageFile.files?.[0];
  if (file) void open(fileSource(file));
});

urlForm.addEventListener('submit', (event) => {
  event.preventDefault();
  let url: URL;
  try {
    url = new URL(imageUrl.value, location.href);
  } catch {
    setStatus('error', `Not a URL: ${imageUrl.value}`);
    return;
  }
  void open(urlSource(url));
});

refreshButton.addEventListener('click', () => {
  void run('Flushing…', async () => {
    await refresh();
    setStatus(running ? 'booted' : 'open', 'Flushed; info and map are current.');
  });
});

discardButton.addEventListener('click', () => {
  const source = session?.source;
  if (!source) return;
  void run('Discarding the overlay…', async () => {
    await closeSession();
    await discardOverlay(source);
  }).then(() => open(source));
});

/** Export: asks where to save at once (the picker needs the click's activation), then exports in turn. */
function exportClicked(kind: ExportKind): void {
  const current = session;
  if (!current) return;
  const what = kind === 'overlay' ? 'the overlay' : 'the disk';
  void pickSaveFile(exportFileName(current, kind)).then((picked) => run(`Exporting ${what}…`, async () => {
    if (picked === 'cancelled') {
      setStatus('open', `Export of ${what} cancelled.`);
      return;
    }
    const outcome = await exportDisk(current, kind, picked, (fraction) => {
      statusLine.textContent = `Exporting ${what}… ${(fraction * 100).toFixed(0)}%`;
    });
    const where = outcome.savedTo === 'download' ? 'download started' : 'saved to the file you picked';
    setStatus('open', `Exported ${what} as ${outcome.fileName}, a ${formatBytes(outcome.fileBytes)} qcow2 image (${where}).`);
  }));
}
exportFlatButton.addEventListener('click', () => exportClicked('flattened'));
exportOverlayButton.addEventListener('click', () => exportClicked('overlay'));

biosFile.addEventListener('change', updateButtons);

bootButton.addEventListener('click', () => {
  const bios = biosFile.files?.[0];
  if (!session || !bios) return;
  const image = session.overlay;
  void run('Starting v86…', async () => {
    serial.textContent = '';
    running = await boot(image, {
      bios, vgaBios: vgaBiosFile.files?.[0], screen,
      onSerialByte: (byte) => { serial.textContent += String.fromCharCode(byte); },
    });
    liveMap = setInterval(() => {
      allocationMap(image, MAP_BUCKETS).then((map) => drawAllocationMap(mapCanvas, map), (error: unknown) => console.warn('map refresh failed:', error));
    }, LIVE_MAP_INTERVAL_MS);
    setStatus('booted', `v86 is running from ${session?.source.label}; its writes go to the overlay.`);
  });
});

stopButton.addEventListener('click', () => {
  const source = session?.source;
  void run('Stopping v86…', stopGuest).then(() => source && open(source));
});

/** For experiments in the developer console: the library and the open overlay. */
declare global {
  interface Window {
    qcow2Example: { library: typeof qcow2; readonly session: Session | undefined; refresh(): Promise<void> };
  }
}
window.qcow2Example = {
  library: qcow2,
  get session() { return session; },
  refresh: () => run('Refreshing…', async () => { await refresh(); setStatus(running ? 'booted' : 'open', 'Info and map are current.'); }),
};

const params = new URLSearchParams(location.search);
void run('Loading the wasm core…', async () => {
  const core = params.get('core');
  await init(core ? { url: new URL(core, location.href) } : {});
  setStatus('ready', 'Ready: pick an image file or open a URL.');
  const image = params.get('image');
  if (image) {
    imageUrl.value = image;
    void open(urlSource(new URL(image, location.href)));
  }
});
