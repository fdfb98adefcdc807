import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { matchesSelector, parseLabelSelector } from '../../../src/core/selector.js';
import type { LabelSelector } from '../../../src/core/types.js';
import { expectInvalidField } from './assert.js';

const F = 'spec.nodeSelector';

describe('parseLabelSelector', () => {
  it.each<{ name: string; raw: unknown; want: LabelSelector | undefined }>([
    { name: 'undefined is no selector', raw: undefined, want: undefined },
    { name: 'null is no selector', raw: null, want: undefined },
    { name: 'empty object is an empty selector', raw: {}, want: { matchLabels: {}, matchExpressions: [] } },
    {
      name: 'matchLabels',
      raw: { matchLabels: { 'porter.kubesphere.io/rack': 'leaf1' } },
      want: { matchLabels: { 'porter.kubesphere.io/rack': 'leaf1' }, matchExpressions: [] },
    },
    {
      name: 'matchExpressions with null values for Exists',
      raw: { matchExpressions: [{ key: 'a', operator: 'Exists', values: null }] },
      want: { matchLabels: {}, matchExpressions: [{ key: 'a', operator: 'Exists', values: [] }] },
    },
    {
      name: 'In with values',
      raw: { matchLabels: null, matchExpressions: [{ key: 'rack', operator: 'In', values: ['leaf1', 'leaf2'] }] },
      want: { matchLabels: {}, matchExpressions: [{ key: 'rack', operator: 'In', values: ['leaf1', 'leaf2'] }] },
    },
    { name: 'label key constructor is a valid key', raw: { matchLabels: { constructor: 'x' } }, want: { matchLabels: { constructor: 'x' }, matchExpressions: [] } },
  ])('$name', ({ raw, want }) => {
    expect(parseLabelSelector(raw, F)).toEqual(want);
  });

  it.each([
    { name: 'not an object', raw: 'rack=leaf1', field: F, rule: 'must be an object' },
    { name: 'an array', raw: [], field: F, rule: 'must be an object' },
    { name: 'matchLabels not an object', raw: { matchLabels: [] }, field: `${F}.matchLabels`, rule: 'must be an object' },
    { name: 'matchLabels bad key', raw: { matchLabels: { '-bad': 'x' } }, field: `${F}.matchLabels["-bad"]`, rule: 'must be a label key' },
    { name: 'matchLabels __proto__ key', raw: JSON.parse('{"matchLabels":{"__proto__":"x"}}'), field: `${F}.matchLabels["__proto__"]`, rule: 'must be a label key' },
    { name: 'matchLabels value not a string', raw: { matchLabels: { a: 1 } }, field: `${F}.matchLabels["a"]`, rule: 'must be a label value' },
    { name: 'matchLabels value too long', raw: { matchLabels: { a: 'x'.repeat(64) } }, field: `${F}.matchLabels["a"]`, rule: 'must be a label value' },
    { name: 'matchExpressions not a list', raw: { matchExpressions: {} }, field: `${F}.matchExpressions`, rule: 'must be a list' },
    { name: 'expression not an object', raw: { matchExpressions: ['a'] }, field: `${F}.matchExpressions[0]`, rule: 'must be an object' },
    { name: 'bad operator', raw: { matchExpressions: [{ key: 'a', operator: 'Gt', values: ['1'] }] }, field: `${F}.matchExpressions[0].operator`, rule: 'must be one of In, NotIn, Exists, DoesNotExist' },
    { name: 'missing key', raw: { matchExpressions: [{ operator: 'Exists' }] }, field: `${F}.matchExpressions[0].key`, rule: 'must be a label key' },
    { name: 'In without values', raw: { matchExpressions: [{ key: 'a', operator: 'In', values: [] }] }, field: `${F}.matchExpressions[0].values`, rule: 'must be non-empty when operator is In' },
    { name: 'NotIn without values', raw: { matchExpressions: [{ key: 'a', operator: 'NotIn' }] }, field: `${F}.matchExpressions[0].values`, rule: 'must be non-empty when operator is NotIn' },
    { name: 'Exists with values', raw: { matchExpressions: [{ key: 'a', operator: 'Exists', values: ['x'] }] }, field: `${F}.matchExpressions[0].values`, rule: 'must be empty when operator is Exists' },
    { name: 'DoesNotExist with values', raw: { matchExpressions: [{ key: 'a', operator: 'DoesNotExist', values: ['x'] }] }, field: `${F}.matchExpressions[0].values`, rule: 'must be empty when operator is DoesNotExist' },
    { name: 'bad value in values', raw: { matchExpressions: [{ key: 'a', operator: 'In', values: ['ok', 'not ok'] }] }, field: `${F}.matchExpressions[0].values[1]`, rule: 'must be a label value' },
  ])('rejects $name', ({ raw, field, rule }) => {
    expectInvalidField(() => parseLabelSelector(raw, F), field, rule);
  });
});

describe('matchesSelector', () => {
  const sel = (s: Partial<LabelSelector>): LabelSelector => ({ matchLabels: {}, matchExpressions: [], ...s });
  const labels = { rack: 'leaf1', role: 'speaker' };
  it.each([
    { name: 'undefined matches everything', s: undefined, want: true },
    { name: 'empty matches everything', s: sel({}), want: true },
    { name: 'matchLabels hit', s: sel({ matchLabels: { rack: 'leaf1' } }), want: true },
    { name: 'matchLabels miss', s: sel({ matchLabels: { rack: 'leaf2' } }), want: false },
    { name: 'matchLabels all must hold', s: sel({ matchLabels: { rack: 'leaf1', role: 'x' } }), want: false },
    { name: 'matchLabels absent key', s: sel({ matchLabels: { zone: 'a' } }), want: false },
    { name: 'In hit', s: sel({ matchExpressions: [{ key: 'rack', operator: 'In', values: ['leaf2', 'leaf1'] }] }), want: true },
    { name: 'In absent key', s: sel({ matchExpressions: [{ key: 'zone', operator: 'In', values: ['a'] }] }), want: false },
    { name: 'NotIn hit', s: sel({ matchExpressions: [{ key: 'rack', operator: 'NotIn', values: ['leaf1'] }] }), want: false },
    { name: 'NotIn absent key matches', s: sel({ matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['a'] }] }), want: true },
    { name: 'Exists', s: sel({ matchExpressions: [{ key: 'role', operator: 'Exists', values: [] }] }), want: true },
    { name: 'Exists absent', s: sel({ matchExpressions: [{ key: 'zone', operator: 'Exists', values: [] }] }), want: false },
    { name: 'DoesNotExist', s: sel({ matchExpressions: [{ key: 'zone', operator: 'DoesNotExist', values: [] }] }), want: true },
    { name: 'DoesNotExist present', s: sel({ matchExpressions: [{ key: 'rack', operator: 'DoesNotExist', values: [] }] }), want: false },
    { name: 'prototype key is not a label', s: sel({ matchExpressions: [{ key: 'constructor', operator: 'Exists', values: [] }] }), want: false },
    { name: 'prototype key in matchLabels', s: sel({ matchLabels: { toString: 'x' } }), want: false },
    { name: 'prototype key DoesNotExist', s: sel({ matchExpressions: [{ key: 'hasOwnProperty', operator: 'DoesNotExist', values: [] }] }), want: true },
  ])('$name', ({ s, want }) => {
    expect(matchesSelector(s, labels)).toBe(want);
  });

  it('a matchLabels selector matches exactly the label sets that contain it', () => {
    const kv = fc.dictionary(fc.constantFrom('a', 'b', 'c'), fc.constantFrom('x', 'y'));
    fc.assert(
      fc.property(kv, kv, (want, have) => {
        const expected = Object.entries(want).every(([k, v]) => have[k] === v);
        expect(matchesSelector(sel({ matchLabels: want }), have)).toBe(expected);
      }),
    );
  });
});
