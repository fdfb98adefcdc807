/**
 * addressesConsulted tells the on-service handler which allocations `allocate` reads, so that it
 * can fetch those instead of the whole table. Held to one rule: with only the allocations at the
 * consulted addresses, `allocate` gives exactly the answer it gives with all of them.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { addressesConsulted, allocate, lowestFreeAt } from '../../../src/core/ipam.js';
import { formatIp, ipKey, parseIp } from '../../../src/core/ip.js';
import { parseEip, parseService } from '../../../src/core/objects.js';
import type { Allocation, EipRecord } from '../../../src/core/types.js';
import { eip, service } from '../../helpers/fixtures.js';

const pools = [
  parseEip(eip({ name: 'd', address: '192.0.2.0/29', isDefault: true })),
  parseEip(eip({ name: 'n', address: '198.51.100.0/30', namespaces: ['team'] })),
  parseEip(eip({ name: 'x', address: '203.0.113.0/30' })),
  parseEip(eip({ name: 'off', address: '203.0.113.8/30', disable: true })),
  parseEip(eip({ name: 'v6', address: '2001:db8::/126' })),
];
const ips = ['192.0.2.0', '192.0.2.1', '192.0.2.2', '198.51.100.1', '203.0.113.2', '203.0.113.9', '2001:db8::1', '192.0.2.200'];
const names = ['a', 'b', 'c', 'd'];

/** What an index of held addresses answers: the offset of the first address of the pool no other Service holds. */
function firstFreeOffset(pool: EipRecord, held: Set<string | undefined>): bigint | undefined {
  const first = parseIp(pool.firstIp)!;
  const last = parseIp(pool.lastIp)!;
  for (let off = 0n; first.value + off <= last.value; off++) if (!held.has(ipKey(formatIp(first.family, first.value + off)))) return off;
  return undefined;
}

describe('addressesConsulted', () => {
  it('names every allocation allocate reads, unless it says all', () => {
    const arbAllocation = fc.record({
      ip: fc.constantFrom(...ips),
      pool: fc.constantFrom('d', 'n', 'x', 'off', 'v6', 'gone'),
      services: fc.uniqueArray(fc.constantFrom(...names.map((n) => `default/${n}`), 'team/a'), { maxLength: 3 }),
    });
    const arbService = fc.record({
      name: fc.constantFrom(...names),
      namespace: fc.constantFrom('default', 'team'),
      // Half without a request and half without a current allocation, so that the status is often what decides.
      requestedIp: fc.option(fc.constantFrom(...ips), { nil: undefined, freq: 1 }),
      pool: fc.option(fc.constantFrom('d', 'n', 'x', 'off', 'v6', 'gone'), { nil: undefined }),
      managed: fc.boolean(),
      ipFamilies: fc.constantFrom<string[]>(['IPv4'], ['IPv6'], []),
      // What the status shows: taken back first when the Service has no allocation.
      ingress: fc.option(fc.uniqueArray(fc.constantFrom(...ips), { maxLength: 3 }), { nil: undefined }),
    });
    fc.assert(
      fc.property(fc.array(arbAllocation, { maxLength: 8 }), arbService, fc.option(arbAllocation, { nil: undefined, freq: 1 }), (allocations: Allocation[], o, current) => {
        const s = parseService(service(o));
        const consulted = addressesConsulted(s, pools, current);
        const want = allocate(s, pools, allocations, current);
        if (Array.isArray(consulted)) {
          const keys = new Set(consulted.map(ipKey));
          const subset = allocations.filter((a) => keys.has(ipKey(a.ip)));
          expect(allocate(s, pools, subset, current)).toEqual(want);
        } else {
          // The lowest free address from an index of held addresses; only the consulted allocations handed over.
          const held = new Set(allocations.filter((a) => a.services.some((x) => x !== s.key)).map((a) => ipKey(a.ip)));
          const asked: string[] = [];
          const lowest = (pool: EipRecord): { ip: string | undefined; scanned: number } => {
            asked.push(pool.name);
            return lowestFreeAt(pool, firstFreeOffset(pool, held));
          };
          const keys = new Set(consulted.addresses.map(ipKey));
          const subset = allocations.filter((a) => keys.has(ipKey(a.ip)));
          expect(allocate(s, pools, subset, current, lowest)).toEqual(want);
          for (const name of asked) expect(consulted.lowestFreeIn.map((p) => p.name)).toContain(name);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it.each([
    { name: 'a Service that keeps its address', o: { name: 'a' }, current: { ip: '192.0.2.3', pool: 'd', services: ['default/a'] }, want: ['192.0.2.3'] },
    { name: 'a Service that requests an address', o: { name: 'a', requestedIp: '192.0.2.5' }, current: undefined, want: ['192.0.2.5'] },
    { name: 'a new Service from the default pool', o: { name: 'a' }, current: undefined, want: { addresses: [], lowestFreeIn: [pools[0]] } },
    {
      name: 'a Service whose status shows addresses: those in its pools, then the search',
      o: { name: 'a', ingress: ['203.0.113.2', '192.0.2.5', '2001:db8::1', '192.0.2.1'] },
      current: undefined,
      want: { addresses: ['192.0.2.5', '192.0.2.1'], lowestFreeIn: [pools[0]] },
    },
    { name: 'a Service that keeps its address reads nothing of its status', o: { name: 'a', ingress: ['192.0.2.5'] }, current: { ip: '192.0.2.3', pool: 'd', services: ['default/a'] }, want: ['192.0.2.3'] },
    { name: 'a Service racklb does not manage', o: { name: 'a', managed: false }, current: undefined, want: [] },
  ])('$name', ({ o, current, want }) => {
    expect(addressesConsulted(parseService(service(o)), pools, current)).toEqual(want);
  });
});
