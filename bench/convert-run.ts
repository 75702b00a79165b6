// SPDX-License-Identifier: MIT
// One library convert, timed inside its own process, for bench/convert.bench.ts:
// `node dist/bench/convert-run.js SOURCE TARGET qcow2|raw [zlib|zstd]` opens SOURCE read-only,
// converts it into a new TARGET (compressed with the worker compressor when a compression type is
// given), closes both (the target flushed), and prints the milliseconds from just before the open
// to after the close. The runtime's start and the module loading are left out: an emulator or a
// page that exports a disk has them behind it already.

import { convertToQcow2, convertToRaw, createWorkerCompressor, openImageFile, openNodeBackend } from '../bindings/node.js';

const [sourcePath, targetPath, format, compression] = process.argv.slice(2);
const start = performance.now();
const source = await openImageFile(sourcePath, { readOnly: true });
const target = await openNodeBackend(targetPath, { writable: true, create: true });
const compressor = compression ? createWorkerCompressor() : undefined;
try {
  if (format === 'raw') await convertToRaw(source, target);
  else {
    await convertToQcow2(source, target, {
      compress: compressor !== undefined, compressor,
      create: compression === 'zlib' || compression === 'zstd' ? { compressionType: compression } : {},
    });
  }
} finally {
  await compressor?.close();
  await target.close();
  await source.close();
}
console.log(JSON.stringify({ milliseconds: performance.now() - start }));
