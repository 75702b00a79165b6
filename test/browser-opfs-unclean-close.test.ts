// SPDX-License-Identifier: MIT
// The loss window in a browser, end to end in each engine driven from Node (test/runners/): a
// page writes qcow2 images in OPFS with multiwrite (from a worker in OPFS mode 'auto', and from
// the page with async OPFS) and leaves them open: no flush(), no close(). 2 s after the last
// write resolved the tab is closed (its worker goes with it). A new page reopens the images and
// compares every byte with the model; the files are exported for qemu-img check and compare.

import { existsSync } from 'node:fs';
import { expect, it } from 'vitest';
import type { DrivenPage } from './runners/driven-browser.js';
import { ENGINES } from './runners/engines.js';
import { describeRequiring } from './helpers/describe-requiring.js';
import { serveDrivenTestPage } from './helpers/driven-test-page.js';
import { expectImagesMatchReloadModel } from './helpers/reload-images.js';
import { step, withBrowser } from './runners/bounded.js';

const SEED = 0x0c105e;
/** How long after the last write resolved the page is closed. */
const CLOSE_AFTER_MS = 2000;

type Where = 'worker' | 'page';

const testPage = serveDrivenTestPage('unclean.html', 'qcow2Unclean');

for (const engine of ENGINES) {
  describeRequiring(`${engine.name}: OPFS images survive closing the page without close()`, existsSync(engine.binary) ? undefined : `${engine.binary} not found (${engine.install})`, () => {
    it(`writes, closes the page 2 s later without close(), reopens intact (seed ${SEED})`, async () => {
      const path = (where: Where) => `unclean-${engine.name}/${where}.qcow2`;
      const call = (page: DrivenPage, method: string, where: Where) =>
        page.evaluate(`window.qcow2Unclean.${method}(${JSON.stringify(where)}, ${JSON.stringify(path(where))}, ${SEED})`);
      const kind = { worker: engine.workerKind, page: 'opfs-async' } as const;
      await withBrowser('unclean close', () => engine.launch(), async (browser) => {
        const writer = await step('open the writing page', () => testPage.open(browser));
        for (const where of ['worker', 'page'] as const) await step(`write ${where}`, async () => expect(await call(writer, 'write', where), where).toBe(kind[where]));
        await new Promise((resolve) => setTimeout(resolve, CLOSE_AFTER_MS));
        await step('close the writing page', () => writer.close());

        const reader = await step('open the reading page', () => testPage.open(browser));
        for (const where of ['worker', 'page'] as const) {
          await step(`read ${where}`, async () =>
            expect(await call(reader, 'read', where), `${where} image after the page was closed`).toEqual({ kind: kind[where], firstMismatch: -1 }));
        }
        await step('export for qemu-img', () => expectImagesMatchReloadModel(`${engine.name} OPFS unclean-close test`, ['worker', 'page'],
          (where) => reader.evaluate<string>(`window.qcow2Unclean.exportFile(${JSON.stringify(path(where as Where))})`), SEED, testPage.scratch()));
      });
    }, 240_000);
  });
}
