import { expect, it } from 'vitest';
import { createMemoryBackend, Qcow2Image } from '../../bindings/index.js';
it('runs in a browser', async () => {
  expect(typeof navigator.storage.getDirectory).toBe('function');
  const img = await Qcow2Image.create(createMemoryBackend(), { virtualSize: 1 << 20 });
  await img.write(512, new Uint8Array(4096).fill(7));
  expect((await img.read(512, 4))[3]).toBe(7);
  await img.close();
});
