// SPDX-License-Identifier: MIT
// Opening image files by path without losing data: one writer per image, format given or probed
// safely (the first-sector guard of probed raw images), create that never overwrites its own
// backing file, backing names resolved next to the image that names them (as QEMU resolves
// them), and the backend owned by the image from open on. QEMU is the oracle where it has an
// answer: it makes the chains, reads them back, and its create and probing refusals are the model.

import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createImageFile, openImageFile, openNodeBackend } from '../bindings/node.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { RawImage } from '../bindings/raw/raw-image.js';
import { Qcow2WasmError } from '../bindings/base/errors.js';
import { probeSectorFormat } from '../bindings/raw/format-probe.js';
import { createQcow2 } from '../bindings/qcow2/qcow2-create.js';
import { chainRevisits } from '../bindings/qcow2/chain-names.js';
import { describeWithQemu, qemuCheck, qemuImg, qemuIo, convertToRaw } from './helpers/qemu.js';

const MiB = 1024 * 1024;
const root = fileURLToPath(new URL('..', import.meta.url));

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'qcow2-open-safety-'));
}

/** The error a promise rejects with (fails the test when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<Qcow2WasmError> {
  const outcome = await promise.then(() => undefined, (error: unknown) => error);
  expect(outcome, 'expected a rejection').toBeInstanceOf(Qcow2WasmError);
  return outcome as Qcow2WasmError;
}

/** A 4 MiB qcow2 image written by this package (no QEMU needed). */
async function makeQcow2(path: string, fill?: number): Promise<void> {
  const image = await createImageFile(path, { virtualSize: 4 * MiB });
  if (fill !== undefined) await image.write(0, new Uint8Array(65536).fill(fill));
  await image.close();
}

/** The first bytes of a qcow2 header naming `backing` as its backing file. */
function qcow2HeaderNaming(backing: string): Uint8Array {
  const header = new Uint8Array(512);
  const view = new DataView(header.buffer);
  view.setUint32(0, 0x514649fb);
  view.setUint32(4, 2);
  view.setBigUint64(8, 72n);
  view.setUint32(16, backing.length);
  header.set(Array.from(backing, (c) => c.charCodeAt(0)), 72);
  return header;
}

describe('one writer per image', () => {
  it('refuses a second writable open of a file open for writing (by any path), leaving the first working', async () => {
    const dir = tempDir();
    try {
      const path = join(dir, 'disk.qcow2');
      await makeQcow2(path);
      symlinkSync(path, join(dir, 'link.qcow2'));
      const first = await openImageFile(path, { format: 'qcow2' });
      await first.write(0, new Uint8Array(512).fill(1));
      for (const other of [path, join(dir, 'link.qcow2'), join(dir, '.', 'disk.qcow2')]) {
        const error = await rejection(openImageFile(other, { format: 'qcow2' }));
        expect(error.code).toBe('IMAGE_LOCKED');
        expect(error.message).toContain(other);
      }
      // A read-only open beside the writer needs shareWithWriter (QEMU's force-share).
      expect((await rejection(openImageFile(path, { readOnly: true }))).code).toBe('IMAGE_LOCKED');
      const reader = await openImageFile(path, { readOnly: true, shareWithWriter: true });
      expect((await rejection(openImageFile(path, { shareWithWriter: true }))).code).toBe('INVALID_ARGUMENT');
      await first.write(512, new Uint8Array(512).fill(2));
      await first.close();
      await reader.close();
      // Closed: it opens again, and holds both writes.
      const again = await openImageFile(path, { readOnly: true });
      expect(Array.from(await again.read(0, 1024)).every((b, i) => b === (i < 512 ? 1 : 2))).toBe(true);
      await again.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a writable open of a file open read-only, also as a backing file; a failed open claims nothing', async () => {
    const dir = tempDir();
    try {
      const base = join(dir, 'base.qcow2');
      await makeQcow2(base, 7);
      const top = await createImageFile(join(dir, 'top.qcow2'), { virtualSize: 4 * MiB, backingFile: 'base.qcow2', backingFormat: 'qcow2' });
      const error = await rejection(openImageFile(base));
      expect(error.code).toBe('IMAGE_LOCKED');
      expect(error.message).toContain(base);
      // Another overlay may read the same base beside it.
      const second = await createImageFile(join(dir, 'second.qcow2'), { virtualSize: 4 * MiB, backingFile: 'base.qcow2', backingFormat: 'qcow2' });
      expect((await second.read(0, 1))[0]).toBe(7);
      await Promise.all([top.close(), second.close()]);
      const writer = await openImageFile(base);
      await writer.close();
      // An open that fails after its claim (bad format option) releases it.
      writeFileSync(join(dir, 'raw.img'), new Uint8Array(4096));
      const notQcow2 = await rejection(openImageFile(join(dir, 'raw.img'), { format: 'qcow2' }));
      expect(notQcow2.code).toBe('IMAGE_FORMAT_UNKNOWN');
      expect(notQcow2.message).toContain(join(dir, 'raw.img'));
      await (await openImageFile(join(dir, 'raw.img'), { format: 'raw' })).close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('format probing', () => {
  it('names the formats QEMU detects by their first sector, and raw for anything else', () => {
    const sector = (bytes: number[] | string, at = 0) => {
      const s = new Uint8Array(512);
      s.set(typeof bytes === 'string' ? Array.from(bytes, (c) => c.charCodeAt(0)) : bytes, at);
      return s;
    };
    expect(probeSectorFormat(sector([0x51, 0x46, 0x49, 0xfb]))).toBe('qcow2');
    expect(probeSectorFormat(sector('QED\0'))).toBe('qed');
    expect(probeSectorFormat(sector('QEDx'))).toBe('raw');
    expect(probeSectorFormat(sector('KDMV'))).toBe('vmdk');
    expect(probeSectorFormat(sector('# Disk DescriptorFile\nversion=1\nCID=fffffffe\n'))).toBe('vmdk');
    expect(probeSectorFormat(sector('version=4\n'))).toBe('raw');
    expect(probeSectorFormat(sector([0x7f, 0x10, 0xda, 0xbe], 0x40))).toBe('vdi');
    expect(probeSectorFormat(sector('conectix'))).toBe('vpc');
    expect(probeSectorFormat(sector('vhdxfile'))).toBe('vhdx');
    expect(probeSectorFormat(sector([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]))).toBe('luks');
    expect(probeSectorFormat(new Uint8Array(3))).toBe('raw');
  });

  it('a probed raw image refuses a write that would make it probe as qcow2 (CVE-2008-2004); the file keeps its bytes', async () => {
    const dir = tempDir();
    try {
      const path = join(dir, 'guest.img');
      const original = new Uint8Array(MiB).map((_, i) => (i * 7) & 0xff);
      writeFileSync(path, original);
      const image = await openImageFile(path);
      const attack = qcow2HeaderNaming('/etc/passwd');
      let error = await rejection(image.write(0, attack));
      expect(error.code).toBe('IMAGE_WRITE_REFUSED');
      expect(error.message).toContain(path);
      expect(error.message).toMatch(/probe as qcow2/);
      // Piecewise: the magic's last byte written after the first three.
      await image.write(0, attack.subarray(0, 3));
      error = await rejection(image.write(3, attack.subarray(3, 512)));
      expect(error.code).toBe('IMAGE_WRITE_REFUSED');
      // Through multiwrite, and as a QED magic completed by writeZeroes.
      error = await rejection(image.multiwrite([{ offset: 4096, data: new Uint8Array(16) }, { offset: 0, data: [attack.subarray(0, 100), attack.subarray(100)] }])[1]);
      expect(error.code).toBe('IMAGE_WRITE_REFUSED');
      await image.write(0, Uint8Array.from('QEDx', (c) => c.charCodeAt(0)));
      expect((await rejection(image.writeZeroes(3, 1))).code).toBe('IMAGE_WRITE_REFUSED');
      // Harmless writes to the first sector go through; the rest of the disk is not guarded.
      await image.write(0, new Uint8Array(512).fill(0xaa));
      await image.write(65536, attack);
      await image.close();
      const bytes = readFileSync(path);
      expect(bytes.subarray(0, 512).every((b) => b === 0xaa)).toBe(true);
      expect(Buffer.compare(bytes.subarray(65536, 65536 + 512), attack)).toBe(0);
      expect(probeSectorFormat(bytes)).toBe('raw');
      // With the format given, nothing is guarded (the embedder said what the file is).
      const told = await openImageFile(path, { format: 'raw' });
      await told.write(0, attack);
      await told.close();
      expect(probeSectorFormat(readFileSync(path))).toBe('qcow2');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a backing file whose format the image does not record is probed, and refused when it claims another format', async () => {
    const dir = tempDir();
    try {
      const fake = new Uint8Array(1 << 20);
      fake.set(Array.from('KDMV', (c) => c.charCodeAt(0)));
      writeFileSync(join(dir, 'fake.vmdk'), fake);
      writeFileSync(join(dir, 'plain.raw'), new Uint8Array(1 << 20).fill(0x5c));
      for (const [top, backingFile] of [['over-vmdk.qcow2', 'fake.vmdk'], ['over-raw.qcow2', 'plain.raw']]) {
        const backend = await openNodeBackend(join(dir, top), { writable: true, create: true });
        await createQcow2(backend, { virtualSize: 1 << 20, backingFile });
        await backend.close();
      }
      const error = await rejection(openImageFile(join(dir, 'over-vmdk.qcow2'), { readOnly: true }));
      expect(error.code).toBe('IMAGE_FORMAT_UNKNOWN');
      expect(error.message).toContain(join(dir, 'fake.vmdk'));
      const image = await openImageFile(join(dir, 'over-raw.qcow2'), { readOnly: true });
      expect((await image.read(0, 4)).every((b) => b === 0x5c)).toBe(true);
      await image.close();
      // Nothing stays open or claimed: the backing files open for writing.
      await (await openImageFile(join(dir, 'fake.vmdk'), { format: 'raw' })).close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a file that probes as a format this package does not open is refused, not opened as raw', async () => {
    const dir = tempDir();
    try {
      const path = join(dir, 'disk.vmdk');
      const bytes = new Uint8Array(65536);
      bytes.set(Array.from('KDMV', (c) => c.charCodeAt(0)));
      writeFileSync(path, bytes);
      const error = await rejection(openImageFile(path));
      expect(error.code).toBe('IMAGE_FORMAT_UNKNOWN');
      expect(error.message).toContain(path);
      expect(error.message).toMatch(/vmdk.*format 'raw'/);
      await (await openImageFile(path, { format: 'raw', readOnly: true })).close();
      expect((await rejection(openImageFile(path, { format: 'vmdk' as 'raw' }))).code).toBe('INVALID_ARGUMENT');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('create never destroys', () => {
  it('refuses a backing file that is the image itself, however it is named, leaving the file byte for byte', async () => {
    const dir = tempDir();
    try {
      const path = join(dir, 'disk.qcow2');
      await makeQcow2(path, 9);
      symlinkSync(path, join(dir, 'link.qcow2'));
      const before = readFileSync(path);
      for (const name of ['disk.qcow2', './disk.qcow2', path, 'link.qcow2', '../' + dir.split('/').pop() + '/disk.qcow2']) {
        const error = await rejection(createImageFile(path, { virtualSize: 4 * MiB, backingFile: name, backingFormat: 'qcow2' }));
        expect(error.code, name).toBe('INVALID_ARGUMENT');
        expect(error.message, name).toContain('Trying to create an image with the same filename as the backing file');
        expect(error.message, name).toContain(path);
        expect(Buffer.compare(readFileSync(path), before), name).toBe(0);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a backing file whose chain holds the image, and a file open in this process', async () => {
    const dir = tempDir();
    try {
      const a = join(dir, 'a.qcow2');
      const b = join(dir, 'b.qcow2');
      await makeQcow2(a, 3);
      await (await createImageFile(b, { virtualSize: 4 * MiB, backingFile: 'a.qcow2', backingFormat: 'qcow2' })).close();
      const before = readFileSync(a);
      const error = await rejection(createImageFile(a, { virtualSize: 4 * MiB, backingFile: 'b.qcow2', backingFormat: 'qcow2' }));
      expect(error.code).toBe('INVALID_ARGUMENT');
      expect(error.message).toMatch(/has this file in its backing chain/);
      expect(Buffer.compare(readFileSync(a), before)).toBe(0);
      const open = await openImageFile(a);
      expect((await rejection(createImageFile(a, { virtualSize: 4 * MiB }))).code).toBe('IMAGE_LOCKED');
      await open.close();
      expect(Buffer.compare(readFileSync(a), before)).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describeWithQemu('names resolve where QEMU resolves them', () => {
  it('sub/top.qcow2 -> ../mid.qcow2 -> base.qcow2 made by qemu-img reads as qemu-img reads it', async () => {
    const dir = tempDir();
    try {
      mkdirSync(join(dir, 'sub'));
      expect(qemuImg(['create', '-q', '-f', 'qcow2', 'base.qcow2', '4M'], dir).code).toBe(0);
      expect(qemuIo(['-c', 'write -P 0x11 0 64k', '-c', 'write -P 0x12 1M 64k', 'base.qcow2'], dir).code).toBe(0);
      expect(qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2'], dir).code).toBe(0);
      expect(qemuIo(['-c', 'write -P 0x22 1M 64k', 'mid.qcow2'], dir).code).toBe(0);
      expect(qemuImg(['create', '-q', '-f', 'qcow2', '-b', '../mid.qcow2', '-F', 'qcow2', 'sub/top.qcow2'], dir).code).toBe(0);
      expect(qemuIo(['-c', 'write -P 0x33 2M 64k', 'sub/top.qcow2'], dir).code).toBe(0);
      // A decoy next to the top image: resolving base.qcow2 next to the top would find it.
      expect(qemuImg(['create', '-q', '-f', 'qcow2', 'sub/base.qcow2', '4M'], dir).code).toBe(0);
      const expected = convertToRaw(join(dir, 'sub', 'top.qcow2'));
      expect(expected[0]).toBe(0x11);
      for (const open of [
        () => openImageFile(join(dir, 'sub', 'top.qcow2'), { readOnly: true }),
        () => openImageFile(join(dir, 'sub', '..', 'sub', 'top.qcow2'), { readOnly: true, format: 'qcow2' }),
      ]) {
        const image = await open();
        expect(Buffer.compare(await image.read(0, image.virtualSize), expected)).toBe(0);
        await image.close();
      }
      // The CLI resolves the same way: compare against the flat reference.
      writeFileSync(join(dir, 'flat.raw'), expected);
      const { main } = await import('../bindings/cli/main.js');
      const out: string[] = [];
      const code = await main(['compare', '-F', 'raw', 'sub/top.qcow2', 'flat.raw'], { cwd: dir, stdout: (t) => out.push(t), stderr: (t) => out.push(t) });
      expect(out.join(''), out.join('')).toContain('Images are identical.');
      expect(code).toBe(0);
      // A writable open of the top writes only the top; the chain stays clean by qemu-img check.
      const top = await openImageFile(join(dir, 'sub', 'top.qcow2'));
      await top.write(3 * MiB, new Uint8Array(4096).fill(0x44));
      await top.close();
      for (const file of ['sub/top.qcow2', 'mid.qcow2', 'base.qcow2']) expect(qemuCheck(join(dir, file)).exitCode, file).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an external data file name resolves next to its image, wherever the process runs', async () => {
    const dir = tempDir();
    try {
      const sub = join(dir, 'sub');
      mkdirSync(sub);
      // QEMU 7.2 resolves a relative data file name against its working directory: run it in sub/.
      expect(qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'data_file=img.data', 'img.qcow2', '1M'], sub).code).toBe(0);
      expect(qemuIo(['-c', 'write -P 0x66 0 64k', '-c', 'write -P 0x67 512k 4k', 'img.qcow2'], sub).code).toBe(0);
      const expected = convertToRaw(join(sub, 'img.qcow2'));
      writeFileSync(join(dir, 'img.data'), new Uint8Array(1 << 20).fill(0xee)); // a decoy in the parent directory
      const image = await openImageFile(join(sub, 'img.qcow2'), { readOnly: true, format: 'qcow2' });
      expect(Buffer.compare(await image.read(0, image.virtualSize), expected)).toBe(0);
      await image.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a chain that names d/img.qcow2 twice (d/img.qcow2, then d/d/img.qcow2) opens as qemu-img opens it', async () => {
    const dir = tempDir();
    try {
      mkdirSync(join(dir, 'd', 'd'), { recursive: true });
      expect(qemuImg(['create', '-q', '-f', 'qcow2', 'd/d/img.qcow2', '1M'], dir).code).toBe(0);
      expect(qemuIo(['-c', 'write -P 0x71 0 64k', 'd/d/img.qcow2'], dir).code).toBe(0);
      expect(qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'd/img.qcow2', '-F', 'qcow2', 'img.qcow2'], join(dir, 'd')).code).toBe(0);
      expect(qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'd/img.qcow2', '-F', 'qcow2', 'top.qcow2'], dir).code).toBe(0);
      const image = await openImageFile(join(dir, 'top.qcow2'), { readOnly: true });
      expect(Buffer.compare(await image.read(0, image.virtualSize), convertToRaw(join(dir, 'top.qcow2')))).toBe(0);
      expect((await image.read(0, 1))[0]).toBe(0x71);
      await image.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a chain that loops through differently spelled names is QCOW2_CORRUPT naming the files', async () => {
    const dir = tempDir();
    try {
      mkdirSync(join(dir, 'sub'));
      expect(qemuImg(['create', '-q', '-f', 'qcow2', 'a.qcow2', '4M'], dir).code).toBe(0);
      expect(qemuImg(['create', '-q', '-f', 'qcow2', '-u', '-b', '../a.qcow2', '-F', 'qcow2', 'sub/b.qcow2', '4M'], dir).code).toBe(0);
      expect(qemuImg(['rebase', '-u', '-b', 'sub/b.qcow2', '-F', 'qcow2', 'a.qcow2'], dir).code).toBe(0);
      const error = await rejection(openImageFile(join(dir, 'a.qcow2'), { readOnly: true }));
      expect(error.code).toBe('QCOW2_CORRUPT');
      expect(error.message).toMatch(/backing chain loop/);
      expect(error.message).toContain(join(dir, 'sub', 'b.qcow2'));
      // Nothing stays claimed: the image opens for writing (its chain still loops, so it fails the same way).
      expect((await rejection(openImageFile(join(dir, 'a.qcow2')))).code).toBe('QCOW2_CORRUPT');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describeWithQemu('CLI create never destroys', () => {
  it('refuses a backing file that resolves to the image with qemu-img message and exit code, the file byte for byte', async () => {
    const dir = tempDir();
    try {
      const { main } = await import('../bindings/cli/main.js');
      expect(qemuImg(['create', '-q', '-f', 'qcow2', 'disk.qcow2', '8M'], dir).code).toBe(0);
      expect(qemuIo(['-c', 'write -P 0x5a 0 1M', 'disk.qcow2'], dir).code).toBe(0);
      const before = readFileSync(join(dir, 'disk.qcow2'));
      const theirs = qemuImg(['create', '-f', 'qcow2', '-b', 'disk.qcow2', '-F', 'qcow2', 'disk.qcow2'], dir);
      expect(theirs.code).toBe(1);
      for (const name of ['disk.qcow2', './disk.qcow2', join(dir, 'disk.qcow2')]) {
        let stderr = '';
        const code = await main(['create', '-f', 'qcow2', '-b', name, '-F', 'qcow2', 'disk.qcow2'], { cwd: dir, stdout: () => {}, stderr: (t) => { stderr += t; } });
        expect(code, name).toBe(theirs.code);
        expect(stderr, name).toBe(theirs.stderr.replace(/^qemu-img:/, 'qcow2-wasm:'));
        expect(Buffer.compare(readFileSync(join(dir, 'disk.qcow2')), before), name).toBe(0);
      }
      // A backing file whose chain holds the image: refused, exit 1, the file untouched.
      expect(qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'disk.qcow2', '-F', 'qcow2', 'over.qcow2'], dir).code).toBe(0);
      let stderr = '';
      const code = await main(['create', '-f', 'qcow2', '-b', 'over.qcow2', '-F', 'qcow2', 'disk.qcow2'], { cwd: dir, stdout: () => {}, stderr: (t) => { stderr += t; } });
      expect(code).toBe(1);
      expect(stderr).toMatch(/^qcow2-wasm: disk.qcow2: .*has this file in its backing chain/);
      expect(Buffer.compare(readFileSync(join(dir, 'disk.qcow2')), before)).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the backend belongs to the image from open on', () => {
  it('a failed Qcow2Image.open / RawImage.open closes the backend', async () => {
    const dir = tempDir();
    try {
      const path = join(dir, 'garbage.qcow2');
      const garbage = qcow2HeaderNaming('x');
      garbage[7] = 9; // version 9
      writeFileSync(path, garbage);
      const backend = await openNodeBackend(path, { writable: false });
      await rejection(Qcow2Image.open(backend));
      expect((await rejection(backend.getSize())).code).toBe('BACKEND_CLOSED');
      const raw = await openNodeBackend(path, { writable: false });
      await rejection(RawImage.open(raw, { merge: 'sideways' as 'full' }));
      expect((await rejection(raw.getSize())).code).toBe('BACKEND_CLOSED');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('failed opens leave no descriptor to the garbage collector (no Node warning, fd count unchanged)', () => {
    const entry = join(root, 'dist', 'bindings', 'node.js');
    if (!existsSync(entry)) {
      // The child process runs the built package; npm ci builds it.
      if (process.env.CI) throw new Error(`${entry} is missing: run npm run build`);
      console.warn(`SKIPPED: ${entry} is missing (run npm run build)`);
      return;
    }
    const dir = tempDir();
    try {
      writeFileSync(join(dir, 'garbage.qcow2'), qcow2HeaderNaming('missing-backing.qcow2'));
      writeFileSync(join(dir, 'vmdk.img'), Uint8Array.from('KDMV', (c) => c.charCodeAt(0)));
      const script = `
        import { readdirSync } from 'node:fs';
        import { openImageFile, openNodeBackend, Qcow2Image } from ${JSON.stringify(entry)};
        const fds = () => readdirSync('/proc/self/fd').length;
        let before = 0;
        for (let i = 0; i <= 20; i++) {
          if (i === 1) before = fds(); // after a first round, which may set up the runtime's own descriptors
          for (const open of [
            () => openImageFile(${JSON.stringify(join(dir, 'garbage.qcow2'))}),
            () => openImageFile(${JSON.stringify(join(dir, 'vmdk.img'))}),
            () => openImageFile(${JSON.stringify(join(dir, 'missing.qcow2'))}),
            async () => Qcow2Image.open(await openNodeBackend(${JSON.stringify(join(dir, 'vmdk.img'))})),
          ]) await open().then(() => { throw new Error('opened'); }, (e) => { if (!e.code) throw e; });
        }
        globalThis.gc();
        await new Promise((r) => setTimeout(r, 200));
        globalThis.gc();
        await new Promise((r) => setTimeout(r, 200));
        console.log(JSON.stringify({ before, after: fds() }));
      `;
      const child = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
      expect(child.status, child.stderr).toBe(0);
      expect(child.stderr).not.toMatch(/Closing file descriptor/);
      const { before, after } = JSON.parse(child.stdout.trim()) as { before: number; after: number };
      expect(after).toBe(before);
      expect(readdirSync(dir).sort()).toEqual(['garbage.qcow2', 'vmdk.img']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('backing chain loops told by names alone', () => {
  it('a relative name repeated in another directory is no loop; the same path again is', () => {
    expect(chainRevisits(['d/img.qcow2', 'd/img.qcow2'])).toBe(false); // d/img, then d/d/img
    expect(chainRevisits(['../mid.qcow2', 'base.qcow2'])).toBe(false);
    expect(chainRevisits(['b.qcow2', 'a.qcow2', 'b.qcow2'])).toBe(true);
    expect(chainRevisits(['self', 'self'])).toBe(true);
    expect(chainRevisits(['sub/b.qcow2', '../a.qcow2', 'sub/b.qcow2'])).toBe(true);
    expect(chainRevisits(['sub/b.qcow2', './b.qcow2'])).toBe(true);
    expect(chainRevisits(['/images/a.qcow2', 'b.qcow2', '/images/a.qcow2'])).toBe(true);
    expect(chainRevisits(['/images/a.qcow2', 'b.qcow2', '/images/b.qcow2'])).toBe(true);
    expect(chainRevisits(['/images/a.qcow2', '../b.qcow2', '/images/b.qcow2'])).toBe(false);
  });
});
