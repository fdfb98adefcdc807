/**
 * PathTable indexes paths by prefix so the speaker can plan only the prefixes of the Service IPs
 * that changed. Planning those prefixes must give exactly the part of the full plan that concerns them.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { GobgpPath } from '../../../src/gobgp/client.js';
import { PathTable, pathKey, planPaths } from '../../../speaker/plan.js';

const arbPath = fc.record({
  prefix: fc.constantFrom('198.51.100.1/32', '198.51.100.2/32', '198.51.100.3/32', '2001:db8::1/128'),
  family: fc.constant('ipv4' as const),
  nextHop: fc.constantFrom('192.0.2.10', '192.0.2.11', '192.0.2.12'),
  identifier: fc.integer({ min: 1, max: 4 }),
});
const arbOps = fc.array(fc.record({ del: fc.boolean(), path: arbPath }), { maxLength: 40 });

function apply(ops: { del: boolean; path: GobgpPath }[]): { table: PathTable; plain: Map<string, GobgpPath> } {
  const table = new PathTable();
  const plain = new Map<string, GobgpPath>();
  for (const { del, path } of ops) {
    if (del) {
      expect(table.delete(pathKey(path))).toBe(plain.delete(pathKey(path)));
    } else {
      table.set(pathKey(path), path);
      plain.set(pathKey(path), path);
    }
  }
  return { table, plain };
}

const only = (m: ReadonlyMap<string, GobgpPath>, prefixes: string[]): Map<string, GobgpPath> => new Map([...m].filter(([, p]) => prefixes.includes(p.prefix)));
const sortPlan = (ps: GobgpPath[]): string[] => ps.map((p) => `${pathKey(p)}>${p.nextHop}`).sort();

describe('PathTable', () => {
  it('holds what a Map holds, and ofPrefixes is that Map filtered by prefix', () => {
    fc.assert(
      fc.property(arbOps, fc.subarray(['198.51.100.1/32', '198.51.100.2/32', '2001:db8::1/128']), (ops, prefixes) => {
        const { table, plain } = apply(ops);
        expect(new Map(table)).toEqual(plain);
        expect(table.ofPrefixes(prefixes)).toEqual(only(plain, prefixes));
        table.clear();
        expect(table.ofPrefixes(prefixes).size).toBe(0);
      }),
      { numRuns: 500 },
    );
  });

  it('planning some prefixes gives the part of the full plan about them', () => {
    fc.assert(
      fc.property(arbOps, arbOps, fc.subarray(['198.51.100.1/32', '198.51.100.2/32', '198.51.100.3/32']), (d, a, prefixes) => {
        const desired = apply(d).table;
        const advertised = apply(a).table;
        const part = planPaths(desired.ofPrefixes(prefixes), advertised.ofPrefixes(prefixes));
        const full = planPaths(desired, advertised);
        expect(sortPlan(part.add)).toEqual(sortPlan(full.add.filter((p) => prefixes.includes(p.prefix))));
        expect(sortPlan(part.withdraw)).toEqual(sortPlan(full.withdraw.filter((p) => prefixes.includes(p.prefix))));
      }),
      { numRuns: 500 },
    );
  });
});
