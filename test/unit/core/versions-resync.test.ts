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
