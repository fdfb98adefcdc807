import { expect } from 'vitest';

import { RacklbError } from '../../../src/errors.js';

/** Runs `fn`, expects a RACKLB_INVALID_FIELD error naming `field`, and returns it for more checks. */
export function expectInvalidField(fn: () => unknown, field: string, rule?: string | RegExp): RacklbError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected an error naming ${field}`).toBeInstanceOf(RacklbError);
  const err = caught as RacklbError;
  expect(err.code).toBe('RACKLB_INVALID_FIELD');
  expect(err.field).toBe(field);
  expect(err.message.startsWith(`${field}: `)).toBe(true);
  if (rule !== undefined) {
    if (typeof rule === 'string') expect(err.rule).toContain(rule);
    else expect(err.rule).toMatch(rule);
  }
  return err;
}

/**
 * Deep copy with a change at a path: dotted, or a list of segments when a key has dots (label keys).
 * Numeric segments index arrays; `undefined` deletes the entry.
 */
export function withPath<T>(obj: T, path: string | string[], value: unknown): T {
  const copy = structuredClone(obj) as unknown;
  const parts = typeof path === 'string' ? path.split('.') : path;
  let cur = copy as Record<string, unknown>;
  for (const p of parts.slice(0, -1)) {
    if (typeof cur[p] !== 'object' || cur[p] === null) cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  const last = parts[parts.length - 1] ?? '';
  if (value === undefined) delete cur[last];
  else cur[last] = value;
  return copy as T;
}
