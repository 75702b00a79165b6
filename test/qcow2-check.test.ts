// SPDX-License-Identifier: MIT
// qcow2 check and repair (bindings/qcow2/qcow2-check.ts) against `qemu-img check` (QEMU 7.2): every zoo
// image gets the same report; hand-damaged copies (a leak, a refcount too low, entries past the
// end of the file or unaligned, a wrong OFLAG_COPIED, bad refcount structures, a crashed lazy-
// refcounts image) get the same counts and messages; after a repair qemu-img finds them clean.

import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openNodeBackend } from '../bindings/backends/node.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { checkExitCode, checkQcow2, qemuCheckJson, type Qcow2CheckOptions, type Qcow2CheckReport } from '../bindings/qcow2/qcow2-check.js';
import { describeWithQemu, makeImage, qemuCheck, qemuImg, qemuInfo, qemuIo, zoo, type QemuCheckReport, type ZooImage } from './helpers/qemu.js';
import { makePrng, type Prng } from './helpers/prng.js';

const KiB = 1024;

// ---------------------------------------------------------------------------------------------
// A byte-poking helper over a qcow2 file held in memory (tests only: it trusts the image).
// ---------------------------------------------------------------------------------------------

const L1E_OFFSET_MASK = 0x00fffffffffffe00n;
const OFLAG_COPIED = 1n << 63n;

class ImageBytes {
  private constructor(public bytes: Uint8Array) {}

  static load(path: string): ImageBytes { return new ImageBytes(new Uint8Array(readFileSync(path))); }

  save(path: string): void { writeFileSync(path, this.bytes); }

  private get view(): DataView { return new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength); }
  u64(position: number): bigint { return this.view.getBigUint64(position); }
  setU64(position: number, value: bigint): void { this.view.setBigUint64(position, value); }

  get version(): number { return this.view.getUint32(4); }
  get clusterBits(): number { return this.view.getUint32(20); }
  get clusterSize(): number { return 2 ** this.clusterBits; }
  get l1Offset(): number { return Number(this.u64(40)); }
  get reftableOffset(): number { return Number(this.u64(48)); }
  get snapshotsOffset(): number { return Number(this.u64(64)); }
  get refcountOrder(): number { return this.version === 3 ? this.view.getUint32(96) : 4; }
  get extendedL2(): boolean { return this.version === 3 && (this.u64(72) & 16n) !== 0n; }

  /** File position of the L2 entry mapping `guestOffset` through the L1 table at `l1Offset`. */
  l2EntryPosition(guestOffset: number, l1Offset = this.l1Offset): number {
    const entryBits = this.extendedL2 ? 4 : 3;
    const l2Bits = this.clusterBits - entryBits;
    const l1Index = Math.floor(guestOffset / 2 ** (this.clusterBits + l2Bits));
    const l2Offset = Number(this.u64(l1Offset + 8 * l1Index) & L1E_OFFSET_MASK);
    const l2Index = Math.floor(guestOffset / this.clusterSize) % 2 ** l2Bits;
    return l2Offset + l2Index * 2 ** entryBits;
  }

  /** Host cluster index of the data cluster mapping `guestOffset`. */
  dataCluster(guestOffset: number, l1Offset = this.l1Offset): number {
    return Number(this.u64(this.l2EntryPosition(guestOffset, l1Offset)) & L1E_OFFSET_MASK) / this.clusterSize;
  }

  // Bit position of `cluster`'s refcount in its refcount block, and the block's file position.
  private refcountLocation(cluster: number): { block: number; bit: number; width: number } {
    const width = 2 ** this.refcountOrder;
    const perBlock = (this.clusterSize * 8) / width;
    const block = Number(this.u64(this.reftableOffset + 8 * Math.floor(cluster / perBlock)) & ~0x1ffn);
    if (block === 0) throw new Error(`no refcount block covers cluster ${cluster}`);
    return { block, bit: (cluster % perBlock) * width, width };
  }

  refcount(cluster: number): number {
    const { block, bit, width } = this.refcountLocation(cluster);
    if (width < 8) return (this.bytes[block + (bit >> 3)] >> (bit & 7)) & (2 ** width - 1);
    let value = 0;
    for (let i = 0; i < width / 8; i++) value = value * 256 + this.bytes[block + bit / 8 + i];
    return value;
  }

  setRefcount(cluster: number, value: number): void {
    const { block, bit, width } = this.refcountLocation(cluster);
    if (width < 8) {
      const mask = (2 ** width - 1) << (bit & 7);
      const at = block + (bit >> 3);
      this.bytes[at] = (this.bytes[at] & ~mask) | ((value << (bit & 7)) & mask);
      return;
    }
    for (let i = width / 8 - 1, rest = value; i >= 0; i--, rest = Math.floor(rest / 256)) this.bytes[block + bit / 8 + i] = rest % 256;
  }

  /**
   * Damages metadata at random: `count` times, flips a bit of, or overwrites, a u64 in the first
   * 4 KiB of the active L1 table, the refcount table, the first refcount block, the first L2
   * table or the snapshot table.
   */
  scramble(prng: Prng, count: number): void {
    const l2 = Number(this.u64(this.l1Offset) & L1E_OFFSET_MASK);
    const block = Number(this.u64(this.reftableOffset) & ~0x1ffn);
    const tables = [this.l1Offset, this.reftableOffset, block, l2, this.snapshotsOffset].filter((at) => at > 0 && at < this.bytes.length);
    for (let i = 0; i < count; i++) {
      const at = tables[prng.int(tables.length)] + 8 * prng.int(Math.min(this.clusterSize, 4096) / 8);
      if (prng.int(2) === 0) this.bytes[at + prng.int(8)] ^= 1 << prng.int(8);
      else prng.fill(this.bytes.subarray(at, at + 8));
    }
  }

  /** Appends one zeroed cluster (after padding the file to whole clusters); returns its index. */
  appendCluster(): number {
    const clusters = Math.ceil(this.bytes.length / this.clusterSize);
    const grown = new Uint8Array((clusters + 1) * this.clusterSize);
    grown.set(this.bytes);
    this.bytes = grown;
    return clusters;
  }
}

// ---------------------------------------------------------------------------------------------
// Comparing with qemu-img.
// ---------------------------------------------------------------------------------------------

/** The fields both reports have, with QEMU's omitted zero counts as 0. */
function qemuFields(q: QemuCheckReport) {
  return {
    corruptions: q.corruptions ?? 0,
    leaks: q.leaks ?? 0,
    checkErrors: q['check-errors'],
    allocatedClusters: q['allocated-clusters'] ?? 0,
    totalClusters: q['total-clusters'] ?? 0,
    fragmentedClusters: q['fragmented-clusters'] ?? 0,
    compressedClusters: q['compressed-clusters'] ?? 0,
    imageEndOffset: q['image-end-offset'] ?? 0,
  };
}

function ourFields(r: Qcow2CheckReport) {
  const { corruptions, leaks, checkErrors, allocatedClusters, totalClusters, fragmentedClusters, compressedClusters, imageEndOffset } = r;
  return { corruptions, leaks, checkErrors, allocatedClusters, totalClusters, fragmentedClusters, compressedClusters, imageEndOffset };
}

/** qemu-img check's finding lines (its stderr), in order. */
function qemuMessages(path: string): string[] {
  const result = qemuImg(['check', '-f', 'qcow2', path]);
  return (result.stdout + result.stderr).split('\n').filter((line) => /^(ERROR|Leaked|Repairing|Can't get)/.test(line));
}

async function checkFile(path: string, options: Qcow2CheckOptions = {}): Promise<Qcow2CheckReport> {
  const backend = await openNodeBackend(path, { writable: options.repair !== undefined });
  try {
    return await checkQcow2(backend, options);
  } finally {
    await backend.close();
  }
}

/** Asserts that our check of `path` reports what qemu-img check does, counts and messages. */
async function expectLikeQemu(path: string, what: string): Promise<Qcow2CheckReport> {
  const ours = await checkFile(path);
  const qemu = qemuCheck(path);
  expect(ourFields(ours), what).toEqual(qemuFields(qemu));
  expect(checkExitCode(ours), `${what}: exit code`).toBe(qemu.exitCode);
  expect([...ours.messages].sort(), `${what}: messages`).toEqual(qemuMessages(path).sort());
  return ours;
}

/** What `qemu-img check -r mode` fixes on a copy of `path` (the image itself stays as it is). */
function qemuRepairCounts(path: string, mode: 'leaks' | 'all'): { leaksFixed: number; corruptionsFixed: number } {
  const copy = `${path}.qemu-copy`;
  writeFileSync(copy, readFileSync(path));
  try {
    const result = qemuImg(['check', '-f', 'qcow2', '-r', mode, '--output=json', copy]);
    const json = JSON.parse(result.stdout) as { 'leaks-fixed'?: number; 'corruptions-fixed'?: number };
    return { leaksFixed: json['leaks-fixed'] ?? 0, corruptionsFixed: json['corruptions-fixed'] ?? 0 };
  } finally {
    rmSync(copy, { force: true });
  }
}

/** Repairs `path` in `mode` and asserts it fixes what qemu-img check -r fixes on a copy. */
async function repairLikeQemu(path: string, mode: 'leaks' | 'all'): Promise<Qcow2CheckReport> {
  const qemu = qemuRepairCounts(path, mode);
  const report = await checkFile(path, { repair: mode });
  expect({ leaksFixed: report.leaksFixed, corruptionsFixed: report.corruptionsFixed }, `repair ${mode}`).toEqual(qemu);
  return report;
}

function expectQemuClean(path: string, what: string): void {
  const qemu = qemuCheck(path);
  expect(qemuFields(qemu), what).toMatchObject({ corruptions: 0, leaks: 0, checkErrors: 0 });
  expect(qemu.exitCode, what).toBe(0);
}

// ---------------------------------------------------------------------------------------------
// Without QEMU: a hand-built image in memory.
// ---------------------------------------------------------------------------------------------

// A minimal version 3 image of 1 MiB with 64 KiB clusters and an empty L1 table: header,
// refcount table, refcount block, L1 table; each cluster's refcount is 1.
function tinyImage(): Uint8Array {
  const cluster = 65536;
  const bytes = new Uint8Array(4 * cluster);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 0x514649fb);
  view.setUint32(4, 3);
  view.setUint32(20, 16);
  view.setBigUint64(24, 1n << 20n);
  view.setUint32(36, 1);
  view.setBigUint64(40, BigInt(3 * cluster));
  view.setBigUint64(48, BigInt(cluster));
  view.setUint32(56, 1);
  view.setUint32(96, 4);
  view.setUint32(100, 112);
  view.setBigUint64(cluster, BigInt(2 * cluster));
  for (let i = 0; i < 4; i++) view.setUint16(2 * cluster + 2 * i, 1);
  return bytes;
}

describe('qcow2 check without QEMU', () => {
  it('finds a hand-built image clean, then a leak, and repairs it', async () => {
    const clean = await checkQcow2(createMemoryBackend(tinyImage(), { writable: false }));
    expect(ourFields(clean)).toEqual({
      corruptions: 0, leaks: 0, checkErrors: 0, allocatedClusters: 0, totalClusters: 16, fragmentedClusters: 0,
      compressedClusters: 0, imageEndOffset: 4 * 65536,
    });
    expect(clean.messages).toEqual([]);
    expect(qemuCheckJson(clean, 'tiny.qcow2')).toEqual({
      filename: 'tiny.qcow2', format: 'qcow2', 'check-errors': 0, 'image-end-offset': 262144, 'total-clusters': 16,
    });

    // Cluster 4 gets a refcount but nothing references it: a leak.
    const leaked = new Uint8Array(5 * 65536);
    leaked.set(tinyImage());
    new DataView(leaked.buffer).setUint16(2 * 65536 + 8, 1);
    const backend = createMemoryBackend(leaked);
    const found = await checkQcow2(backend);
    expect(found).toMatchObject({ corruptions: 0, leaks: 1, imageEndOffset: 5 * 65536 });
    expect(found.messages).toEqual(['Leaked cluster 4 refcount=1 reference=0']);
    expect(checkExitCode(found)).toBe(3);

    const repaired = await checkQcow2(backend, { repair: 'leaks' });
    expect(repaired).toMatchObject({ corruptions: 0, leaks: 0, leaksFixed: 1, corruptionsFixed: 0, imageEndOffset: 4 * 65536 });
    expect(repaired.messages).toEqual(['Repairing cluster 4 refcount=1 reference=0']);
    const block = new Uint8Array(2);
    await backend.preadv(2 * 65536 + 8, [block]);
    expect([...block]).toEqual([0, 0]);
  });

  it('refuses to repair through a read-only backend, and bad options', async () => {
    const readOnly = createMemoryBackend(tinyImage(), { writable: false });
    await expect(checkQcow2(readOnly, { repair: 'leaks' })).rejects.toMatchObject({ code: 'QCOW2_READ_ONLY' });
    await expect(checkQcow2(readOnly, { repair: 'some' as 'all' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(checkQcow2(readOnly, { maxMessages: -1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('Qcow2Image.check: a custom backend\'s untyped flush failure comes out as IMAGE_IO_ERROR, as from flush()', async () => {
    const inner = createMemoryBackend(0);
    let failFlush = false;
    const backend = { ...inner, flush: () => (failFlush ? Promise.reject(new Error('device unplugged')) : inner.flush()) };
    const image = await Qcow2Image.create(backend, { virtualSize: 1 << 20 });
    await image.write(0, new Uint8Array(4096).fill(1));
    failFlush = true;
    const failure = await image.check().catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: 'IMAGE_IO_ERROR', cause: { message: 'device unplugged' } });
    failFlush = false;
    expect(await image.check()).toMatchObject({ corruptions: 0, leaks: 0 });
    await image.close();
  });
});

// ---------------------------------------------------------------------------------------------
// Against qemu-img.
// ---------------------------------------------------------------------------------------------

describeWithQemu('qcow2 check against qemu-img check', () => {
  let dir: string;
  let images: ZooImage[];
  let copies = 0;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-wasm-check-'));
    images = zoo(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A damaged copy of zoo image `name`: `damage` pokes it; returns the copy's path. */
  function damaged(name: string, damage: (image: ImageBytes) => void): string {
    const image = ImageBytes.load(join(dir, name));
    damage(image);
    const path = join(dir, `damaged-${copies++}-${name}`);
    image.save(path);
    return path;
  }

  it('reports every zoo image as qemu-img check does', async () => {
    const checked: string[] = [];
    for (const image of images) {
      if (image.format !== 'qcow2') continue;
      const report = await expectLikeQemu(image.path, image.name);
      expect(report.corruptions + report.leaks + report.checkErrors, image.name).toBe(0);
      checked.push(image.name);
    }
    expect(checked.length).toBeGreaterThanOrEqual(15);
  });

  // Each case: the zoo image, the damage, and the classification qemu-img gives it.
  const cases: { name: string; image: string; damage: (image: ImageBytes) => void; expected: Partial<Qcow2CheckReport> }[] = [
    {
      name: 'a leaked cluster (refcount 1, no reference)', image: 'v3.qcow2', expected: { corruptions: 0, leaks: 1 },
      damage: (image) => image.setRefcount(image.appendCluster(), 1),
    },
    {
      name: 'a referenced data cluster with refcount 0', image: 'v3.qcow2', expected: { corruptions: 2, leaks: 0 },
      damage: (image) => image.setRefcount(image.dataCluster(0), 0),
    },
    {
      name: 'an L2 entry pointing past the end of the file', image: 'v3.qcow2', expected: { corruptions: 2, leaks: 1 },
      damage: (image) => {
        const at = image.l2EntryPosition(0);
        const pastEnd = BigInt((Math.ceil(image.bytes.length / image.clusterSize) + 4) * image.clusterSize);
        image.setU64(at, (image.u64(at) & ~L1E_OFFSET_MASK) | pastEnd);
      },
    },
    {
      name: 'an unaligned L2 entry', image: 'v3.qcow2', expected: { corruptions: 2, leaks: 0 },
      damage: (image) => image.setU64(image.l2EntryPosition(0), image.u64(image.l2EntryPosition(0)) + 512n),
    },
    {
      name: 'OFLAG_COPIED missing on a data cluster with refcount 1', image: 'v3.qcow2', expected: { corruptions: 1, leaks: 0 },
      damage: (image) => image.setU64(image.l2EntryPosition(0), image.u64(image.l2EntryPosition(0)) & ~OFLAG_COPIED),
    },
    {
      name: 'OFLAG_COPIED missing on an L1 entry', image: 'v3.qcow2', expected: { corruptions: 1, leaks: 0 },
      damage: (image) => image.setU64(image.l1Offset, image.u64(image.l1Offset) & ~OFLAG_COPIED),
    },
    {
      name: 'an unaligned L1 entry (the L2 read lands in data)', image: 'v3.qcow2', expected: { corruptions: 257, leaks: 2 },
      damage: (image) => image.setU64(image.l1Offset, image.u64(image.l1Offset) + 512n),
    },
    {
      name: 'reserved bits in an L1 and an L2 entry', image: 'v3.qcow2', expected: { corruptions: 2, leaks: 0 },
      damage: (image) => {
        image.setU64(image.l1Offset, image.u64(image.l1Offset) | 2n);
        image.setU64(image.l2EntryPosition(0), image.u64(image.l2EntryPosition(0)) | 2n);
      },
    },
    {
      name: 'OFLAG_COPIED on a compressed cluster', image: 'comp_io.qcow2', expected: { corruptions: 1, leaks: 0 },
      damage: (image) => image.setU64(image.l2EntryPosition(0), image.u64(image.l2EntryPosition(0)) | OFLAG_COPIED),
    },
    {
      name: 'a subcluster both allocated and zero', image: 'xl2.qcow2', expected: { corruptions: 1, leaks: 0 },
      damage: (image) => image.setU64(image.l2EntryPosition(0) + 8, image.u64(image.l2EntryPosition(0) + 8) | (1n << 32n)),
    },
    {
      name: 'allocated subclusters in an unallocated cluster', image: 'xl2.qcow2', expected: { corruptions: 1, leaks: 0 },
      damage: (image) => image.setU64(image.l2EntryPosition(3 * 65536) + 8, 1n),
    },
    {
      name: 'an unaligned snapshot L1 table', image: 'snap.qcow2', expected: { corruptions: 1, leaks: 4 },
      damage: (image) => image.setU64(image.snapshotsOffset, image.u64(image.snapshotsOffset) + 512n),
    },
    {
      name: 'reserved bits in a refcount table entry', image: 'v3.qcow2', expected: { corruptions: 1, leaks: 1 },
      damage: (image) => image.setU64(image.reftableOffset, image.u64(image.reftableOffset) | 1n),
    },
    {
      name: 'a refcount block referenced twice', image: 'v3.qcow2', expected: { corruptions: 2, leaks: 0 },
      damage: (image) => image.setU64(image.reftableOffset + 8, image.u64(image.reftableOffset)),
    },
    {
      name: 'an L2 table shared by two L1 entries (512-byte clusters, 1-bit refcounts)', image: 'c512_rb1.qcow2',
      expected: { corruptions: 8, leaks: 0 },
      damage: (image) => image.setU64(image.l1Offset + 8, image.u64(image.l1Offset)),
    },
  ];

  for (const c of cases) {
    it(`classifies ${c.name} as qemu-img check does`, async () => {
      const path = damaged(c.image, c.damage);
      const report = await expectLikeQemu(path, c.name);
      expect(report).toMatchObject(c.expected);
    });
  }

  it('classifies randomly damaged metadata as qemu-img check does, and repairs it to what qemu-img then finds (seeded)', async () => {
    const seed = 20240611;
    const prng = makePrng(seed);
    const names = ['v3.qcow2', 'v2.qcow2', 'snap.qcow2', 'comp_io.qcow2', 'xl2.qcow2', 'c512_rb1.qcow2', 'c4k_rb64.qcow2',
      'prealloc_meta.qcow2', 'extdata.qcow2'];
    let compared = 0;
    for (let round = 0; round < 32; round++) {
      const name = names[prng.int(names.length)];
      const path = damaged(name, (image) => image.scramble(prng, 1 + prng.int(4)));
      const what = `seed ${seed} round ${round} (${name})`;
      if (![0, 2, 3].includes(qemuImg(['check', '-f', 'qcow2', path]).code)) continue; // qemu-img gave up
      const before = await expectLikeQemu(path, what);
      const mode = prng.int(2) === 0 ? 'leaks' : 'all';
      const after = await checkFile(path, { repair: mode });
      expect(ourFields(after), `${what}: after repair ${mode}`).toEqual(qemuFields(qemuCheck(path)));
      expect(after.corruptions, `${what}: repair ${mode} added corruptions`).toBeLessThanOrEqual(before.corruptions);
      expect(after.leaks, `${what}: repair ${mode} added leaks`).toBeLessThanOrEqual(before.leaks);
      compared++;
    }
    expect(compared).toBeGreaterThanOrEqual(24);
  });

  it('caps the messages and counts the rest', async () => {
    const path = damaged('v3.qcow2', (image) => image.setU64(image.l1Offset, image.u64(image.l1Offset) + 512n));
    const report = await checkFile(path, { maxMessages: 5 });
    expect(report.corruptions).toBe(257);
    expect(report.messages).toHaveLength(6);
    expect(report.messages[5]).toMatch(/^\(\d+ more messages omitted\)$/);
  });

  it('counts an unreadable refcount block as check errors (qemu-img gives up: "Check failed")', async () => {
    const path = damaged('v3.qcow2', (image) => image.setU64(image.reftableOffset, image.u64(image.reftableOffset) + 512n));
    const report = await checkFile(path);
    expect(report.corruptions).toBe(1);
    expect(report.checkErrors).toBe(9); // one per cluster of the file
    expect(checkExitCode(report)).toBe(1);
    const qemu = qemuImg(['check', path]);
    expect(qemu.code).toBe(1);
    const qemuLines = qemu.stderr.split('\n').filter((line) => /^(ERROR|Can't get)/.test(line));
    expect(report.messages).toEqual(qemuLines);
  });

  it('repair leaks: lowers a leaked refcount; qemu-img then finds the image clean', async () => {
    const path = damaged('v3.qcow2', (image) => image.setRefcount(image.appendCluster(), 1));
    const report = await repairLikeQemu(path, 'leaks');
    expect(report).toMatchObject({ corruptions: 0, leaks: 0, checkErrors: 0, leaksFixed: 1, corruptionsFixed: 0 });
    expect(report.messages).toEqual(['Repairing cluster 9 refcount=1 reference=0']);
    expectQemuClean(path, 'after repair leaks');
  });

  it('repair leaks at refcount widths 1 and 64', async () => {
    for (const name of ['c512_rb1.qcow2', 'c4k_rb64.qcow2']) {
      const path = damaged(name, (image) => {
        image.setRefcount(image.appendCluster(), 1);
        image.setRefcount(image.dataCluster(0), image.refcount(image.dataCluster(0)) + (name.includes('rb64') ? 5 : 0));
      });
      const before = await expectLikeQemu(path, name);
      const report = await repairLikeQemu(path, 'leaks');
      expect(report, name).toMatchObject({ corruptions: 0, leaks: 0, leaksFixed: before.leaks });
      expectQemuClean(path, `${name} after repair leaks`);
    }
  });

  it('repair all: raises a refcount of 0 for a referenced cluster, and fixes its OFLAG_COPIED', async () => {
    const path = damaged('v3.qcow2', (image) => image.setRefcount(image.dataCluster(0), 0));
    // QEMU rebuilds the whole refcount structure for a refcount of 0; this repair writes the one
    // refcount in place. Both count one corruption fixed (the OFLAG_COPIED error goes with it).
    const report = await repairLikeQemu(path, 'all');
    expect(report).toMatchObject({ corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 1, leaksFixed: 0 });
    expectQemuClean(path, 'after repair all');
  });

  it('repair leaks leaves a refcount that is too low, and reports it', async () => {
    const path = damaged('v3.qcow2', (image) => image.setRefcount(image.dataCluster(0), 0));
    const report = await checkFile(path, { repair: 'leaks' });
    expect(report).toMatchObject({ corruptions: 2, leaks: 0, corruptionsFixed: 0, leaksFixed: 0 });
    expect(qemuCheck(path).corruptions).toBe(2);
  });

  it('repair fixes OFLAG_COPIED (all, and leaks when nothing else is wrong, as QEMU does)', async () => {
    for (const mode of ['all', 'leaks'] as const) {
      const path = damaged('v3.qcow2', (image) => {
        image.setU64(image.l2EntryPosition(0), image.u64(image.l2EntryPosition(0)) & ~OFLAG_COPIED);
        image.setU64(image.l1Offset, image.u64(image.l1Offset) & ~OFLAG_COPIED);
      });
      const report = await repairLikeQemu(path, mode);
      expect(report, mode).toMatchObject({ corruptions: 0, leaks: 0, corruptionsFixed: 2 });
      expectQemuClean(path, `after repair ${mode}`);
    }
  });

  it('repair all restores a shared cluster\'s refcount of 2 and the OFLAG_COPIED it implies', async () => {
    const path = makeImage(dir, 'shared.qcow2', {
      size: 1 << 20, clusterSize: 65536, ops: [{ op: 'write', offset: 0, length: 128 * KiB, pattern: 0x33 }],
    });
    expect(qemuImg(['snapshot', '-c', 's1', path]).code).toBe(0);
    const image = ImageBytes.load(path);
    const cluster = image.dataCluster(65536);
    expect(image.refcount(cluster)).toBe(2);
    image.setRefcount(cluster, 1);
    image.save(path);
    const found = await expectLikeQemu(path, 'shared cluster with refcount 1');
    expect(found).toMatchObject({ corruptions: 2, leaks: 0 });
    const report = await repairLikeQemu(path, 'all');
    expect(report).toMatchObject({ corruptions: 0, leaks: 0, corruptionsFixed: 1 });
    expect(ImageBytes.load(path).refcount(cluster)).toBe(2);
    expectQemuClean(path, 'shared cluster after repair all');
  });

  it('repairs a lazy-refcounts image left dirty by a crash, and clears the dirty bit', async () => {
    const path = join(dir, 'crashed.qcow2');
    writeFileSync(path, readFileSync(join(dir, 'lazy.qcow2')));
    qemuIo(['-f', 'qcow2', '-c', 'write -q -P 0x5a 1M 128k', '-c', 'sigraise 9', path]); // killed: exit code ignored
    expect(qemuInfo(path)['dirty-flag']).toBe(true);
    const found = await expectLikeQemu(path, 'crashed lazy-refcounts image');
    expect(found).toMatchObject({ corruptions: 4, leaks: 0 });
    const report = await repairLikeQemu(path, 'all');
    expect(report).toMatchObject({ corruptions: 0, leaks: 0, corruptionsFixed: 2 });
    expect(qemuInfo(path)['dirty-flag']).toBe(false);
    expectQemuClean(path, 'crashed image after repair all');
  });

  it('reports what it cannot repair (a reference past the end of the file) and fixes the rest', async () => {
    const path = damaged('v3.qcow2', (image) => {
      const at = image.l2EntryPosition(0);
      image.setU64(at, (image.u64(at) & ~L1E_OFFSET_MASK) | BigInt((Math.ceil(image.bytes.length / image.clusterSize) + 4) * image.clusterSize));
    });
    const report = await checkFile(path, { repair: 'all' });
    expect(report).toMatchObject({ leaks: 0, leaksFixed: 1 });
    expect(report.corruptions).toBe(qemuCheck(path).corruptions);
    expect(report.corruptions).toBeGreaterThan(0);
  });

  it('Qcow2Image.check: reports, repairs when open read-only over a writable backend, refuses on a writable instance', async () => {
    const path = damaged('v3.qcow2', (image) => image.setRefcount(image.appendCluster(), 1));
    const writable = await Qcow2Image.open(await openNodeBackend(path, { writable: true }));
    try {
      expect(await writable.check()).toMatchObject({ leaks: 1, corruptions: 0 });
      await expect(writable.check({ repair: 'leaks' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    } finally {
      await writable.close();
    }
    const readOnly = await Qcow2Image.open(await openNodeBackend(path, { writable: false }));
    try {
      await expect(readOnly.check({ repair: 'leaks' })).rejects.toMatchObject({ code: 'QCOW2_READ_ONLY' });
    } finally {
      await readOnly.close();
    }
    const repairing = await Qcow2Image.open(await openNodeBackend(path, { writable: true }), { readOnly: true });
    try {
      expect(await repairing.check({ repair: 'leaks' })).toMatchObject({ leaks: 0, leaksFixed: 1 });
      expect(await repairing.read(0, 4096)).toEqual(new Uint8Array(4096).fill(0xab).fill(0xcd, 512));
    } finally {
      await repairing.close();
    }
    expectQemuClean(path, 'after Qcow2Image.check repair');
  });

  it('refuses images with persistent bitmaps', async () => {
    const path = makeImage(dir, 'bitmap.qcow2', { size: 1 << 20 });
    expect(qemuImg(['bitmap', '--add', path, 'b0']).code).toBe(0);
    await expect(checkFile(path)).rejects.toMatchObject({ code: 'QCOW2_UNSUPPORTED_FEATURE' });
  });
});
