// SPDX-License-Identifier: MIT
// The part of vitest's API that the suites run under Deno use (describe/it/hooks/expect), on top
// of Deno.test and node:assert, so the same test sources run in both runtimes. deno.json maps
// the "vitest" import here. Each test file becomes one Deno.test (see loadTestFile); its describe
// blocks and tests become nested steps, so hooks keep vitest's scoping and order.

import { AssertionError } from 'node:assert/strict';
import { inspect } from 'node:util';

/** vitest's default test and hook timeout in this project (vitest.config.ts). */
const DEFAULT_TIMEOUT_MS = 60_000;

type Body = () => unknown | Promise<unknown>;

interface Hook {
  readonly fn: Body;
  readonly timeoutMs: number;
}

interface TestCase {
  readonly kind: 'test';
  readonly name: string;
  readonly fn: Body;
  readonly timeoutMs: number;
}

interface Suite {
  readonly kind: 'suite';
  readonly name: string;
  /** Skipped suites are registered as ignored steps and never run. */
  readonly skip: boolean;
  readonly children: Array<Suite | TestCase>;
  readonly beforeAll: Hook[];
  readonly afterAll: Hook[];
  readonly beforeEach: Hook[];
  readonly afterEach: Hook[];
}

/** The step context of Deno.test (declared here: the suites are type-checked without relying on it). */
interface StepContext {
  step(definition: { name: string; ignore?: boolean; fn: (t: StepContext) => Promise<void> }): Promise<boolean>;
}

interface DenoTestApi {
  test(definition: { name: string; fn: (t: StepContext) => Promise<void> }): void;
}

const newSuite = (name: string, skip = false): Suite => ({
  kind: 'suite', name, skip, children: [], beforeAll: [], afterAll: [], beforeEach: [], afterEach: [],
});

/** The suite that describe/it/hooks add to; a file's root while loadTestFile imports it. */
let current: Suite | undefined;

/** How many tests each loaded file declared (skipped suites included), by file label. */
export const declaredTests = new Map<string, number>();

function container(what: string): Suite {
  if (current === undefined) throw new Error(`vitest shim: ${what} outside a file loaded with loadTestFile`);
  return current;
}

/** Runs `fn` and fails once `timeoutMs` passed (the timer is cleared either way). */
async function withTimeout(what: string, fn: Body, timeoutMs: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([Promise.resolve().then(fn), expired]);
  } finally {
    clearTimeout(timer);
  }
}

function countTests(suite: Suite): number {
  let count = 0;
  for (const child of suite.children) count += child.kind === 'test' ? 1 : countTests(child);
  return count;
}

/**
 * Runs `suite`'s children as steps of `t` in vitest's default hook order ("stack"): beforeAll
 * hooks first, afterAll hooks last and in reverse (also after a failure, a failed beforeAll
 * included); around each test the beforeEach hooks of `eachBefore` (outermost block first, each
 * block's in order) and the afterEach hooks of `eachAfter` (innermost block first, each block's
 * in reverse).
 */
async function runSuite(suite: Suite, t: StepContext, eachBefore: Hook[][], eachAfter: Hook[][]): Promise<void> {
  const before = [...eachBefore, suite.beforeEach];
  const after = [[...suite.afterEach].reverse(), ...eachAfter];
  try {
    for (const hook of suite.beforeAll) await withTimeout(`beforeAll of "${suite.name}"`, hook.fn, hook.timeoutMs);
    for (const child of suite.children) {
      if (child.kind === 'suite') {
        await t.step({ name: child.name, ignore: child.skip, fn: (inner) => runSuite(child, inner, before, after) });
        continue;
      }
      await t.step({
        name: child.name,
        fn: async () => {
          try {
            for (const hooks of before) for (const hook of hooks) await withTimeout(`beforeEach of "${child.name}"`, hook.fn, hook.timeoutMs);
            await withTimeout(child.name, child.fn, child.timeoutMs);
          } finally {
            for (const hooks of after) for (const hook of hooks) await withTimeout(`afterEach of "${child.name}"`, hook.fn, hook.timeoutMs);
          }
        },
      });
    }
  } finally {
    for (const hook of [...suite.afterAll].reverse()) await withTimeout(`afterAll of "${suite.name}"`, hook.fn, hook.timeoutMs);
  }
}

/**
 * Imports the vitest test file `specifier` (resolved by `importer`, so relative specifiers resolve
 * against the caller) and registers it as one Deno.test named `label`, its describe blocks and
 * tests as nested steps. Returns the number of tests it declared.
 */
export async function loadTestFile(label: string, importer: () => Promise<unknown>): Promise<number> {
  const root = newSuite(label);
  current = root;
  try {
    await importer();
  } finally {
    current = undefined;
  }
  const count = countTests(root);
  if (count === 0) throw new Error(`vitest shim: ${label} declared no tests`);
  declaredTests.set(label, count);
  const deno = (globalThis as unknown as { Deno: DenoTestApi }).Deno;
  deno.test({ name: label, fn: (t) => runSuite(root, t, [], []) });
  return count;
}

function declareSuite(name: string, body: () => void, skip: boolean): void {
  const parent = container('describe');
  const suite = newSuite(name, skip);
  parent.children.push(suite);
  current = suite;
  try {
    const result: unknown = body();
    if (result instanceof Promise) throw new Error(`vitest shim: describe("${name}") body must be synchronous`);
  } finally {
    current = parent;
  }
}

/** vitest's describe (and describe.skip): a block of tests sharing hooks. */
export const describe = Object.assign((name: string, body: () => void) => declareSuite(name, body, false), {
  skip: (name: string, body: () => void) => declareSuite(name, body, true),
});

function declareTest(name: string, fn: Body, timeoutMs?: number): void {
  container('it').children.push({ kind: 'test', name, fn, timeoutMs: timeoutMs ?? DEFAULT_TIMEOUT_MS });
}

/** Formats a test name of it.each the way vitest does for the forms the suites use: $key and %s/%d/%i/%j/%o. */
function eachName(template: string, row: unknown, args: unknown[]): string {
  let name = template;
  if (row !== null && typeof row === 'object' && !Array.isArray(row)) {
    name = name.replace(/\$([A-Za-z_][\w.]*)/g, (whole, path: string) => {
      let value: unknown = row;
      for (const key of path.split('.')) value = (value as Record<string, unknown> | undefined)?.[key];
      return value === undefined && !(path.split('.')[0]! in (row as object)) ? whole : format(value);
    });
  }
  let next = 0;
  return name.replace(/%[sdijo%]/g, (token) => {
    if (token === '%%') return '%';
    if (next >= args.length) return token;
    const value = args[next++];
    if (token === '%d' || token === '%i') return String(token === '%i' ? Math.trunc(Number(value)) : Number(value));
    if (token === '%j') return JSON.stringify(value);
    return typeof value === 'string' ? value : format(value);
  });
}

/** vitest's it (and it.each over rows: an array row spreads into the arguments, any other row is one argument). */
export const it = Object.assign((name: string, fn: Body, timeoutMs?: number) => declareTest(name, fn, timeoutMs), {
  each: <Row>(rows: readonly Row[]) =>
    (template: string, fn: (...args: any[]) => unknown, timeoutMs?: number) => {
      for (const row of rows) {
        const args = Array.isArray(row) ? [...row] : [row];
        declareTest(eachName(template, row, args), () => fn(...args), timeoutMs);
      }
    },
});

/** vitest's beforeAll: runs once before the block's first test (or the file's, at top level). */
export function beforeAll(fn: Body, timeoutMs = DEFAULT_TIMEOUT_MS): void {
  container('beforeAll').beforeAll.push({ fn, timeoutMs });
}
/** vitest's afterAll: runs once after the block's last test, also after failures. */
export function afterAll(fn: Body, timeoutMs = DEFAULT_TIMEOUT_MS): void {
  container('afterAll').afterAll.push({ fn, timeoutMs });
}
/** vitest's beforeEach: runs before every test of the block and its nested blocks, outer hooks first. */
export function beforeEach(fn: Body, timeoutMs = DEFAULT_TIMEOUT_MS): void {
  container('beforeEach').beforeEach.push({ fn, timeoutMs });
}
/** vitest's afterEach: runs after every test of the block and its nested blocks, inner hooks first. */
export function afterEach(fn: Body, timeoutMs = DEFAULT_TIMEOUT_MS): void {
  container('afterEach').afterEach.push({ fn, timeoutMs });
}

// ---------------------------------------------------------------------------------------------
// expect
// ---------------------------------------------------------------------------------------------

/** An asymmetric matcher (expect.objectContaining). */
class ObjectContaining {
  constructor(readonly sample: Record<PropertyKey, unknown>) {}
  asymmetricMatch(actual: unknown): boolean {
    if (actual === null || actual === undefined) return false;
    return Reflect.ownKeys(this.sample).every((key) =>
      key in Object(actual) && equals((actual as Record<PropertyKey, unknown>)[key], this.sample[key]));
  }
  toString(): string {
    return `ObjectContaining ${format(this.sample)}`;
  }
}

function format(value: unknown): string {
  if (value instanceof ObjectContaining) return value.toString();
  return inspect(value, { depth: 4, maxArrayLength: 20, breakLength: Infinity });
}

const isObjectLike = (value: unknown): value is object => value !== null && typeof value === 'object';

/** Own enumerable keys (symbols included) whose value is not undefined: what toEqual compares. */
function definedKeys(value: object): PropertyKey[] {
  return Reflect.ownKeys(value).filter((key) =>
    Object.prototype.propertyIsEnumerable.call(value, key) && (value as Record<PropertyKey, unknown>)[key] !== undefined);
}

/**
 * vitest's toEqual equality: Object.is on primitives, asymmetric matchers, recursive on arrays,
 * typed arrays, Maps, Sets, Dates, RegExps and plain or class objects; properties holding
 * undefined count as absent, and the prototypes of plain objects are not compared.
 */
function equals(actual: unknown, expected: unknown, seen: Array<[unknown, unknown]> = []): boolean {
  if (expected instanceof ObjectContaining) return expected.asymmetricMatch(actual);
  if (actual instanceof ObjectContaining) return actual.asymmetricMatch(expected);
  if (Object.is(actual, expected)) return true;
  if (!isObjectLike(actual) || !isObjectLike(expected)) return false;
  if (Object.prototype.toString.call(actual) !== Object.prototype.toString.call(expected)) return false;
  if (seen.some(([a, b]) => a === actual && b === expected)) return true;
  const inner = [...seen, [actual, expected] as [unknown, unknown]];
  if (actual instanceof Date) return Object.is(actual.getTime(), (expected as Date).getTime());
  if (actual instanceof RegExp) return String(actual) === String(expected);
  if (actual instanceof Error && expected instanceof Error && actual.message !== expected.message) return false;
  if (ArrayBuffer.isView(actual) && !(actual instanceof DataView)) {
    const a = actual as unknown as ArrayLike<unknown>;
    const b = expected as unknown as ArrayLike<unknown>;
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
    return true;
  }
  if (actual instanceof Map) {
    const b = expected as Map<unknown, unknown>;
    if (actual.size !== b.size) return false;
    for (const [key, value] of actual) {
      if (b.has(key)) {
        if (!equals(value, b.get(key), inner)) return false;
      } else if (![...b].some(([k, v]) => equals(key, k, inner) && equals(value, v, inner))) return false;
    }
    return true;
  }
  if (actual instanceof Set) {
    const b = expected as Set<unknown>;
    if (actual.size !== b.size) return false;
    for (const value of actual) if (!b.has(value) && ![...b].some((v) => equals(value, v, inner))) return false;
    return true;
  }
  if (Array.isArray(actual)) {
    const b = expected as unknown[];
    if (actual.length !== b.length) return false;
    for (let i = 0; i < actual.length; i++) if (!equals(actual[i], b[i], inner)) return false;
  }
  const keysA = definedKeys(actual);
  const keysB = definedKeys(expected);
  if (keysA.length !== keysB.length) return false;
  return keysB.every((key) =>
    Object.prototype.hasOwnProperty.call(actual, key) &&
    equals((actual as Record<PropertyKey, unknown>)[key], (expected as Record<PropertyKey, unknown>)[key], inner));
}

/**
 * vitest's toMatchObject: every property of `expected` is in `actual` and matches (objects
 * recursively as subsets, arrays element by element with the same length, anything else with
 * toEqual's equality).
 */
function matchesObject(actual: unknown, expected: unknown): boolean {
  if (expected instanceof ObjectContaining) return expected.asymmetricMatch(actual);
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && actual.length === expected.length && expected.every((e, i) => matchesObject(actual[i], e));
  }
  if (isObjectLike(expected) && Object.getPrototypeOf(expected) === Object.prototype) {
    if (!isObjectLike(actual)) return false;
    return Reflect.ownKeys(expected).every((key) =>
      key in actual && matchesObject((actual as Record<PropertyKey, unknown>)[key], (expected as Record<PropertyKey, unknown>)[key]));
  }
  return equals(actual, expected);
}

function compareNumbers(actual: unknown, expected: unknown, what: string): [number | bigint, number | bigint] {
  const ok = (v: unknown) => typeof v === 'number' || typeof v === 'bigint';
  if (!ok(actual) || !ok(expected)) throw new TypeError(`${what}: expected numbers or bigints, got ${format(actual)} and ${format(expected)}`);
  return [actual as number | bigint, expected as number | bigint];
}

/** What a function threw, or a marker that it did not throw. */
function thrownBy(fn: unknown): { threw: boolean; error?: unknown } {
  if (typeof fn !== 'function') throw new TypeError(`toThrow: expected a function, got ${format(fn)}`);
  try {
    fn();
  } catch (error) {
    return { threw: true, error };
  }
  return { threw: false };
}

/** Whether `error` satisfies toThrow's argument: a RegExp or substring of the message, a class, a matcher or an error-like message. */
function throwMatches(error: unknown, expected: unknown): boolean {
  const message = error instanceof Error ? error.message : String(error);
  if (expected === undefined) return true;
  if (expected instanceof RegExp) return expected.test(message);
  if (typeof expected === 'string') return message.includes(expected);
  if (typeof expected === 'function') return error instanceof expected;
  if (expected instanceof ObjectContaining) return expected.asymmetricMatch(error);
  if (isObjectLike(expected) && 'message' in expected) return message === (expected as { message: unknown }).message;
  throw new TypeError(`toThrow: unsupported expectation ${format(expected)}`);
}

type Check = (actual: unknown, ...args: any[]) => { pass: boolean; message: () => string };

/** The matchers the suites use; `message` describes the non-negated expectation. */
const MATCHERS: Record<string, Check> = {
  toBe: (a, e) => ({ pass: Object.is(a, e), message: () => `expected ${format(a)} to be ${format(e)} // Object.is equality` }),
  toEqual: (a, e) => ({ pass: equals(a, e), message: () => `expected ${format(a)} to deeply equal ${format(e)}` }),
  toMatchObject: (a, e) => ({ pass: matchesObject(a, e), message: () => `expected ${format(a)} to match object ${format(e)}` }),
  toBeInstanceOf: (a, e) => ({ pass: a instanceof (e as new () => unknown), message: () => `expected ${format(a)} to be an instance of ${(e as { name?: string }).name}` }),
  toBeUndefined: (a) => ({ pass: a === undefined, message: () => `expected ${format(a)} to be undefined` }),
  toHaveLength: (a, n) => ({
    pass: isObjectLike(a) || typeof a === 'string' ? (a as { length?: unknown }).length === n : false,
    message: () => `expected ${format(a)} to have length ${n} (it has ${format((a as { length?: unknown } | null)?.length)})`,
  }),
  toBeGreaterThan: (a, e) => { const [x, y] = compareNumbers(a, e, 'toBeGreaterThan'); return { pass: x > y, message: () => `expected ${format(x)} to be greater than ${format(y)}` }; },
  toBeGreaterThanOrEqual: (a, e) => { const [x, y] = compareNumbers(a, e, 'toBeGreaterThanOrEqual'); return { pass: x >= y, message: () => `expected ${format(x)} to be greater than or equal to ${format(y)}` }; },
  toBeLessThan: (a, e) => { const [x, y] = compareNumbers(a, e, 'toBeLessThan'); return { pass: x < y, message: () => `expected ${format(x)} to be less than ${format(y)}` }; },
  toBeLessThanOrEqual: (a, e) => { const [x, y] = compareNumbers(a, e, 'toBeLessThanOrEqual'); return { pass: x <= y, message: () => `expected ${format(x)} to be less than or equal to ${format(y)}` }; },
  toMatch: (a, e) => {
    if (typeof a !== 'string') throw new TypeError(`toMatch: expected a string, got ${format(a)}`);
    return { pass: e instanceof RegExp ? e.test(a) : a.includes(String(e)), message: () => `expected ${format(a)} to match ${format(e)}` };
  },
  toContain: (a, e) => {
    let pass: boolean;
    if (typeof a === 'string') pass = typeof e === 'string' && a.includes(e);
    else if (isObjectLike(a) && Symbol.iterator in a) pass = [...(a as Iterable<unknown>)].some((item) => item === e);
    else throw new TypeError(`toContain: expected a string or an iterable, got ${format(a)}`);
    return { pass, message: () => `expected ${format(a)} to contain ${format(e)}` };
  },
  toContainEqual: (a, e) => {
    if (!isObjectLike(a) || !(Symbol.iterator in a)) throw new TypeError(`toContainEqual: expected an iterable, got ${format(a)}`);
    return { pass: [...(a as Iterable<unknown>)].some((item) => equals(item, e)), message: () => `expected ${format(a)} to contain an item equal to ${format(e)}` };
  },
  toThrow: (a, e) => {
    const outcome = thrownBy(a);
    return {
      pass: outcome.threw && throwMatches(outcome.error, e),
      message: () => outcome.threw
        ? `expected the thrown ${format(outcome.error)} to match ${format(e)}`
        : `expected the function to throw${e === undefined ? '' : ` ${format(e)}`}, but it returned`,
    };
  },
};

type Matchers = { [K in keyof typeof MATCHERS]: (...args: any[]) => void };
type AsyncMatchers = { [K in keyof typeof MATCHERS]: (...args: any[]) => Promise<void> };

function fail(message: string, prefix?: string, actual?: unknown, expected?: unknown): never {
  throw new AssertionError({ message: prefix === undefined ? message : `${prefix}: ${message}`, actual, expected, operator: 'expect' });
}

function matchers(actual: unknown, prefix: string | undefined, negated: boolean): Matchers {
  const out: Record<string, (...args: any[]) => void> = {};
  for (const [name, check] of Object.entries(MATCHERS)) {
    out[name] = (...args: unknown[]) => {
      const result = check(actual, ...args);
      if (result.pass === negated) fail(negated ? `not: ${result.message()}` : result.message(), prefix, actual, args[0]);
    };
  }
  return out as Matchers;
}

/** vitest's expect(value, message?) with .not and .rejects for the matchers above. */
export const expect = Object.assign(
  (actual: unknown, message?: string) => {
    const positive = matchers(actual, message, false);
    return Object.assign(positive, {
      not: matchers(actual, message, true),
      get rejects(): AsyncMatchers {
        const out: Record<string, (...args: any[]) => Promise<void>> = {};
        for (const name of Object.keys(MATCHERS)) {
          out[name] = async (...args: unknown[]) => {
            const settled = await Promise.resolve(typeof actual === 'function' ? (actual as () => unknown)() : actual).then(
              (value) => ({ rejected: false as const, value }),
              (reason: unknown) => ({ rejected: true as const, reason }),
            );
            if (!settled.rejected) fail(`promise resolved ${format(settled.value)} instead of rejecting`, message);
            (matchers(settled.reason, message, false) as Record<string, (...a: unknown[]) => void>)[name]!(...args);
          };
        }
        return out as AsyncMatchers;
      },
    });
  },
  {
    /** Fails the test with `message`. */
    fail: (message: string): never => fail(message),
    /** Matches any object having at least `sample`'s properties with equal values. */
    objectContaining: (sample: Record<PropertyKey, unknown>): any => new ObjectContaining(sample),
  },
);
