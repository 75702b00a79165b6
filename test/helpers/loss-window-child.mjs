// SPDX-License-Identifier: MIT
// Child process of the loss-window test (Node or Deno): opens an image file through the
// platform's openImageFile with default options, makes a seeded series of awaited writes, writes
// the expected guest content to a raw file, prints "written", and waits to be killed (no flush,
// no close). Arguments: module path (dist/bindings/node.js or bindings/deno.ts), image path,
// raw file with the content before the writes (rewritten with the expected content), seed,
// write count, and optionally "no-window" (writebackDelayMs: false, the control).

import { readFileSync, writeFileSync } from 'node:fs';
import process from 'node:process';

const [modulePath, imagePath, expectedPath, seedText, countText, mode] = process.argv.slice(2);
const { openImageFile } = await import(modulePath);
const image = await openImageFile(imagePath, mode === 'no-window' ? { writebackDelayMs: false } : {});
const expected = new Uint8Array(readFileSync(expectedPath));
let state = Number(seedText) >>> 0;
const next = () => {
  state = (state + 0x6d2b79f5) >>> 0;
  let z = state;
  z = Math.imul(z ^ (z >>> 15), z | 1);
  z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
  return (z ^ (z >>> 14)) >>> 0;
};
for (let i = 0; i < Number(countText); i++) {
  const length = 1 + (next() % 20000);
  const offset = next() % (image.virtualSize - length);
  const data = new Uint8Array(length).fill(1 + (next() % 250));
  await image.write(offset, data);
  expected.set(data, offset);
}
writeFileSync(expectedPath, expected);
process.stdout.write('written\n');
setInterval(() => {}, 1 << 30);
