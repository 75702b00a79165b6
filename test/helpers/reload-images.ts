// SPDX-License-Identifier: MIT
// The host-side check of the browser reload tests: OPFS images a page exported must pass
// qemu-img check and compare equal to the flat model of the reload workload.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { reloadModel } from '../browser/pages/workload.js';
import { qemuImg, requireQemu } from './qemu.js';

/**
 * For each of `labels`, fetches the image's bytes with `exportBase64` (base64, as the pages'
 * exportFile gives them), writes them into `dir`, and expects qemu-img check to pass and qemu-img
 * compare against the model of `seed` to find them equal. Skips loudly without qemu-img (fails
 * where CI is set); `suite` names the test in that message.
 */
export async function expectImagesMatchReloadModel(suite: string, labels: readonly string[], exportBase64: (label: string) => Promise<string>, seed: number, dir: string): Promise<void> {
  if (!requireQemu(`${suite}: qemu-img check and compare of the exported images`)) return;
  const raw = join(dir, `model-${seed}.raw`);
  writeFileSync(raw, reloadModel(seed));
  for (const label of labels) {
    const file = join(dir, `${label}.qcow2`);
    writeFileSync(file, Buffer.from(await exportBase64(label), 'base64'));
    const check = qemuImg(['check', file]);
    expect(check.code, `qemu-img check of the ${label} image: ${check.stdout}${check.stderr}`).toBe(0);
    const compare = qemuImg(['compare', '-f', 'qcow2', '-F', 'raw', file, raw]);
    expect(compare.code, `qemu-img compare of the ${label} image with the model: ${compare.stdout}${compare.stderr}`).toBe(0);
  }
}
