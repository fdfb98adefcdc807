/** allocationOrigin: where an IP came from, by the same rules that chose the pool. */
import { describe, expect, it } from 'vitest';
import { allocationOrigin } from '../../../src/core/ipam.js';
import { parseEip, parseService } from '../../../src/core/objects.js';
import type { Allocation } from '../../../src/core/types.js';
import { eip, service } from '../../helpers/fixtures.js';

const pools = [
  parseEip(eip({ name: 'dflt', address: '192.0.2.0/28', isDefault: true })),
  parseEip(eip({ name: 'named', address: '198.51.100.0/28' })),
  parseEip(eip({ name: 'team', address: '203.0.113.0/28', namespaces: ['team'] })),
  parseEip(eip({ name: 'off', address: '203.0.113.64/28', disable: true })),
];
const alloc = (ip: string, pool: string, ...services: string[]): Allocation => ({ ip, pool, services });

describe('allocationOrigin', () => {
  const cases: { name: string; svc: Parameters<typeof service>[0]; allocation: Allocation; want: ReturnType<typeof allocationOrigin> }[] = [
    { name: 'the default pool', svc: { name: 'a' }, allocation: alloc('192.0.2.0', 'dflt', 'default/a'), want: { requested: false, by: 'defaultPool', sharedWith: [] } },
    { name: 'a pool named by annotation', svc: { name: 'a', pool: 'named' }, allocation: alloc('198.51.100.0', 'named', 'default/a'), want: { requested: false, by: 'poolAnnotation', sharedWith: [] } },
    { name: 'the pool of a requested IP, shared', svc: { name: 'a', requestedIp: '198.51.100.5' }, allocation: alloc('198.51.100.5', 'named', 'default/a', 'default/b'), want: { requested: true, by: 'poolOfRequestedIp', sharedWith: ['default/b'] } },
    { name: 'spec.loadBalancerIP counts as requested', svc: { name: 'a', loadBalancerIP: '192.0.2.9' }, allocation: alloc('192.0.2.9', 'dflt', 'default/a'), want: { requested: true, by: 'poolOfRequestedIp', sharedWith: [] } },
    { name: 'a namespace-bound pool', svc: { name: 'a', namespace: 'team' }, allocation: alloc('203.0.113.0', 'team', 'team/a'), want: { requested: false, by: 'namespacePool', sharedWith: [] } },
    { name: 'a pool disabled since, kept while it fits', svc: { name: 'a', pool: 'off' }, allocation: alloc('203.0.113.64', 'off', 'default/a'), want: { requested: false, by: 'keptWhileItFits', sharedWith: [] } },
  ];
  for (const c of cases) {
    it(`says ${c.want.by} for ${c.name}`, () => {
      expect(allocationOrigin(parseService(service(c.svc)), c.allocation, pools)).toEqual(c.want);
    });
  }
});
