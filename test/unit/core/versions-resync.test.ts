/** decideWrite for a resync: it re-derives only the exact version it read. */
import { describe, expect, it } from 'vitest';
import { decideWrite } from '../../../src/core/versions.js';

describe('decideWrite with resync', () => {
  const cases: { name: string; stored: Parameters<typeof decideWrite>[0]; apply: boolean }[] = [
    { name: 'the version the resync read', stored: { uid: 'u1', resourceVersion: '7', deleted: false }, apply: true },
    { name: 'a newer version stored meanwhile', stored: { uid: 'u1', resourceVersion: '8', deleted: false }, apply: false },
    { name: 'deleted meanwhile', stored: { uid: 'u1', resourceVersion: '8', deleted: true }, apply: false },
    { name: 'recreated with another uid', stored: { uid: 'u2', resourceVersion: '7', deleted: false }, apply: false },
    { name: 'gone from the store', stored: undefined, apply: false },
  ];
  for (const c of cases) {
    it(`${c.apply ? 'applies' : 'skips'} when the store holds ${c.name}`, () => {
      const d = decideWrite(c.stored, { uid: 'u1', resourceVersion: '7', deleting: false, resync: true });
      expect(d.apply).toBe(c.apply);
      if (!d.apply) expect(d.reason).toContain('resync');
    });
  }

  it('treats the same version as stale without resync, as before', () => {
    expect(decideWrite({ uid: 'u1', resourceVersion: '7', deleted: false }, { uid: 'u1', resourceVersion: '7', deleting: false }).apply).toBe(false);
  });
});

/** decideWrite for an event racklb reads into another record than the stored one (an upgrade's parser). */
describe('decideWrite with readDifferently', () => {
  const stored = { uid: 'u1', resourceVersion: '7', deleted: false };
  it.each([
    { name: 'the stored version, read differently: applies', stored, incoming: { resourceVersion: '7', readDifferently: true }, apply: true },
    { name: 'the stored version, read the same: stale', stored, incoming: { resourceVersion: '7', readDifferently: false }, apply: false },
    { name: 'an older version, read differently: stale', stored, incoming: { resourceVersion: '6', readDifferently: true }, apply: false },
    { name: 'the version of a tombstone, read differently: stays deleted', stored: { ...stored, deleted: true }, incoming: { resourceVersion: '7', readDifferently: true }, apply: false },
    { name: 'the stored version under another uid: stale', stored: { ...stored, uid: 'u0' }, incoming: { resourceVersion: '7', readDifferently: true }, apply: false },
  ])('$name', ({ stored: s, incoming, apply }) => {
    expect(decideWrite(s, { uid: 'u1', deleting: false, resourceVersion: incoming.resourceVersion, readDifferently: () => incoming.readDifferently }).apply).toBe(apply);
  });
});
