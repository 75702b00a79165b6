// SPDX-License-Identifier: MIT
// Tests of the vitest shim itself, run under Deno by run.test.ts: every matcher passes what vitest
// passes and fails what vitest fails (a matcher that cannot fail would hide broken suites), and
// hooks run in vitest's order and it.each spreads its rows.

import { AssertionError } from 'node:assert/strict';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

/** Asserts that `check` fails with an AssertionError whose message contains `text`. */
function fails(check: () => void, text: string): void {
  let caught: unknown;
  try {
    check();
  } catch (error) {
    caught = error;
  }
  if (!(caught instanceof AssertionError)) throw new Error(`expected an AssertionError containing "${text}", got ${String(caught)}`);
  if (!caught.message.includes(text)) throw new Error(`the failure "${caught.message}" does not contain "${text}"`);
}

/** Async form of fails(). */
async function failsAsync(check: () => Promise<void>, text: string): Promise<void> {
  const caught = await check().then(() => undefined, (error: unknown) => error);
  if (!(caught instanceof AssertionError)) throw new Error(`expected an AssertionError containing "${text}", got ${String(caught)}`);
  if (!caught.message.includes(text)) throw new Error(`the failure "${caught.message}" does not contain "${text}"`);
}

class Plain {
  constructor(readonly a: number) {}
}

describe('vitest shim: matchers fail when they must', () => {
  it('toBe is Object.is', () => {
    expect(1).toBe(1);
    expect(Number.NaN).toBe(Number.NaN);
    fails(() => expect(0).toBe(-0), 'to be');
    fails(() => expect({}).toBe({}), 'to be');
    fails(() => expect(1, 'named').toBe(2), 'named: expected 1 to be 2');
    expect(1).not.toBe(2);
    fails(() => expect(1).not.toBe(1), 'not:');
  });

  it('toEqual recurses through arrays, typed arrays, Maps, Sets and objects, ignoring undefined properties', () => {
    expect({ a: [1, { b: 2n }], c: undefined }).toEqual({ a: [1, { b: 2n }] });
    expect(new Map([[1, { x: 1 }]])).toEqual(new Map([[1, { x: 1 }]]));
    expect(new Set([1, 2])).toEqual(new Set([2, 1]));
    expect(Uint8Array.of(1, 2)).toEqual(Uint8Array.of(1, 2));
    expect(new Plain(1)).toEqual({ a: 1 });
    fails(() => expect({ a: 1 }).toEqual({ a: 1, b: 2 }), 'deeply equal');
    fails(() => expect([1, 2]).toEqual([1, 2, 3]), 'deeply equal');
    fails(() => expect([[1]]).toEqual([[2]]), 'deeply equal');
    fails(() => expect(Uint8Array.of(1, 2)).toEqual(Uint8Array.of(1, 3)), 'deeply equal');
    fails(() => expect(Uint8Array.of(1)).toEqual([1]), 'deeply equal');
    fails(() => expect(new Map([[1, 'a']])).toEqual(new Map([[1, 'b']])), 'deeply equal');
    fails(() => expect(new Set([1])).toEqual(new Set([2])), 'deeply equal');
    fails(() => expect(0).toEqual(-0), 'deeply equal');
    fails(() => expect('1').toEqual(1), 'deeply equal');
    expect([1]).not.toEqual([2]);
    fails(() => expect([1]).not.toEqual([1]), 'not:');
  });

  it('toMatchObject checks a subset, recursively, with arrays matched element by element', () => {
    expect({ a: 1, b: { c: 2, d: 3 }, e: [{ f: 1, g: 2 }] }).toMatchObject({ b: { c: 2 }, e: [{ f: 1 }] });
    expect(new Error('boom')).toMatchObject({ message: 'boom' });
    fails(() => expect({ a: 1 }).toMatchObject({ a: 2 }), 'match object');
    fails(() => expect({ a: 1 }).toMatchObject({ b: undefined }), 'match object');
    fails(() => expect({ e: [1, 2] }).toMatchObject({ e: [1] }), 'match object');
    fails(() => expect(null).toMatchObject({ a: 1 }), 'match object');
  });

  it('toBeInstanceOf, toBeUndefined, toHaveLength, toContain, toContainEqual, toMatch', () => {
    expect(new Plain(1)).toBeInstanceOf(Plain);
    fails(() => expect({ a: 1 }).toBeInstanceOf(Plain), 'instance of Plain');
    expect(undefined).toBeUndefined();
    fails(() => expect(null).toBeUndefined(), 'undefined');
    expect([1, 2]).toHaveLength(2);
    fails(() => expect('abc').toHaveLength(2), 'length 2');
    expect([1, 2]).toContain(2);
    expect('hello').toContain('ell');
    fails(() => expect([{ a: 1 }]).toContain({ a: 1 }), 'contain');
    fails(() => expect('hello').toContain('xyz'), 'contain');
    expect([{ a: 1 }]).toContainEqual({ a: 1 });
    fails(() => expect([{ a: 1 }]).toContainEqual({ a: 2 }), 'contain an item equal');
    expect('qcow2').toMatch(/^qc/);
    expect('qcow2').toMatch('cow');
    fails(() => expect('qcow2').toMatch(/raw/), 'to match');
  });

  it('the ordering matchers compare numbers and bigints', () => {
    expect(2).toBeGreaterThan(1);
    expect(2n).toBeGreaterThanOrEqual(2n);
    expect(1).toBeLessThan(2);
    expect(2).toBeLessThanOrEqual(2);
    fails(() => expect(1).toBeGreaterThan(1), 'greater than 1');
    fails(() => expect(1).toBeGreaterThanOrEqual(2), 'greater than or equal');
    fails(() => expect(2).toBeLessThan(2), 'less than 2');
    fails(() => expect(3).toBeLessThanOrEqual(2), 'less than or equal');
    fails(() => expect(Number.NaN).toBeGreaterThan(0), 'greater than');
  });

  it('toThrow takes a RegExp, a substring, a class or expect.objectContaining', () => {
    const thrower = () => {
      throw Object.assign(new RangeError('bad size 7'), { code: 'INVALID_ARGUMENT' });
    };
    expect(thrower).toThrow();
    expect(thrower).toThrow(/size \d/);
    expect(thrower).toThrow('bad size');
    expect(thrower).toThrow(RangeError);
    expect(thrower).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    fails(() => expect(() => 1).toThrow(), 'to throw');
    fails(() => expect(thrower).toThrow(/other/), 'to match');
    fails(() => expect(thrower).toThrow(TypeError), 'to match');
    fails(() => expect(thrower).toThrow(expect.objectContaining({ code: 'OTHER' })), 'to match');
  });

  it('rejects needs a rejection and applies the matcher to its reason; expect.fail fails', async () => {
    await expect(Promise.reject(Object.assign(new Error('x'), { code: 'E' }))).rejects.toMatchObject({ code: 'E' });
    await expect(Promise.reject(new Plain(1))).rejects.toBeInstanceOf(Plain);
    await failsAsync(() => expect(Promise.resolve(1)).rejects.toBeInstanceOf(Plain), 'instead of rejecting');
    await failsAsync(() => expect(Promise.reject(new Error('x'))).rejects.toMatchObject({ code: 'E' }), 'match object');
    fails(() => expect.fail('on purpose'), 'on purpose');
  });
});

const order: string[] = [];

describe('vitest shim: hooks', () => {
  beforeAll(() => { order.push('beforeAll'); });
  beforeEach(() => { order.push('beforeEach'); });
  afterEach(() => { order.push('afterEach'); });
  afterAll(() => {
    // Runs after both tests below: check the whole sequence here.
    expect(order).toEqual(['beforeAll', 'beforeEach', 'outer beforeEach', 'inner beforeEach', 'first', 'inner afterEach 2', 'inner afterEach 1',
      'afterEach', 'beforeEach', 'second', 'afterEach']);
  });

  describe('nested', () => {
    beforeEach(() => { order.push('outer beforeEach'); });
    beforeEach(() => { order.push('inner beforeEach'); });
    afterEach(() => { order.push('inner afterEach 1'); });
    afterEach(() => { order.push('inner afterEach 2'); });
    it('runs the outer block\'s beforeEach first and its afterEach last, after hooks in reverse', () => { order.push('first'); });
  });

  it('runs only the hooks of its own block', () => { order.push('second'); });
});

describe('vitest shim: it.each', () => {
  const rows: Array<[string, number]> = [['one', 1], ['two', 2]];
  it.each(rows)('formats %s and %d into the name of row %s', (word, number) => {
    expect(typeof word).toBe('string');
    expect(typeof number).toBe('number');
  });
  it.each([{ name: 'alpha', size: 1 }])('formats $name and $size', (row) => {
    expect(row).toEqual({ name: 'alpha', size: 1 });
  });
});
