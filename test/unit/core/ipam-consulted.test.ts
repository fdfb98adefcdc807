/**
 * addressesConsulted tells the on-service handler which allocations `allocate` reads, so that it
 * can fetch those instead of the whole table. Held to one rule: with only the allocations at the
 * consulted addresses, `allocate` gives exactly the answer it gives with all of them.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { addressesConsulted, allocate } from '../../../src/core/ipam.js';
import { ipKey } from '../../../src/core/ip.js';
import { parseEip, parseService } from '../../../src/core/objects.js';
import type { Allocation } from '../../../src/core/types.js';
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
      requestedIp: fc.option(fc.constantFrom(...ips), { nil: undefined }),
      pool: fc.option(fc.constantFrom('d', 'n', 'x', 'off', 'v6', 'gone'), { nil: undefined }),
      managed: fc.boolean(),
      ipFamilies: fc.constantFrom<string[]>(['IPv4'], ['IPv6'], []),
    });
    fc.assert(
      fc.property(fc.array(arbAllocation, { maxLength: 8 }), arbService, fc.option(arbAllocation, { nil: undefined }), (allocations: Allocation[], o, current) => {
        const s = parseService(service(o));
        const consulted = addressesConsulted(s, pools, current);
        if (consulted === 'all') return;
        const keys = new Set(consulted.map(ipKey));
        const subset = allocations.filter((a) => keys.has(ipKey(a.ip)));
        expect(allocate(s, pools, subset, current)).toEqual(allocate(s, pools, allocations, current));
      }),
      { numRuns: 2000 },
    );
  });

  it.each([
    { name: 'a Service that keeps its address', o: { name: 'a' }, current: { ip: '192.0.2.3', pool: 'd', services: ['default/a'] }, want: ['192.0.2.3'] },
    { name: 'a Service that requests an address', o: { name: 'a', requestedIp: '192.0.2.5' }, current: undefined, want: ['192.0.2.5'] },
    { name: 'a new Service from the default pool', o: { name: 'a' }, current: undefined, want: 'all' as const },
    { name: 'a Service racklb does not manage', o: { name: 'a', managed: false }, current: undefined, want: [] },
  ])('$name', ({ o, current, want }) => {
    expect(addressesConsulted(parseService(service(o)), pools, current)).toEqual(want);
  });
});
