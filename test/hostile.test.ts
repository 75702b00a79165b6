// SPDX-License-Identifier: MIT
// Hostile images: every item of the bad-input checklist as an image built from a valid one. Each
// is opened read-only and writable, read, written, flushed and checked; every step must end in
// success or a typed Qcow2WasmError within 2 s and 64 MiB of resident memory, no write may land
// on protected metadata, and a write refused as a metadata overlap marks a version 3 image
// corrupt on disk (after which a writable open is refused, as QEMU does).

import { describe, it, expect, beforeAll } from 'vitest';
import { backendBytes, buildBaseImage, exercise, getU64, headBytes, HDR, parseLayout, patternOf, OutcomeTally, type ExerciseResult } from './helpers/hostile-images.js';
import { HOSTILE_CASES, withBacking, type Bases, type HostileCase } from './helpers/hostile-corpus.js';
import { Qcow2Image } from '../bindings/qcow2/qcow2-image.js';
import { createMemoryBackend } from '../bindings/backends/memory.js';
import { Qcow2WasmError } from '../bindings/base/errors.js';

/** Resource bounds per case (not performance targets). */
const TIME_BOUND_MS = 2000;
const MEMORY_BOUND_BYTES = 64 << 20;

let bases: Bases;
const tally = new OutcomeTally();

beforeAll(async () => {
  bases = {
    v3: await buildBaseImage(),
    v2: await buildBaseImage({ compat: '0.10' }),
    zstd: await buildBaseImage({ compressionType: 'zstd' }),
    extendedL2: await buildBaseImage({ extendedL2: true }),
  };
});

function describeSteps(result: ExerciseResult): string {
  return result.steps.map((s) => `${s.step}: ${s.outcome} in ${s.elapsedMs.toFixed(0)} ms${s.outcome === 'ok' ? '' : ` (${s.message})`}`).join('\n');
}

async function runCase(c: HostileCase): Promise<ExerciseResult> {
  const bytes = c.build(bases);
  const result = await exercise(bytes, { files: c.files?.(bases), writes: c.writes });
  tally.add(result);
  const steps = describeSteps(result);
  expect(result.crash, `a step failed with an error that is no typed outcome (untyped, or the core's own invariant failure):\n${steps}\n${(result.crash?.error as Error)?.stack ?? ''}`).toBeUndefined();
  expect(result.elapsedMs, `took ${result.elapsedMs.toFixed(0)} ms:\n${steps}`).toBeLessThan(c.knownSlow?.timeMs ?? TIME_BOUND_MS);
  if (c.knownSlow) console.log(`hostile images: '${c.name}' took ${result.elapsedMs.toFixed(0)} ms, resident memory +${(result.peakMemoryGrowthBytes / 2 ** 20).toFixed(0)} MiB (known: ${c.knownSlow.why})`);
  expect(result.peakMemoryGrowthBytes, `resident memory grew ${(result.peakMemoryGrowthBytes / 2 ** 20).toFixed(1)} MiB`).toBeLessThan(c.knownSlow?.memoryBytes ?? MEMORY_BOUND_BYTES);
  const outcome = (step: string) => result.steps.find((s) => s.step === step)?.outcome;
  if (c.expect.openReadOnly) expect(outcome('open read-only'), steps).toBe(c.expect.openReadOnly);
  if (c.expect.openWritable) expect(outcome('open writable'), steps).toBe(c.expect.openWritable);
  if (c.expect.someStep) expect(result.steps.map((s) => s.outcome), steps).toContain(c.expect.someStep);
  if (c.expect.overlapRefused !== undefined) expect(result.overlapRefused, steps).toBe(c.expect.overlapRefused);
  if (c.protect) {
    const layout = parseLayout(bytes);
    for (const [start, end] of c.protect(layout)) {
      const hits = result.writes.filter((w) => w.position < end && start < w.position + w.length);
      expect(hits, `writes landed on protected bytes [${start}, ${end})\n${steps}`).toEqual([]);
    }
  }
  if (result.overlapRefused) {
    const marked = (getU64(await headBytes(result.after), HDR.incompatible) & 2n) !== 0n;
    const version = new DataView(bytes.buffer, bytes.byteOffset).getUint32(HDR.version);
    expect(marked, 'a refused overlap marks version 3 images corrupt (version 2 has no feature bits)').toBe(version === 3);
    // Every write after the refusal is refused too.
    const refusal = result.steps.findIndex((s) => s.outcome === 'QCOW2_CORRUPT' && /overlap|marked corrupt/.test(s.message ?? ''));
    for (const s of result.steps.slice(refusal + 1)) {
      if (s.step.startsWith('write ')) expect(s.outcome, steps).toBe('QCOW2_CORRUPT');
    }
  }
  return result;
}

describe('hostile images', () => {
  it('the corpus covers every checklist item that applies to an image', () => {
    const covered = new Set(HOSTILE_CASES.flatMap((c) => c.items));
    // Items 9 (extensions) and 20 (bitmaps) are header-parser cases (qcow2-header.test.ts);
    // 21-23 are runtime behaviour (stress, fault and merge tests).
    for (const item of [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]) expect(covered, `item ${item}`).toContain(item);
  });

  for (const c of HOSTILE_CASES) {
    it(`${c.name} [items ${c.items.join(', ')}]`, async () => { await runCase(c); });
  }

  it('an image marked corrupt by a refused overlap cannot be reopened writable, and still reads', async () => {
    const hostile = HOSTILE_CASES.find((c) => c.name === 'L2 entry points at the L1 table')!;
    const result = await runCase(hostile);
    const bytes = await backendBytes(result.after);
    // A failed open closes the backend it was given, so each open gets its own copy.
    await expect(Qcow2Image.open(createMemoryBackend(bytes.slice()))).rejects.toMatchObject({ code: 'QCOW2_READ_ONLY' });
    const image = await Qcow2Image.open(createMemoryBackend(bytes), { readOnly: true });
    expect((await image.read(0, 4)).join(',')).toBe(Array(4).fill(patternOf(0)).join(','));
    await image.close();
  });

  it('offsets past 2^53 in the metadata are QCOW2_CORRUPT on read and write, never INVALID_ARGUMENT', async () => {
    for (const name of ['compressed descriptor beyond 2^53', 'L2 entry beyond 2^53', 'L1 entry beyond 2^53']) {
      const bytes = HOSTILE_CASES.find((c) => c.name === name)!.build(bases);
      const cluster = name.startsWith('compressed') ? 5 : name.startsWith('L2') ? 2 : 0;
      const image = await Qcow2Image.open(createMemoryBackend(bytes));
      const offset = cluster * 65536;
      for (const step of [() => image.read(offset, 512), () => image.write(offset + 512, new Uint8Array(512))]) {
        const error = await step().then(() => undefined, (e: unknown) => e);
        expect(error, name).toBeInstanceOf(Qcow2WasmError);
        expect((error as Qcow2WasmError).code, `${name}: ${(error as Error).message}`).toBe('QCOW2_CORRUPT');
        expect((error as Error).message, name).toMatch(/past 2\^53/);
      }
      await image.close().catch(() => {});
    }
  });

  it('the unknown autoclear bit is cleared by the first writable open', async () => {
    const hostile = HOSTILE_CASES.find((c) => c.name.startsWith('unknown autoclear'))!;
    const result = await runCase(hostile);
    expect(getU64(await headBytes(result.after), HDR.autoclear)).toBe(0n);
  });

  it('backing names reach openBacking verbatim and are never resolved', async () => {
    const names: string[] = [];
    for (const name of ['json:{"file":{"filename":"/etc/passwd"}}', '../../../etc/passwd']) {
      await expect(Qcow2Image.open(createMemoryBackend(withBacking(bases.v3, name)), {
        readOnly: true, openBacking: async (n) => { names.push(n); throw new Qcow2WasmError('INVALID_ARGUMENT', 'refused by the embedder'); },
      })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
    expect(names).toEqual(['json:{"file":{"filename":"/etc/passwd"}}', '../../../etc/passwd']);
  });

  it('prints the counts', () => {
    console.log(`hostile images: ${HOSTILE_CASES.length} images; ${tally}`);
    expect(tally.cases).toBeGreaterThanOrEqual(HOSTILE_CASES.length);
  });
});
