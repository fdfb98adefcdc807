/**
 * A Service keeps the address its status shows when the store has lost its allocation (Redis
 * restarted empty, a rebuilt store): parseService reads status.loadBalancer.ingress, and `allocate`
 * takes such an address back before the lowest free one, never one another Service holds.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { allocate, allocateFamilies, allocationOrigin } from '../../../src/core/ipam.js';
import { parseEip, parseService } from '../../../src/core/objects.js';
import type { Allocation, EipRecord, ServiceRecord } from '../../../src/core/types.js';
import { expectInvalidField, withPath } from './assert.js';
import { eip, service, type EipOpts, type ServiceOpts } from '../../helpers/fixtures.js';

const pool = (o: EipOpts): EipRecord => parseEip(eip(o));
const svc = (o: ServiceOpts): ServiceRecord => parseService(service(o));
const alloc = (ip: string, poolName: string, ...services: string[]): Allocation => ({ ip, pool: poolName, services });

describe('parseService: status.loadBalancer.ingress', () => {
  it('reads the addresses canonical, in order, each once, skipping hostname-only entries', () => {
    const s = svc({ name: 's', ingress: ['198.51.100.11', { hostname: 'lb.example.com' }, '2001:DB8::0:b', { ip: '198.51.100.11', hostname: 'x.example' }, { ip: '' }] });
    expect(s.ingressIps).toEqual(['198.51.100.11', '2001:db8::b']);
  });

  it('stores no key for a Service whose status shows no address, as before', () => {
    for (const o of [{ name: 's' }, { name: 's', ingress: [] }, { name: 's', ingress: [{ hostname: 'lb.example.com' }] }]) {
      expect(Object.hasOwn(svc(o), 'ingressIps')).toBe(false);
    }
    expect(Object.hasOwn(parseService(withPath(service({ name: 's' }), 'status', undefined)), 'ingressIps')).toBe(false);
  });

  it('leaves the status of a Service racklb does not own alone, even a broken one', () => {
    const s = svc({ name: 's', managed: false, ingress: ['not-an-ip'] });
    expect(s.managed).toBe(false);
    expect(s.ingressIps).toBeUndefined();
  });

  it('reads the addresses of a dual-stack Service', () => {
    const s = svc({ name: 's', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', ingress: ['198.51.100.11', '2001:db8::b'] });
    expect(s.ingressIps).toEqual(['198.51.100.11', '2001:db8::b']);
  });

  it.each([
    { name: 'an ip that is not an address', raw: service({ name: 's', ingress: ['198.51.100.11', 'lb.example.com'] }), field: 'status.loadBalancer.ingress[1].ip', rule: 'must be an IPv4 address' },
    { name: 'an IPv4-mapped address', raw: service({ name: 's', ingress: ['::ffff:198.51.100.1'] }), field: 'status.loadBalancer.ingress[0].ip', rule: 'not IPv4-mapped' },
    { name: 'an ip that is a number', raw: service({ name: 's', ingress: [{ ip: 7 }] }), field: 'status.loadBalancer.ingress[0].ip', rule: 'must be a string' },
    { name: 'an entry that is not an object', raw: withPath(service({ name: 's' }), 'status.loadBalancer.ingress', ['198.51.100.1']), field: 'status.loadBalancer.ingress[0]', rule: 'must be an object' },
    { name: 'ingress not a list', raw: withPath(service({ name: 's' }), 'status.loadBalancer.ingress', { ip: '198.51.100.1' }), field: 'status.loadBalancer.ingress', rule: 'must be a list' },
    { name: 'loadBalancer not an object', raw: withPath(service({ name: 's' }), 'status.loadBalancer', 'x'), field: 'status.loadBalancer', rule: 'must be an object' },
  ])('rejects $name', ({ raw, field, rule }) => {
    expectInvalidField(() => parseService(raw), field, rule);
  });
});

describe('allocate: the address the status shows', () => {
  const pools = [
    pool({ name: 'dflt', address: '198.51.100.10-198.51.100.13', isDefault: true }),
    pool({ name: 'named', address: '203.0.113.0/30' }),
    pool({ name: 'off', address: '203.0.113.8/30', disable: true }),
    pool({ name: 'team', address: '192.0.2.0/30', namespaces: ['team'], priority: 1 }),
    pool({ name: 'team2', address: '192.0.2.8/30', namespaces: ['team'], priority: 2 }),
    pool({ name: 'd6', address: '2001:db8::10-2001:db8::13', isDefault: true }),
  ];
  const ok = (ip: string, p: string, more: object = {}) => ({ ok: true, ip, pool: p, shared: false, ...more });

  it.each<{ name: string; s: ServiceRecord; allocations?: Allocation[]; current?: Allocation; want: unknown }>([
    { name: 'takes it back before the lowest free address', s: svc({ name: 's', ingress: ['198.51.100.12'] }), want: ok('198.51.100.12', 'dflt', { fromStatus: true }) },
    { name: 'not when another Service holds it: the lowest free instead', s: svc({ name: 's', ingress: ['198.51.100.12'] }), allocations: [alloc('198.51.100.12', 'dflt', 'default/x')], want: ok('198.51.100.10', 'dflt') },
    { name: 'not when it lies outside every pool the Service may use', s: svc({ name: 's', ingress: ['203.0.113.1'] }), want: ok('198.51.100.10', 'dflt') },
    { name: 'not from a disabled pool', s: svc({ name: 's', pool: 'off', ingress: ['203.0.113.9'] }), want: { ok: false, reason: 'pool "off" is disabled' } },
    { name: 'the first usable one, in status order', s: svc({ name: 's', ingress: ['203.0.113.1', '198.51.100.13', '198.51.100.11'] }), want: ok('198.51.100.13', 'dflt', { fromStatus: true }) },
    { name: 'the next one when the first is held', s: svc({ name: 's', ingress: ['198.51.100.13', '198.51.100.11'] }), allocations: [alloc('198.51.100.13', 'dflt', 'default/x')], want: ok('198.51.100.11', 'dflt', { fromStatus: true }) },
    { name: 'in the pool the Service names', s: svc({ name: 's', pool: 'named', ingress: ['198.51.100.12', '203.0.113.3'] }), want: ok('203.0.113.3', 'named', { fromStatus: true }) },
    { name: 'in any namespace pool, not only the first with room', s: svc({ name: 's', namespace: 'team', ingress: ['192.0.2.9'] }), want: ok('192.0.2.9', 'team2', { fromStatus: true }) },
    { name: 'a request wins over the status', s: svc({ name: 's', requestedIp: '198.51.100.11', ingress: ['198.51.100.12'] }), want: ok('198.51.100.11', 'dflt') },
    { name: 'a current allocation that fits is kept', s: svc({ name: 's', ingress: ['198.51.100.12'] }), current: alloc('198.51.100.10', 'dflt', 'default/s'), want: ok('198.51.100.10', 'dflt') },
    { name: 'an address of the other family is not taken', s: svc({ name: 's', ingress: ['2001:db8::12'] }), want: ok('198.51.100.10', 'dflt') },
    { name: 'the Service\'s own stale entry does not block it', s: svc({ name: 's', ingress: ['198.51.100.12'] }), allocations: [alloc('198.51.100.12', 'dflt', 'default/s')], want: ok('198.51.100.12', 'dflt', { fromStatus: true }) },
    { name: 'kept later, still known as taken back', s: svc({ name: 's' }), current: { ...alloc('198.51.100.12', 'dflt', 'default/s'), fromStatus: 'default/s' }, want: ok('198.51.100.12', 'dflt', { fromStatus: true }) },
  ])('$name', ({ s, allocations, current, want }) => {
    expect(allocate(s, pools, allocations ?? [], current)).toStrictEqual(want);
  });

  it('keeps both families of a dual-stack Service', () => {
    const s = svc({ name: 's', ipFamilies: ['IPv6', 'IPv4'], ipFamilyPolicy: 'RequireDualStack', ingress: ['2001:db8::13', '198.51.100.12'] });
    const got = allocateFamilies(s, pools, [alloc('198.51.100.10', 'dflt', 'default/x'), alloc('2001:db8::10', 'd6', 'default/x')], []);
    expect(got.map((f) => [f.family, f.result])).toEqual([
      ['ipv6', ok('2001:db8::13', 'd6', { fromStatus: true })],
      ['ipv4', ok('198.51.100.12', 'dflt', { fromStatus: true })],
    ]);
    // One family kept, the other lost: only the lost one is taken back from the status.
    const partial = allocateFamilies(s, pools, [], [alloc('2001:db8::11', 'd6', 'default/s')]);
    expect(partial.map((f) => f.result)).toEqual([ok('2001:db8::11', 'd6'), ok('198.51.100.12', 'dflt', { fromStatus: true })]);
  });

  it('two Services arriving in the order that would swap them each keep their own', () => {
    const a = svc({ name: 'a', ingress: ['198.51.100.11'] });
    const b = svc({ name: 'b', ingress: ['198.51.100.10'] });
    for (const order of [[a, b], [b, a]]) {
      const table: Allocation[] = [];
      for (const s of order) {
        const r = allocate(s, pools, table, undefined);
        if (!r.ok) throw new Error(r.reason);
        table.push(alloc(r.ip, r.pool, s.key));
      }
      expect(Object.fromEntries(table.map((t) => [t.services[0], t.ip]))).toEqual({ 'default/a': '198.51.100.11', 'default/b': '198.51.100.10' });
    }
  });

  it('says where the address came from', () => {
    const s = svc({ name: 's', ingress: ['198.51.100.12'] });
    expect(allocationOrigin(s, { ...alloc('198.51.100.12', 'dflt', 'default/s'), fromStatus: 'default/s' }, pools)).toEqual({ requested: false, by: 'keptFromStatus', sharedWith: [] });
    // The same address allocated as the lowest free one: the status showing it says nothing.
    expect(allocationOrigin(s, alloc('198.51.100.12', 'dflt', 'default/s'), pools)).toEqual({ requested: false, by: 'defaultPool', sharedWith: [] });
    // Another Service that joined by request: its address was requested.
    expect(allocationOrigin(svc({ name: 't', requestedIp: '198.51.100.12' }), { ...alloc('198.51.100.12', 'dflt', 'default/s', 'default/t'), fromStatus: 'default/s' }, pools)).toEqual({
      requested: true,
      by: 'poolOfRequestedIp',
      sharedWith: ['default/s'],
    });
  });

  it('whatever the arrival order, Services whose status shows distinct addresses each keep theirs', () => {
    const free = ['198.51.100.10', '198.51.100.11', '198.51.100.12', '198.51.100.13'];
    const arb = fc.shuffledSubarray(free, { minLength: 1 }).chain((shown) => fc.tuple(fc.constant(shown), fc.shuffledSubarray([...shown.keys()], { minLength: shown.length })));
    fc.assert(
      fc.property(arb, ([shown, order]) => {
        const table: Allocation[] = [];
        for (const i of order) {
          const s = svc({ name: `s${i}`, ingress: [shown[i] as string] });
          const r = allocate(s, pools, table, undefined);
          if (!r.ok) throw new Error(r.reason);
          expect(r.ip).toBe(shown[i]);
          table.push(alloc(r.ip, r.pool, s.key));
        }
      }),
      { numRuns: 200 },
    );
  });
});
