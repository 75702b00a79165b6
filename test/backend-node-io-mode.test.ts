// SPDX-License-Identifier: MIT
// Which transfers the Node backend moves with synchronous syscalls: by default ('auto') those of
// at most syncMaxBytes on a local regular file, everything else through the thread pool. The
// synchronous calls are counted by wrapping node:fs's readSync/readvSync/writeSync/writevSync.
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const syncCalls = vi.hoisted(() => ({ read: 0, write: 0 }));
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  return {
    ...fs,
    readSync: (...args: Parameters<typeof fs.readSync>) => { syncCalls.read++; return fs.readSync(...args); },
    readvSync: (...args: Parameters<typeof fs.readvSync>) => { syncCalls.read++; return fs.readvSync(...args); },
    writeSync: (...args: Parameters<typeof fs.writeSync>) => { syncCalls.write++; return fs.writeSync(...args); },
    writevSync: (...args: Parameters<typeof fs.writevSync>) => { syncCalls.write++; return fs.writevSync(...args); },
  };
});

const { openNodeBackend } = await import('../bindings/backends/node.js');

let dir: string;
let path: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qcow2-wasm-io-mode-'));
  path = join(dir, 'disk.raw');
  await writeFile(path, new Uint8Array(4 << 20).fill(3));
});
afterAll(async () => { await rm(dir, { recursive: true, force: true }); });
beforeEach(() => { syncCalls.read = 0; syncCalls.write = 0; });

describe('node backend: synchronous or thread pool', () => {
  it('by default moves transfers up to 128 KiB synchronously and larger ones through the thread pool', async () => {
    const backend = await openNodeBackend(path, { writable: true });
    const small = new Uint8Array(128 * 1024);
    await backend.preadv(4096, [small]);
    await backend.pwritev(4096, [small.subarray(0, 4096), small.subarray(4096)]);
    expect(syncCalls).toEqual({ read: 1, write: 1 });
    const large = new Uint8Array(128 * 1024 + 1);
    await backend.preadv(0, [large]);
    await backend.pwritev(0, [large]);
    expect(syncCalls).toEqual({ read: 1, write: 1 });
    expect(large.every((byte) => byte === 3)).toBe(true);
    await backend.close();
  });

  it('honours syncMaxBytes, sync: true and sync: false', async () => {
    const buffer = new Uint8Array(8192);
    const limited = await openNodeBackend(path, { syncMaxBytes: 4096 });
    await limited.preadv(0, [buffer]);
    await limited.preadv(0, [buffer.subarray(0, 4096)]);
    await limited.close();
    expect(syncCalls.read).toBe(1);
    const always = await openNodeBackend(path, { sync: true });
    await always.preadv(0, [new Uint8Array(1 << 20)]);
    await always.close();
    expect(syncCalls.read).toBe(2);
    const never = await openNodeBackend(path, { sync: false });
    await never.preadv(0, [buffer]);
    await never.close();
    expect(syncCalls.read).toBe(2);
  });

  it('keeps files that are not regular (a character device) on the thread pool', async () => {
    const backend = await openNodeBackend('/dev/zero');
    const buffer = new Uint8Array(4096).fill(1);
    await backend.preadv(0, [buffer]);
    expect(buffer.every((byte) => byte === 0)).toBe(true);
    expect(syncCalls.read).toBe(0);
    await backend.close();
  });

  it('rejects a syncMaxBytes that is not a non-negative integer', async () => {
    await expect(openNodeBackend(path, { syncMaxBytes: -1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
