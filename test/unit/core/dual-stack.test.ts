/**
 * Dual-stack Services (racklb's extension; OpenELB has none): spec.ipFamilyPolicy, the
 * comma-separated requested-IP and pool lists, and one address per family, each chosen by `allocate`
 * as if the Service were single-stack in that family.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { allocate, allocateFamilies, allocationOrigin, checkPoolOverlap, formatPending, ipInPool, pendingOfFamily } from '../../../src/core/ipam.js';
import { parseIp } from '../../../src/core/ip.js';
import { parseEip, parseService } from '../../../src/core/objects.js';
import type { Allocation, EipRecord, ServiceRecord } from '../../../src/core/types.js';
import { expectInvalidField, withPath } from './assert.js';
import { eip, service, type EipOpts, type ServiceOpts } from '../../helpers/fixtures.js';

const IP_ANN = 'metadata.annotations["eip.porter.kubesphere.io/v1alpha1"]';
const POOL_ANN = 'metadata.annotations["eip.porter.kubesphere.io/v1alpha2"]';
const pool = (o: EipOpts): EipRecord => parseEip(eip(o));
const svc = (o: ServiceOpts): ServiceRecord => parseService(service(o));
const dual = (o: Omit<ServiceOpts, 'name'> & { name?: string }): ServiceRecord => svc({ name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', ...o });
const alloc = (ip: string, poolName: string, ...services: string[]): Allocation => ({ ip, pool: poolName, services });

describe('parseService: ipFamilyPolicy and request lists', () => {
  it.each<{ name: string; o: ServiceOpts; want: Partial<ServiceRecord> }>([
    {
      name: 'PreferDualStack with both families',
      o: { name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack' },
      want: { ipFamilies: ['ipv4', 'ipv6'], requestedIp: undefined, requestedPool: undefined, dualStack: { policy: 'PreferDualStack', requestedIps: {}, requestedPools: [] } },
    },
    { name: 'PreferDualStack with one family is single-stack', o: { name: 's', ipFamilies: ['IPv6'], ipFamilyPolicy: 'PreferDualStack' }, want: { ipFamilies: ['ipv6'], dualStack: undefined } },
    { name: 'RequireDualStack with one family: the other is second', o: { name: 's', ipFamilies: ['IPv6'], ipFamilyPolicy: 'RequireDualStack' }, want: { ipFamilies: ['ipv6', 'ipv4'], dualStack: { policy: 'RequireDualStack', requestedIps: {}, requestedPools: [] } } },
    { name: 'RequireDualStack with no family', o: { name: 's', ipFamilies: [], ipFamilyPolicy: 'RequireDualStack' }, want: { ipFamilies: ['ipv4', 'ipv6'] } },
    {
      name: 'an address per family, canonicalised',
      o: { name: 's', ipFamilies: ['IPv6', 'IPv4'], ipFamilyPolicy: 'RequireDualStack', requestedIp: '2001:DB8:100::0:20,198.51.100.20' },
      want: { requestedIp: undefined, dualStack: { policy: 'RequireDualStack', requestedIps: { ipv4: '198.51.100.20', ipv6: '2001:db8:100::20' }, requestedPools: [] } },
    },
    { name: 'one address: that family requested, the other allocated', o: { name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', requestedIp: '2001:db8:100::20' }, want: { dualStack: { policy: 'PreferDualStack', requestedIps: { ipv6: '2001:db8:100::20' }, requestedPools: [] } } },
    { name: 'spec.loadBalancerIP as a list', o: { name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', loadBalancerIP: '198.51.100.20,2001:db8:100::20' }, want: { dualStack: { policy: 'PreferDualStack', requestedIps: { ipv4: '198.51.100.20', ipv6: '2001:db8:100::20' }, requestedPools: [] } } },
    { name: 'a pool per family, in the order written', o: { name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', pool: 'eip-v6,eip-v4' }, want: { dualStack: { policy: 'PreferDualStack', requestedIps: {}, requestedPools: ['eip-v6', 'eip-v4'] } } },
    { name: 'SingleStack with both families: the first only, as before', o: { name: 's', ipFamilies: ['IPv4', 'IPv6'], requestedIp: '198.51.100.20' }, want: { ipFamilies: ['ipv4', 'ipv6'], requestedIp: '198.51.100.20', dualStack: undefined } },
    { name: 'a Service racklb does not own keeps no request list, even a broken one', o: { name: 's', managed: false, ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', requestedIp: ',,', pool: 'A,B,C' }, want: { dualStack: undefined, requestedIp: undefined } },
  ])('$name', ({ o, want }) => {
    const { dualStack, ...rest } = want;
    const record = parseService(service(o));
    expect(record).toMatchObject(rest);
    // A single-stack record has no dualStack key at all, so what is stored for it is unchanged.
    if ('dualStack' in want) expect(record.dualStack === undefined ? 'absent' : record.dualStack).toEqual(dualStack ?? 'absent');
    if (dualStack === undefined && 'dualStack' in want) expect(Object.hasOwn(record, 'dualStack')).toBe(false);
  });

  it('stores a single-stack Service exactly as before dual-stack (no new key)', () => {
    expect(Object.keys(svc({ name: 's', requestedIp: '198.51.100.20' })).sort()).toEqual(['externalTrafficPolicy', 'ipFamilies', 'key', 'kind', 'labels', 'managed', 'name', 'namespace', 'requestedIp', 'requestedPool', 'resourceVersion', 'uid']);
  });

  it('defaults an absent ipFamilyPolicy to SingleStack', () => {
    expect(parseService(withPath(service({ name: 's', ipFamilies: ['IPv4', 'IPv6'] }), 'spec.ipFamilyPolicy', undefined)).dualStack).toBeUndefined();
  });

  it.each<{ name: string; raw: unknown; field: string; rule: string }>([
    { name: 'unknown policy', raw: service({ name: 's', ipFamilyPolicy: 'DualStack' }), field: 'spec.ipFamilyPolicy', rule: 'must be SingleStack, PreferDualStack or RequireDualStack' },
    { name: 'policy not a string', raw: withPath(service({ name: 's' }), 'spec.ipFamilyPolicy', 2), field: 'spec.ipFamilyPolicy', rule: 'must be a string' },
    { name: 'policy on a Service racklb does not own', raw: service({ name: 's', managed: false, ipFamilyPolicy: 'preferDualStack' }), field: 'spec.ipFamilyPolicy', rule: 'must be SingleStack' },
    { name: 'empty element at the end', raw: service({ name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', requestedIp: '198.51.100.20,' }), field: IP_ANN, rule: 'without empty elements' },
    { name: 'empty element first', raw: service({ name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', requestedIp: ',2001:db8::20' }), field: IP_ANN, rule: 'without empty elements' },
    { name: 'an element that is not an address', raw: service({ name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', requestedIp: '198.51.100.20,2001:db8::g' }), field: IP_ANN, rule: 'must be an IPv4 address' },
    { name: 'an element with a space', raw: service({ name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', requestedIp: '198.51.100.20, 2001:db8::20' }), field: IP_ANN, rule: 'must be an IPv4 address' },
    { name: 'two addresses of one family', raw: service({ name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', requestedIp: '198.51.100.20,198.51.100.21' }), field: IP_ANN, rule: 'at most one address per IP family (198.51.100.20 and 198.51.100.21 are both IPv4)' },
    { name: 'three addresses', raw: service({ name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', requestedIp: '198.51.100.20,2001:db8::20,2001:db8::21' }), field: IP_ANN, rule: 'both IPv6' },
    { name: 'a family the single-stack Service does not have', raw: service({ name: 's', requestedIp: '198.51.100.20,2001:db8::20' }), field: IP_ANN, rule: '2001:db8::20 is IPv6, a family the Service does not have (spec.ipFamilies: IPv4)' },
    { name: 'a list on a single-stack Service without a family', raw: service({ name: 's', ipFamilies: [], requestedIp: '198.51.100.20,2001:db8::20' }), field: IP_ANN, rule: 'a single-stack Service takes one address' },
    { name: 'a list in spec.loadBalancerIP', raw: service({ name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', loadBalancerIP: '198.51.100.20,,2001:db8::20' }), field: 'spec.loadBalancerIP', rule: 'without empty elements' },
    { name: 'empty pool element', raw: service({ name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', pool: 'eip-v4,' }), field: POOL_ANN, rule: 'without empty elements, e.g. "eip-v4,eip-v6"' },
    { name: 'a pool that is not a name', raw: service({ name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', pool: 'eip-v4,EIP_V6' }), field: POOL_ANN, rule: 'must be a DNS-1123 subdomain' },
    { name: 'a pool twice', raw: service({ name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', pool: 'eip-v4,eip-v4' }), field: POOL_ANN, rule: 'must not name a pool twice' },
    { name: 'three pools', raw: service({ name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', pool: 'a,b,c' }), field: POOL_ANN, rule: 'at most one pool per IP family (at most two)' },
    { name: 'a pool list on a single-stack Service', raw: service({ name: 's', pool: 'eip-v4,eip-v6' }), field: POOL_ANN, rule: 'a single-stack Service takes one pool' },
  ])('rejects $name', ({ raw, field, rule }) => {
    expectInvalidField(() => parseService(raw), field, rule);
  });
});

describe('checkPoolOverlap: one default pool per IP family', () => {
  const others = [pool({ name: 'd4', address: '198.51.100.0/24', isDefault: true }), pool({ name: 'p6', address: '2001:db8::/64' })];
  it('accepts an IPv6 default beside the IPv4 one', () => {
    expect(() => checkPoolOverlap(pool({ name: 'd6', address: '2001:db8:1::/64', isDefault: true }), others)).not.toThrow();
  });
  it('refuses a second default of one family', () => {
    const withV6 = [...others, pool({ name: 'd6', address: '2001:db8:1::/64', isDefault: true })];
    expectInvalidField(() => checkPoolOverlap(pool({ name: 'new', address: '2001:db8:2::/64', isDefault: true }), withV6), 'metadata.annotations["eip.porter.kubesphere.io/is-default-eip"] or metadata.annotations["eip.openelb.kubesphere.io/is-default-eip"]', 'Eip "d6" already is the IPv6 one');
  });
});

describe('allocateFamilies', () => {
  const pools = [
    pool({ name: 'd4', address: '198.51.100.0/30', isDefault: true }),
    pool({ name: 'd6', address: '2001:db8:100::/126', isDefault: true }),
    pool({ name: 'eip-v4', address: '203.0.113.0/30' }),
    pool({ name: 'eip-v4b', address: '192.0.2.0/30' }),
    pool({ name: 'eip-v6', address: '2001:db8:200::/126' }),
    pool({ name: 'team-v6', address: '2001:db8:300::/126', namespaces: ['team'] }),
  ];
  const ok = (ip: string, p: string, shared = false) => ({ ok: true, ip, pool: p, shared });
  const no = (reason: string) => ({ ok: false, reason });

  it.each<{ name: string; s: ServiceRecord; ps?: EipRecord[]; allocations?: Allocation[]; current?: Allocation[]; want: [string | undefined, unknown][] }>([
    { name: 'a single-stack Service: one family, as allocate', s: svc({ name: 's' }), want: [['ipv4', ok('198.51.100.0', 'd4')]] },
    { name: 'the default pool of each family', s: dual({}), want: [['ipv4', ok('198.51.100.0', 'd4')], ['ipv6', ok('2001:db8:100::', 'd6')]] },
    { name: 'in spec.ipFamilies order', s: dual({ ipFamilies: ['IPv6', 'IPv4'] }), want: [['ipv6', ok('2001:db8:100::', 'd6')], ['ipv4', ok('198.51.100.0', 'd4')]] },
    { name: 'a requested address per family', s: dual({ requestedIp: '203.0.113.2,2001:db8:200::3' }), want: [['ipv4', ok('203.0.113.2', 'eip-v4')], ['ipv6', ok('2001:db8:200::3', 'eip-v6')]] },
    { name: 'a pool per family, whatever the order', s: dual({ pool: 'eip-v6,eip-v4' }), want: [['ipv4', ok('203.0.113.0', 'eip-v4')], ['ipv6', ok('2001:db8:200::', 'eip-v6')]] },
    { name: 'a namespace pool for one family, the default for the other', s: dual({ namespace: 'team' }), want: [['ipv4', ok('198.51.100.0', 'd4')], ['ipv6', ok('2001:db8:300::', 'team-v6')]] },
    {
      name: 'one named pool: the other family is not served',
      s: dual({ pool: 'eip-v4' }),
      want: [['ipv4', ok('203.0.113.0', 'eip-v4')], ['ipv6', no('the annotation eip.porter.kubesphere.io/v1alpha2 names no IPv6 pool ("eip-v4" is IPv4)')]],
    },
    {
      name: 'two named pools of one family',
      s: dual({ pool: 'eip-v4,eip-v4b' }),
      want: [['ipv4', no('pools "eip-v4" and "eip-v4b" (annotation eip.porter.kubesphere.io/v1alpha2) are both IPv4: name one pool per IP family')], ['ipv6', no('the annotation eip.porter.kubesphere.io/v1alpha2 names no IPv6 pool ("eip-v4" is IPv4, "eip-v4b" is IPv4)')]],
    },
    { name: 'a named pool that does not exist', s: dual({ pool: 'eip-v4,nope' }), want: [['ipv4', ok('203.0.113.0', 'eip-v4')], ['ipv6', no('pool "nope" (annotation eip.porter.kubesphere.io/v1alpha2) does not exist')]] },
    {
      name: 'no default pool of one family',
      s: dual({}),
      ps: [pool({ name: 'd4', address: '198.51.100.0/30', isDefault: true })],
      want: [['ipv4', ok('198.51.100.0', 'd4')], ['ipv6', no('the default pool "d4" is IPv4, not IPv6 (a dual-stack Service needs a pool of each family)')]],
    },
    { name: 'a requested address in no pool', s: dual({ requestedIp: '2001:db8:999::1' }), want: [['ipv4', ok('198.51.100.0', 'd4')], ['ipv6', no('requested IP 2001:db8:999::1 is in no enabled Eip')]] },
    {
      name: 'each family keeps its address while it fits',
      s: dual({}),
      current: [alloc('198.51.100.3', 'd4', 'default/s'), alloc('2001:db8:100::2', 'd6', 'default/s')],
      want: [['ipv4', ok('198.51.100.3', 'd4')], ['ipv6', ok('2001:db8:100::2', 'd6')]],
    },
    {
      name: 'one family moves, the other stays',
      s: dual({ requestedIp: '2001:db8:100::1' }),
      current: [alloc('198.51.100.3', 'd4', 'default/s'), alloc('2001:db8:100::2', 'd6', 'default/s')],
      want: [['ipv4', ok('198.51.100.3', 'd4')], ['ipv6', ok('2001:db8:100::1', 'd6')]],
    },
    {
      name: 'a requested address another Service holds is shared in that family only',
      s: dual({ requestedIp: '2001:db8:100::' }),
      allocations: [alloc('2001:db8:100::', 'd6', 'default/other'), alloc('198.51.100.0', 'd4', 'default/other')],
      want: [['ipv4', ok('198.51.100.1', 'd4')], ['ipv6', ok('2001:db8:100::', 'd6', true)]],
    },
  ])('$name', ({ s, ps, allocations, current, want }) => {
    const got = allocateFamilies(s, ps ?? pools, allocations ?? [], current ?? []);
    expect(got.map((f) => [f.family, f.result])).toEqual(want);
  });

  it('says where each family\'s address came from', () => {
    const s = dual({ requestedIp: '2001:db8:200::3', pool: 'eip-v4,eip-v6' });
    expect(allocationOrigin(s, alloc('2001:db8:200::3', 'eip-v6', 'default/s'), pools)).toEqual({ requested: true, by: 'poolAnnotation', sharedWith: [] });
    expect(allocationOrigin(s, alloc('203.0.113.0', 'eip-v4', 'default/s', 'default/t'), pools)).toEqual({ requested: false, by: 'poolAnnotation', sharedWith: ['default/t'] });
    expect(allocationOrigin(dual({}), alloc('2001:db8:100::', 'd6', 'default/s'), pools)).toMatchObject({ requested: false, by: 'defaultPool' });
  });

  it('records a reason per missing family, and reads one back', () => {
    const s = dual({});
    const pending = formatPending(s, [{ family: 'ipv4', reason: 'no free address in pool "d4" (4 in use)' }, { family: 'ipv6', reason: 'pool "x" is disabled' }]);
    expect(pending).toBe('IPv4: no free address in pool "d4" (4 in use); IPv6: pool "x" is disabled');
    expect(pendingOfFamily(pending, 'ipv4')).toBe('no free address in pool "d4" (4 in use)');
    expect(pendingOfFamily(pending, 'ipv6')).toBe('pool "x" is disabled');
    expect(formatPending(svc({ name: 's' }), [{ family: 'ipv4', reason: 'r' }])).toBe('r');
    expect(formatPending(s, [])).toBeUndefined();
  });

  it('gives each family what allocate gives the single-stack Service of that family', () => {
    const ipsV4 = ['198.51.100.1', '203.0.113.2', '192.0.2.9'];
    const ipsV6 = ['2001:db8:100::1', '2001:db8:200::2', '2001:db8:999::1'];
    const names = ['d4', 'd6', 'eip-v4', 'eip-v6', 'team-v6'];
    const arb = fc.record({
      namespace: fc.constantFrom('default', 'team'),
      v4: fc.option(fc.constantFrom(...ipsV4), { nil: undefined }),
      v6: fc.option(fc.constantFrom(...ipsV6), { nil: undefined }),
      pool4: fc.option(fc.constantFrom('d4', 'eip-v4'), { nil: undefined }),
      pool6: fc.option(fc.constantFrom('d6', 'eip-v6', 'team-v6'), { nil: undefined }),
      v6First: fc.boolean(),
      allocations: fc.array(fc.record({ ip: fc.constantFrom(...ipsV4, ...ipsV6, '198.51.100.0', '2001:db8:100::'), pool: fc.constantFrom(...names), services: fc.constantFrom<string[]>(['default/x'], ['default/s'], ['default/s', 'team/y']) }), { maxLength: 5 }),
    });
    fc.assert(
      fc.property(arb, (o) => {
        const families = o.v6First ? ['IPv6', 'IPv4'] : ['IPv4', 'IPv6'];
        const pools4and6: string[] = [o.pool4, o.pool6].filter((p) => p !== undefined);
        // Naming pools restricts both families: the single-stack comparison holds where each family has one.
        if (pools4and6.length === 1) return;
        const ip = [o.v4, o.v6].filter((x): x is string => x !== undefined).join(',');
        const s = parseService(service({ name: 's', namespace: o.namespace, ipFamilies: families, ipFamilyPolicy: 'RequireDualStack', ...(ip ? { requestedIp: ip } : {}), ...(pools4and6.length ? { pool: pools4and6.join(',') } : {}) }));
        const got = allocateFamilies(s, pools, o.allocations, []);
        expect(got.map((g) => g.family)).toEqual(s.ipFamilies);
        for (const g of got) {
          const single = parseService(
            service({ name: 's', namespace: o.namespace, ipFamilies: [g.family === 'ipv4' ? 'IPv4' : 'IPv6'], requestedIp: g.family === 'ipv4' ? o.v4 : o.v6, pool: g.family === 'ipv4' ? o.pool4 : o.pool6 }),
          );
          expect(g.result).toEqual(allocate(single, pools, o.allocations, undefined));
        }
      }),
      { numRuns: 500 },
    );
  });

  it('never holds two addresses of one family, nor hands one to two Services unless a request made it shared', () => {
    const propPools = [pool({ name: 'd4', address: '192.0.2.0/30', isDefault: true }), pool({ name: 'd6', address: '2001:db8::/126', isDefault: true }), pool({ name: 'x6', address: '2001:db8:1::/127' })];
    const arbStep = fc.record({
      name: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f'),
      policy: fc.constantFrom('SingleStack', 'PreferDualStack', 'RequireDualStack'),
      v6First: fc.boolean(),
      requestedIp: fc.option(fc.constantFrom('192.0.2.1', '2001:db8::1', '192.0.2.2,2001:db8:1::1'), { nil: undefined }),
      // The status may show addresses of either family, held by another Service or not: never joined.
      ingress: fc.option(fc.uniqueArray(fc.constantFrom('192.0.2.1', '192.0.2.3', '2001:db8::2', '2001:db8:1::1'), { maxLength: 3 }), { nil: undefined }),
      remove: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(arbStep, { maxLength: 40 }), (steps) => {
        // The caller's side, as the handler keeps it: one allocation table and each Service's addresses.
        const table = new Map<string, Allocation>();
        const held = new Map<string, string[]>();
        for (const step of steps) {
          const key = `default/${step.name}`;
          const families = step.v6First ? ['IPv6', 'IPv4'] : ['IPv4', 'IPv6'];
          let s: ServiceRecord;
          try {
            s = svc({ name: step.name, ipFamilies: families, ipFamilyPolicy: step.policy, requestedIp: step.requestedIp, ingress: step.ingress });
          } catch {
            continue; // a list on a single-stack Service: refused before allocation
          }
          const current = (held.get(key) ?? []).flatMap((ip) => table.get(ip) ?? []);
          for (const ip of held.get(key) ?? []) {
            const a = table.get(ip);
            if (!a) continue;
            a.services = a.services.filter((k) => k !== key);
            if (a.services.length === 0) table.delete(ip);
          }
          held.delete(key);
          if (step.remove) continue;
          const mine: string[] = [];
          for (const { family, result } of allocateFamilies(s, propPools, [...table.values()], current)) {
            if (!result.ok) continue;
            expect(parseIp(result.ip)?.family).toBe(family ?? parseIp(result.ip)?.family);
            expect(propPools.some((p) => p.name === result.pool && ipInPool(result.ip, p))).toBe(true);
            const others = (table.get(result.ip)?.services ?? []).filter((k) => k !== key);
            expect(result.shared).toBe(others.length > 0);
            // Only a request joins another Service's address (one kept from before stays shared, as allocate documents).
            if (others.length > 0 && !current.some((a) => a.ip === result.ip)) expect(step.requestedIp?.split(',') ?? []).toContain(result.ip);
            const entry = table.get(result.ip) ?? { ip: result.ip, pool: result.pool, services: [] };
            entry.services.push(key);
            table.set(result.ip, entry);
            mine.push(result.ip);
          }
          const fams = mine.map((ip) => parseIp(ip)?.family);
          expect(new Set(fams).size).toBe(fams.length);
          if (mine.length > 0) held.set(key, mine);
        }
      }),
      { numRuns: 300 },
    );
  });
});
