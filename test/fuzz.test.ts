// SPDX-License-Identifier: MIT
// Structure-aware fuzzing. (1) Mutated images: valid images with header fields, table entries and
// extension bytes replaced by interesting or random values are opened, read, written, flushed and
// checked; every step must end in success or a typed Qcow2WasmError, in bounded time, and a write
// refused as a metadata overlap must leave a version 3 image marked corrupt. (2) Random operation
// sequences on valid images of every kind, against a flat model, with reopens, ending in a clean
// check. The short run is part of `npm test`; `npm run fuzz` (QCOW2_WASM_FUZZ=long) runs longer.
// Every failure prints its seed (rerun with QCOW2_WASM_SEED=<seed>) and its case as JSON: add it
// to test/fixtures/fuzz-regressions/ and it is replayed on every run.

import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, expect, beforeAll, afterAll, onTestFinished } from 'vitest';
import { buildBaseImage, exercise, getU64, headBytes, HDR, OutcomeTally, type ExerciseResult } from './helpers/hostile-images.js';
import { applyMutations, randomCase, type FuzzCase } from './helpers/fuzz-mutate.js';
import { makePrng, type Prng } from './helpers/prng.js';
import { ModelDisk } from './helpers/model.js';
import { expectBytes } from './helpers/bytes.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import type { CreateOptions } from '../bindings/dispatch/image.js';
import { Qcow2WasmError } from '../bindings/base/errors.js';
import { convertToRaw, describeWithQemu, qemuCheck, qemuImg, qemuIo, requireQemu } from './helpers/qemu.js';
import { keepOpen } from './helpers/backend-contents.js';

const LONG = process.env.QCOW2_WASM_FUZZ === 'long';
const SEED = Number(process.env.QCOW2_WASM_SEED ?? 20261127) >>> 0;
const MUTATION_CASES = LONG ? 20_000 : 2_000;
const SEQUENCES = LONG ? 400 : 24;
/** Resource bound per mutated image (not a performance target). */
const CASE_TIME_BOUND_MS = 2000;
/** A case still running after this is a hang. */
const HANG_MS = 20_000;
const REGRESSIONS_DIR = join(import.meta.dirname, 'fixtures', 'fuzz-regressions');

/** The kinds of valid image the fuzzer starts from (small, so cases are cheap). */
const BASE_KINDS: Record<string, CreateOptions> = {
  v3: { virtualSize: 1 << 20 },
  v2: { virtualSize: 1 << 20, compat: '0.10' },
  'v3-4k-refcount8': { virtualSize: 1 << 20, clusterSize: 4096, refcountBits: 8 },
  'v3-extended-l2': { virtualSize: 1 << 20, extendedL2: true, clusterSize: 16384 },
  'v3-lazy-zstd': { virtualSize: 1 << 20, lazyRefcounts: true, compressionType: 'zstd' },
  'v3-512b-refcount1': { virtualSize: 256 << 10, clusterSize: 512, refcountBits: 1 },
};

const bases = new Map<string, Uint8Array>();
beforeAll(async () => {
  for (const [name, options] of Object.entries(BASE_KINDS)) {
    const clusterSize = options.clusterSize ?? 65536;
    const clusters = Math.floor(options.virtualSize / clusterSize);
    bases.set(name, await buildBaseImage({ ...options, writtenClusters: [0, 1, 2, Math.floor(clusters / 2), clusters - 1] }));
  }
});

/** What makes a mutated-image result a failure (undefined: fine). */
async function failureOf(result: ExerciseResult): Promise<string | undefined> {
  if (result.crash) return `an error that is no typed outcome (untyped, or the core's own invariant failure) in '${result.crash.step}': ${(result.crash.error as Error)?.stack ?? String(result.crash.error)}`;
  if (result.elapsedMs > CASE_TIME_BOUND_MS) return `took ${result.elapsedMs.toFixed(0)} ms (bound ${CASE_TIME_BOUND_MS})`;
  if (result.overlapRefused) {
    const head = await headBytes(result.after);
    const version = new DataView(head.buffer).getUint32(HDR.version);
    if (version === 3 && (getU64(head, HDR.incompatible) & 2n) === 0n) return 'a write was refused as a metadata overlap but the image was not marked corrupt';
  }
  return undefined;
}

/** Runs one mutation case on its base (by name, or `base` itself with its backing `files`). */
async function runMutationCase(fuzzCase: FuzzCase, seed: number, check: boolean, writable = true,
                               base = bases.get(fuzzCase.base)!, files?: Record<string, Uint8Array>): Promise<{ result: ExerciseResult; failure?: string }> {
  const bytes = applyMutations(base, fuzzCase.mutations);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`hang: no result after ${HANG_MS} ms`)), HANG_MS); });
  try {
    const result = await Promise.race([
      exercise(bytes, { seed, check, writable, files, maxReadBytes: 1 << 20, writes: [
        { offset: 0, length: 4096 }, { offset: 5000, length: 70000 }, { offset: 1 << 19, length: 512 }, { offset: (1 << 20) - 4096, length: 4096 },
      ] }),
      hang,
    ]);
    return { result, failure: await failureOf(result) };
  } finally {
    clearTimeout(timer);
  }
}

const describeCase = (seed: number, fuzzCase: FuzzCase, failure: string): string =>
  `fuzz case failed (rerun: QCOW2_WASM_SEED=${seed} and this case; keep it as a regression in test/fixtures/fuzz-regressions/):\n` +
  `${JSON.stringify(fuzzCase)}\n${failure}`;

describe('fuzzing mutated images', () => {
  it('replays every regression case', async () => {
    const files = readdirSync(REGRESSIONS_DIR).filter((f) => f.endsWith('.json')).sort();
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) {
      const fuzzCase = JSON.parse(readFileSync(join(REGRESSIONS_DIR, file), 'utf8')) as FuzzCase & { note?: string };
      const { result, failure } = await runMutationCase(fuzzCase, 1, true);
      expect(failure, `${file}: ${failure}\n${result.steps.map((s) => `${s.step}: ${s.outcome} ${s.message ?? ''}`).join('\n')}`).toBeUndefined();
    }
    console.log(`fuzz regressions: ${files.length} cases replayed`);
  });

  it(`${MUTATION_CASES} seeded mutation cases end in success or typed errors (seed ${SEED})`, async () => {
    const tally = new OutcomeTally();
    const started = performance.now();
    for (let i = 0; i < MUTATION_CASES; i++) {
      const seed = (SEED + i) >>> 0;
      const fuzzCase = randomCase(makePrng(seed), bases);
      // Every case is opened read-only, read and checked; every 2nd also written (the slower part),
      // and the result of every 8th checked.
      const { result, failure } = await runMutationCase(fuzzCase, seed, i % 8 === 0, i % 2 === 0);
      tally.add(result);
      if (failure) expect.fail(describeCase(seed, fuzzCase, failure));
    }
    console.log(`fuzz (seed ${SEED}${LONG ? ', long' : ''}): ${tally} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }, LONG ? 3_600_000 : 300_000);
});

/** A random guest range inside `size`: often cluster-aligned, sometimes unaligned or spanning clusters. */
function randomRange(prng: Prng, size: number, clusterSize: number): [number, number] {
  const offset = prng.int(4) === 0 ? prng.int(size / clusterSize) * clusterSize : prng.int(size);
  const length = 1 + prng.int(Math.min(size - offset, prng.int(3) === 0 ? 3 * clusterSize : 8192));
  return [offset, length];
}

/** Where a sequence starts: an image file made elsewhere (qemu-img), its backing files and its guest content. */
interface SequenceStart { bytes: Uint8Array; files: Record<string, Uint8Array>; content: Uint8Array }

/**
 * Runs one seeded sequence of writes, writeZeroes, multiwrite batches, reads (checked against the
 * model), flushes and reopens; on a new image of `kind`, or on `start`. With `qemuDir`, the file
 * at the end is also checked by qemu-img (check clean, guest content equal to the model).
 */
async function runSequence(kind: string, seed: number, start?: SequenceStart, qemuDir?: string): Promise<number> {
  const prng = makePrng(seed);
  const options = BASE_KINDS[kind];
  const backend = createMemoryBackend(start?.bytes.slice());
  const openBacking = async (name: string) => {
    const file = start?.files[name];
    if (!file) throw new Qcow2WasmError('INVALID_ARGUMENT', `no backing file '${name}' in the test`);
    return createMemoryBackend(file, { writable: false });
  };
  let image = start ? await Qcow2Image.open(keepOpen(backend), { openBacking }) : await Qcow2Image.create(keepOpen(backend), { ...options, virtualSize: 2 << 20 });
  const size = image.virtualSize;
  const clusterSize = image.header.clusterSize;
  const model = new ModelDisk();
  if (start) model.write(0, start.content);
  // Reopens from a copy of the file after a clean close (the close flushes; a small cache forces
  // evictions and write-back in later steps).
  let file = backend;
  const reopen = async (): Promise<Qcow2Image> => {
    await image.flush();
    const bytes = new Uint8Array(await file.getSize());
    await file.preadv(0, [bytes]);
    await image.close();
    file = createMemoryBackend(bytes);
    return Qcow2Image.open(keepOpen(file), { cacheBytes: 16 << 10, openBacking });
  };
  let ops = 0;
  for (let step = 0; step < 40; step++, ops++) {
    const roll = prng.int(20);
    const [offset, length] = randomRange(prng, size, clusterSize);
    if (roll < 10) {
      const data = prng.fill(new Uint8Array(length));
      model.write(offset, data);
      await image.write(offset, data);
    } else if (roll < 12) {
      model.zero(offset, length);
      await image.writeZeroes(offset, length);
    } else if (roll < 15) {
      // A batch of concurrent writes, possibly overlapping (applied in submission order).
      const writes = Array.from({ length: 2 + prng.int(6) }, () => {
        const [o, l] = randomRange(prng, size, clusterSize);
        const data = prng.fill(new Uint8Array(l));
        model.write(o, data);
        return { offset: o, data };
      });
      await Promise.all(image.multiwrite(writes));
    } else if (roll < 18) {
      expectBytes(await image.read(offset, length), model.read(offset, length), `${kind} seed ${seed} step ${step}: read ${offset}+${length}`);
    } else if (roll < 19) {
      await image.flush();
    } else {
      image = await reopen();
    }
  }
  expectBytes(await image.read(0, size), model.read(0, size), `${kind} seed ${seed}: whole image`);
  const report = await image.check();
  expect({ corruptions: report.corruptions, leaks: report.leaks, checkErrors: report.checkErrors },
    `${kind} seed ${seed}: check after the sequence\n${report.messages.join('\n')}`).toEqual({ corruptions: 0, leaks: 0, checkErrors: 0 });
  await image.close();
  if (qemuDir) {
    // QEMU as the oracle of the file this sequence left: a clean check and the model's content.
    const bytes = new Uint8Array(await file.getSize());
    await file.preadv(0, [bytes]);
    const path = join(qemuDir, `sequence-${kind}-${seed}.qcow2`);
    writeFileSync(path, bytes);
    for (const [name, backingBytes] of Object.entries(start?.files ?? {})) writeFileSync(join(qemuDir, name), backingBytes);
    const qemu = qemuCheck(path);
    expect({ exitCode: qemu.exitCode, corruptions: qemu.corruptions ?? 0, leaks: qemu.leaks ?? 0 }, `${kind} seed ${seed}: qemu-img check`)
      .toEqual({ exitCode: 0, corruptions: 0, leaks: 0 });
    expectBytes(convertToRaw(path), model.read(0, size), `${kind} seed ${seed}: the file as qemu-img reads it`);
    rmSync(path);
  }
  return ops;
}

describe('fuzzing operation sequences on valid images', () => {
  it(`${SEQUENCES} seeded random sequences per image kind match the model and check clean (seed ${SEED})`, async () => {
    let operations = 0;
    let byQemu = 0;
    const qemuSample = requireQemu('fuzz sequences: qemu-img check of a sample');
    const qemuDir = mkdtempSync(join(tmpdir(), 'qcow2-fuzz-seq-'));
    onTestFinished(() => rmSync(qemuDir, { recursive: true, force: true }));
    for (const kind of Object.keys(BASE_KINDS)) {
      for (let i = 0; i < SEQUENCES / 6 || i === 0; i++) {
        const seed = (SEED + 1_000_000 + i * 7919 + kind.length) >>> 0;
        try {
          // Every third sequence's file is also checked by qemu-img.
          operations += await runSequence(kind, seed, undefined, qemuSample && i % 3 === 0 ? qemuDir : undefined);
          if (qemuSample && i % 3 === 0) byQemu++;
        } catch (error) {
          throw new Error(`operation sequence failed: kind ${kind}, QCOW2_WASM_SEED base ${SEED}, sequence seed ${seed}: ${(error as Error).message}`, { cause: error });
        }
      }
    }
    console.log(`fuzz sequences (seed ${SEED}): ${Math.ceil(SEQUENCES / 6) * Object.keys(BASE_KINDS).length} sequences, ${operations} operations, ` +
      `every check clean; ${byQemu} files also checked by qemu-img`);
    if (qemuSample) expect(byQemu).toBeGreaterThan(0);
  }, LONG ? 3_600_000 : 300_000);
});

describeWithQemu('fuzzing images qemu-img made: a backing file, internal snapshots, compressed clusters', () => {
  let dir: string;
  /** rich.qcow2: an overlay on base.qcow2 with compressed clusters, two internal snapshots, and writes after them. */
  let rich: SequenceStart;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qcow2-fuzz-rich-'));
    const must = (result: { code: number; stderr: string }, what: string) => {
      if (result.code !== 0) throw new Error(`${what}: ${result.stderr}`);
    };
    must(qemuImg(['create', '-q', '-f', 'qcow2', 'base.qcow2', '2M'], dir), 'create base');
    must(qemuIo(['-c', 'write -P 0x11 0 64k', '-c', 'write -P 0x12 192k 128k', '-c', 'write -c -P 0x13 1M 64k', 'base.qcow2'], dir), 'write base');
    must(qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'rich.qcow2', '2M'], dir), 'create rich');
    must(qemuIo(['-c', 'write -c -P 0x21 64k 64k', '-c', 'write -P 0x22 256k 4k', 'rich.qcow2'], dir), 'write rich');
    must(qemuImg(['snapshot', '-c', 'first', 'rich.qcow2'], dir), 'snapshot first');
    must(qemuIo(['-c', 'write -P 0x23 64k 4k', '-c', 'write -c -P 0x24 512k 64k', '-c', 'write -z 1M 64k', 'rich.qcow2'], dir), 'write after snapshot');
    must(qemuImg(['snapshot', '-c', 'second', 'rich.qcow2'], dir), 'snapshot second');
    must(qemuIo(['-c', 'write -P 0x25 1536k 8k', 'rich.qcow2'], dir), 'write after second snapshot');
    rich = {
      bytes: new Uint8Array(readFileSync(join(dir, 'rich.qcow2'))),
      files: { 'base.qcow2': new Uint8Array(readFileSync(join(dir, 'base.qcow2'))) },
      content: convertToRaw(join(dir, 'rich.qcow2')),
    };
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('mutated versions end in success or typed errors', async () => {
    const cases = LONG ? 4000 : 300;
    const tally = new OutcomeTally();
    const bases = new Map([['rich', rich.bytes]]);
    for (let i = 0; i < cases; i++) {
      const seed = (SEED + 5_000_000 + i) >>> 0;
      const fuzzCase = randomCase(makePrng(seed), bases);
      const { result, failure } = await runMutationCase(fuzzCase, seed, i % 8 === 0, i % 2 === 0, rich.bytes, rich.files);
      tally.add(result);
      if (failure) expect.fail(describeCase(seed, fuzzCase, `${failure} (base: the qemu-img made rich.qcow2 of this test)`));
    }
    console.log(`fuzz on a qemu-img image with backing file, snapshots and compressed clusters (seed ${SEED}): ${tally}`);
  }, LONG ? 3_600_000 : 300_000);

  it('operation sequences match the model, and qemu-img checks and reads every resulting file', async () => {
    let operations = 0;
    const sequences = LONG ? 40 : 4;
    for (let i = 0; i < sequences; i++) {
      const seed = (SEED + 6_000_000 + i * 7919) >>> 0;
      try {
        operations += await runSequence('v3', seed, rich, dir);
      } catch (error) {
        throw new Error(`operation sequence on rich.qcow2 failed: QCOW2_WASM_SEED base ${SEED}, sequence seed ${seed}: ${(error as Error).message}`, { cause: error });
      }
    }
    console.log(`fuzz sequences on a qemu-img image with backing file, snapshots and compressed clusters: ${sequences} sequences, ${operations} operations; qemu-img check clean and content equal for each`);
  }, LONG ? 3_600_000 : 300_000);
});
