import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { allocate, checkPoolOverlap, ipInPool, parsePoolAddress } from '../../../src/core/ipam.js';
import { parseEip, parseService } from '../../../src/core/objects.js';
import type { Allocation, EipRecord, ServiceRecord } from '../../../src/core/types.js';
import { expectInvalidField } from './assert.js';
import { eip, service, type EipOpts, type ServiceOpts } from '../../helpers/fixtures.js';

const pool = (o: EipOpts): EipRecord => parseEip(eip(o));
const svc = (o: ServiceOpts): ServiceRecord => parseService(service(o));
const alloc = (ip: string, poolName: string, ...services: string[]): Allocation => ({ ip, pool: poolName, services });

describe('parsePoolAddress', () => {
  it.each([
    { name: 'single IPv4', a: '192.0.2.7', want: { family: 'ipv4', first: '192.0.2.7', last: '192.0.2.7', size: 1n } },
    { name: 'IPv4 /24', a: '192.0.2.0/24', want: { family: 'ipv4', first: '192.0.2.0', last: '192.0.2.255', size: 256n } },
    { name: 'IPv4 /32', a: '192.0.2.7/32', want: { family: 'ipv4', first: '192.0.2.7', last: '192.0.2.7', size: 1n } },
    { name: 'IPv4 /0', a: '0.0.0.0/0', want: { family: 'ipv4', first: '0.0.0.0', last: '255.255.255.255', size: 4294967296n } },
    { name: 'IPv4 range', a: '192.168.0.91-192.168.0.100', want: { family: 'ipv4', first: '192.168.0.91', last: '192.168.0.100', size: 10n } },
    { name: 'IPv4 range of one', a: '192.0.2.5-192.0.2.5', want: { size: 1n } },
    { name: 'IPv6 single, canonicalised', a: '2001:DB8::0:1', want: { family: 'ipv6', first: '2001:db8::1', last: '2001:db8::1', size: 1n } },
    { name: 'IPv6 /120', a: '2001:db8::/120', want: { family: 'ipv6', first: '2001:db8::', last: '2001:db8::ff', size: 256n } },
    { name: 'IPv6 /0', a: '::/0', want: { family: 'ipv6', first: '::', last: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', size: 2n ** 128n } },
    { name: 'IPv6 range', a: '2001:db8::10-2001:db8::1f', want: { family: 'ipv6', first: '2001:db8::10', last: '2001:db8::1f', size: 16n } },
  ])('$name', ({ a, want }) => {
    expect(parsePoolAddress(a, 'spec.address')).toMatchObject(want);
  });

  it.each([
    { name: 'empty', a: '', rule: 'must be an IP address, a CIDR' },
    { name: 'word', a: 'pool', rule: 'must be an IP address, a CIDR' },
    { name: 'CIDR with host bits', a: '192.0.2.7/24', rule: 'did you mean 192.0.2.0/24?' },
    { name: 'IPv6 CIDR with host bits', a: '2001:db8::1/64', rule: 'did you mean 2001:db8::/64?' },
    { name: 'prefix too long', a: '192.0.2.0/33', rule: 'prefix length must be between 0 and 32' },
    { name: 'IPv6 prefix too long', a: '2001:db8::/129', rule: 'prefix length must be between 0 and 128' },
    { name: 'prefix with leading zero', a: '192.0.2.0/024', rule: 'prefix length' },
    { name: 'prefix not a number', a: '192.0.2.0/x', rule: 'prefix length' },
    { name: 'two slashes', a: '192.0.2.0/24/1' },
    { name: 'CIDR on garbage', a: 'a/24' },
    { name: 'reversed range', a: '192.0.2.10-192.0.2.9', rule: 'must not be greater than the last' },
    { name: 'mixed-family range', a: '192.0.2.1-2001:db8::1', rule: 'same IP family' },
    { name: 'range with three parts', a: '192.0.2.1-192.0.2.2-192.0.2.3' },
    { name: 'range with spaces', a: '192.0.2.1 - 192.0.2.9' },
    { name: 'range with a CIDR end', a: '192.0.2.1-192.0.2.0/24' },
    { name: 'huge string', a: '1'.repeat(100_000) },
  ])('rejects $name', ({ a, rule }) => {
    expectInvalidField(() => parsePoolAddress(a, 'spec.address'), 'spec.address', rule);
  });
});

describe('ipInPool', () => {
  const p = pool({ name: 'p', address: '192.0.2.10-192.0.2.20' });
  const p6 = pool({ name: 'p6', address: '2001:db8::/120' });
  it.each([
    { name: 'first', ip: '192.0.2.10', p, want: true },
    { name: 'last', ip: '192.0.2.20', p, want: true },
    { name: 'before', ip: '192.0.2.9', p, want: false },
    { name: 'after', ip: '192.0.2.21', p, want: false },
    { name: 'other family', ip: '2001:db8::10', p, want: false },
    { name: 'garbage', ip: 'x', p, want: false },
    { name: 'IPv6 inside, non-canonical', ip: '2001:DB8::00FF', p: p6, want: true },
    { name: 'IPv6 outside', ip: '2001:db8::100', p: p6, want: false },
  ])('$name', ({ ip, p: pl, want }) => {
    expect(ipInPool(ip, pl)).toBe(want);
  });
});

describe('checkPoolOverlap', () => {
  const others = [
    pool({ name: 'eip-a', address: '192.0.2.0/28' }),
    pool({ name: 'eip-b', address: '198.51.100.10-198.51.100.20', isDefault: true }),
    pool({ name: 'eip-6', address: '2001:db8::/64' }),
  ];
  it.each([
    { name: 'disjoint', e: pool({ name: 'new', address: '192.0.2.16/28' }) },
    { name: 'adjacent range', e: pool({ name: 'new', address: '198.51.100.21-198.51.100.30' }) },
    { name: 'same name is an update of itself', e: pool({ name: 'eip-a', address: '192.0.2.0/27' }) },
    { name: 'other family never overlaps', e: pool({ name: 'new', address: '::c000:200/120' }) },
    { name: 'default updating itself', e: pool({ name: 'eip-b', address: '198.51.100.10-198.51.100.20', isDefault: true }) },
  ])('accepts $name', ({ e }) => {
    expect(() => checkPoolOverlap(e, others)).not.toThrow();
  });

  it.each([
    { name: 'inside another', e: pool({ name: 'new', address: '192.0.2.5' }), rule: 'overlaps Eip "eip-a" (192.0.2.0/28)' },
    { name: 'straddling a range end', e: pool({ name: 'new', address: '198.51.100.20-198.51.100.25' }), rule: 'overlaps Eip "eip-b" (198.51.100.10-198.51.100.20)' },
    { name: 'covering another', e: pool({ name: 'new', address: '198.51.100.0/24' }), rule: 'overlaps Eip "eip-b"' },
    { name: 'IPv6 inside', e: pool({ name: 'new', address: '2001:db8::1:0/112' }), rule: 'overlaps Eip "eip-6" (2001:db8::/64)' },
  ])('rejects $name', ({ e, rule }) => {
    const err = expectInvalidField(() => checkPoolOverlap(e, others), 'spec.address', rule);
    expect(err.rule).toBe(rule.endsWith(')') ? rule : err.rule);
  });

  it('rejects a second default pool', () => {
    expectInvalidField(
      () => checkPoolOverlap(pool({ name: 'new', address: '203.0.113.0/24', isDefault: true }), others),
      'metadata.annotations["eip.porter.kubesphere.io/is-default-eip"] or metadata.annotations["eip.openelb.kubesphere.io/is-default-eip"]',
      'Eip "eip-b" already is',
    );
  });
});

describe('allocate', () => {
  const pools = [
    pool({ name: 'default-pool', address: '192.0.2.0/30', isDefault: true }),
    pool({ name: 'eip-a', address: '198.51.100.10-198.51.100.12' }),
    pool({ name: 'eip-off', address: '198.51.100.100-198.51.100.110', disable: true }),
    pool({ name: 'team-low', address: '203.0.113.0/29', namespaces: ['team'], priority: 10 }),
    pool({ name: 'team-high', address: '203.0.113.8/30', namespaces: ['team'], priority: 1 }),
    pool({ name: 'team-sel', address: '203.0.113.64/30', namespaceSelector: { 'kubernetes.io/metadata.name': 'shop' } }),
    pool({ name: 'team-sel-other-label', address: '203.0.113.128/30', namespaceSelector: { 'kubesphere.io/workspace': 'ws' } }),
    pool({ name: 'v6', address: '2001:db8::/120' }),
    pool({ name: 'v6-default-ns', address: '2001:db8:1::/120', namespaces: ['dual'] }),
    pool({ name: 'v4-default-ns', address: '203.0.113.200/30', namespaces: ['dual'] }),
  ];

  it.each<{ name: string; s: ServiceRecord; allocations?: Allocation[]; current?: Allocation; want: unknown }>([
    { name: 'default pool, lowest address', s: svc({ name: 's' }), want: { ok: true, ip: '192.0.2.0', pool: 'default-pool', shared: false } },
    {
      name: 'default pool skips held addresses',
      s: svc({ name: 's' }),
      allocations: [alloc('192.0.2.0', 'default-pool', 'default/x'), alloc('192.0.2.2', 'default-pool', 'default/y')],
      want: { ok: true, ip: '192.0.2.1', pool: 'default-pool' },
    },
    {
      name: 'the Service\'s own stale entry does not block it',
      s: svc({ name: 's' }),
      allocations: [alloc('192.0.2.0', 'default-pool', 'default/s')],
      want: { ok: true, ip: '192.0.2.0' },
    },
    { name: 'named pool', s: svc({ name: 's', pool: 'eip-a' }), want: { ok: true, ip: '198.51.100.10', pool: 'eip-a' } },
    { name: 'named pool and IP', s: svc({ name: 's', pool: 'eip-a', requestedIp: '198.51.100.12' }), want: { ok: true, ip: '198.51.100.12', pool: 'eip-a', shared: false } },
    { name: 'requested IP finds its pool', s: svc({ name: 's', requestedIp: '198.51.100.11' }), want: { ok: true, ip: '198.51.100.11', pool: 'eip-a', shared: false } },
    {
      name: 'requested IP held by another Service is shared',
      s: svc({ name: 's', requestedIp: '198.51.100.11' }),
      allocations: [alloc('198.51.100.11', 'eip-a', 'default/other')],
      want: { ok: true, ip: '198.51.100.11', pool: 'eip-a', shared: true },
    },
    { name: 'requested IP via loadBalancerIP', s: svc({ name: 's', loadBalancerIP: '203.0.113.9' }), want: { ok: true, ip: '203.0.113.9', pool: 'team-high' } },
    { name: 'namespace pools: smaller priority wins', s: svc({ name: 's', namespace: 'team' }), want: { ok: true, ip: '203.0.113.8', pool: 'team-high' } },
    {
      name: 'namespace pools: a full pool passes to the next',
      s: svc({ name: 's', namespace: 'team' }),
      allocations: ['203.0.113.8', '203.0.113.9', '203.0.113.10', '203.0.113.11'].map((ip, i) => alloc(ip, 'team-high', `team/x${i}`)),
      want: { ok: true, ip: '203.0.113.0', pool: 'team-low' },
    },
    { name: 'namespace selector on the name label', s: svc({ name: 's', namespace: 'shop' }), want: { ok: true, ip: '203.0.113.64', pool: 'team-sel' } },
    { name: 'other namespaces go to the default pool', s: svc({ name: 's', namespace: 'elsewhere' }), want: { ok: true, pool: 'default-pool' } },
    { name: 'IPv6 family picks the IPv6 namespace pool', s: svc({ name: 's', namespace: 'dual', ipFamilies: ['IPv6'] }), want: { ok: true, ip: '2001:db8:1::', pool: 'v6-default-ns' } },
    { name: 'IPv4 family picks the IPv4 namespace pool', s: svc({ name: 's', namespace: 'dual', ipFamilies: ['IPv4', 'IPv6'] }), want: { ok: true, ip: '203.0.113.200', pool: 'v4-default-ns' } },
    { name: 'no family: namespace pools by priority then name', s: svc({ name: 's', namespace: 'dual', ipFamilies: [] }), want: { ok: true, pool: 'v4-default-ns' } },
    {
      name: 'keeps a valid current allocation',
      s: svc({ name: 's' }),
      current: alloc('192.0.2.3', 'default-pool', 'default/s'),
      want: { ok: true, ip: '192.0.2.3', pool: 'default-pool', shared: false },
    },
    {
      name: 'keeps an allocation in a pool disabled since',
      s: svc({ name: 's' }),
      current: alloc('198.51.100.100', 'eip-off', 'default/s'),
      want: { ok: true, ip: '198.51.100.100', pool: 'eip-off' },
    },
    {
      name: 'keeps a shared allocation and says so',
      s: svc({ name: 's', requestedIp: '198.51.100.11' }),
      current: alloc('198.51.100.11', 'eip-a', 'default/other', 'default/s'),
      want: { ok: true, ip: '198.51.100.11', shared: true },
    },
    {
      name: 'moves when the requested IP changes',
      s: svc({ name: 's', requestedIp: '198.51.100.12' }),
      current: alloc('198.51.100.11', 'eip-a', 'default/s'),
      want: { ok: true, ip: '198.51.100.12', pool: 'eip-a' },
    },
    {
      name: 'moves when the requested pool changes',
      s: svc({ name: 's', pool: 'eip-a' }),
      current: alloc('192.0.2.0', 'default-pool', 'default/s'),
      want: { ok: true, ip: '198.51.100.10', pool: 'eip-a' },
    },
    {
      name: 'moves when the pool is gone',
      s: svc({ name: 's' }),
      current: alloc('10.0.0.1', 'deleted-pool', 'default/s'),
      want: { ok: true, ip: '192.0.2.0', pool: 'default-pool' },
    },
    {
      name: 'moves when the IP left the pool',
      s: svc({ name: 's' }),
      current: alloc('192.0.2.200', 'default-pool', 'default/s'),
      want: { ok: true, ip: '192.0.2.0', pool: 'default-pool' },
    },
    {
      name: 'moves when the family changes',
      s: svc({ name: 's', ipFamilies: ['IPv6'], pool: 'v6' }),
      current: alloc('192.0.2.0', 'default-pool', 'default/s'),
      want: { ok: true, ip: '2001:db8::', pool: 'v6' },
    },
  ])('$name', ({ s, allocations, current, want }) => {
    expect(allocate(s, pools, allocations ?? [], current)).toEqual(expect.objectContaining(want as object));
  });

  it.each<{ name: string; s: ServiceRecord; pools?: EipRecord[]; allocations?: Allocation[]; reason: string }>([
    { name: 'unmanaged', s: svc({ name: 's', managed: false }), reason: 'Service default/s is not racklb\'s: it needs type LoadBalancer and the annotation lb.kubesphere.io/v1alpha1: porter or openelb' },
    { name: 'named pool missing', s: svc({ name: 's', pool: 'nope' }), reason: 'pool "nope" (annotation eip.porter.kubesphere.io/v1alpha2) does not exist' },
    { name: 'named pool disabled', s: svc({ name: 's', pool: 'eip-off' }), reason: 'pool "eip-off" is disabled' },
    { name: 'named pool of the wrong family', s: svc({ name: 's', pool: 'v6' }), reason: 'pool "v6" is IPv6 but the Service\'s first IP family is IPv4' },
    { name: 'requested IP outside the named pool', s: svc({ name: 's', pool: 'eip-a', requestedIp: '192.0.2.1' }), reason: 'requested IP 192.0.2.1 is not in pool "eip-a" (198.51.100.10-198.51.100.12)' },
    { name: 'requested IP in no pool', s: svc({ name: 's', requestedIp: '192.0.2.9' }), reason: 'requested IP 192.0.2.9 is in no enabled Eip' },
    { name: 'requested IP in a disabled pool', s: svc({ name: 's', requestedIp: '198.51.100.105' }), reason: 'requested IP 198.51.100.105 is in pool "eip-off", which is disabled' },
    { name: 'requested IP of the wrong family', s: svc({ name: 's', requestedIp: '2001:db8::5' }), reason: 'requested IP 2001:db8::5 is IPv6 but the Service\'s first IP family is IPv4' },
    {
      name: 'named pool full',
      s: svc({ name: 's', pool: 'eip-a' }),
      allocations: ['198.51.100.10', '198.51.100.11', '198.51.100.12'].map((ip, i) => alloc(ip, 'eip-a', `default/x${i}`)),
      reason: 'no free address in pool "eip-a" (3 in use)',
    },
    {
      name: 'namespace pools all full',
      s: svc({ name: 's', namespace: 'shop' }),
      allocations: ['203.0.113.64', '203.0.113.65', '203.0.113.66', '203.0.113.67'].map((ip, i) => alloc(ip, 'team-sel', `shop/x${i}`)),
      reason: 'no free address in pool "team-sel" (4 in use)',
    },
    {
      name: 'several namespace pools full',
      s: svc({ name: 's', namespace: 'team' }),
      pools: [pool({ name: 'a', address: '192.0.2.1', namespaces: ['team'] }), pool({ name: 'b', address: '192.0.2.2', namespaces: ['team'] })],
      allocations: [alloc('192.0.2.1', 'a', 'team/x'), alloc('192.0.2.2', 'b', 'team/y')],
      reason: 'no free address in pools "a", "b" (2 in use)',
    },
    { name: 'no default pool', s: svc({ name: 's' }), pools: [pool({ name: 'a', address: '192.0.2.1' })], reason: 'no enabled Eip is bound to namespace "default" and there is no default Eip' },
    { name: 'default pool disabled', s: svc({ name: 's' }), pools: [pool({ name: 'd', address: '192.0.2.1', isDefault: true, disable: true })], reason: 'the default pool "d" is disabled' },
    { name: 'default pool of the wrong family', s: svc({ name: 's', ipFamilies: ['IPv6'] }), pools: [pool({ name: 'd', address: '192.0.2.1', isDefault: true })], reason: 'the default pool "d" is IPv4 but the Service\'s first IP family is IPv6' },
    {
      name: 'disabled namespace pool falls back to the default',
      s: svc({ name: 's', namespace: 'team' }),
      pools: [pool({ name: 'ns', address: '192.0.2.1', namespaces: ['team'], disable: true }), pool({ name: 'd', address: '192.0.2.2', isDefault: true, disable: true })],
      reason: 'the default pool "d" is disabled',
    },
  ])('fails: $name', ({ s, pools: ps, allocations, reason }) => {
    expect(allocate(s, ps ?? pools, allocations ?? [], undefined)).toEqual({ ok: false, reason });
  });

  it('finds a free address among 10,000 allocations quickly', () => {
    const big = [pool({ name: 'big', address: '10.0.0.0/16', isDefault: true })];
    const allocations: Allocation[] = [];
    for (let i = 0; i < 10_000; i++) {
      const ip = `10.0.${i >> 8}.${i & 255}`;
      allocations.push(alloc(ip, 'big', `default/s${i}`));
    }
    const t0 = performance.now();
    const r = allocate(svc({ name: 'new' }), big, allocations, undefined);
    expect(performance.now() - t0).toBeLessThan(500);
    expect(r).toEqual({ ok: true, ip: '10.0.39.16', pool: 'big', shared: false });
  });

  it('scans a huge IPv6 pool only as far as needed', () => {
    const big = [pool({ name: 'v6', address: '2001:db8::/64', isDefault: true })];
    const allocations = Array.from({ length: 1000 }, (_, i) => alloc(`2001:db8::${i.toString(16)}`, 'v6', `default/s${i}`));
    expect(allocate(svc({ name: 'new', ipFamilies: ['IPv6'] }), big, allocations, undefined)).toMatchObject({ ok: true, ip: '2001:db8::3e8' });
  });

  it('is idempotent: re-running with its own result changes nothing', () => {
    const s = svc({ name: 's', namespace: 'team' });
    const first = allocate(s, pools, [], undefined);
    if (!first.ok) throw new Error(first.reason);
    const mine = alloc(first.ip, first.pool, s.key);
    expect(allocate(s, pools, [mine], mine)).toEqual(first);
    expect(allocate(s, pools, [mine], undefined)).toEqual(first);
  });

  it('never hands one IP to two Services unless a request made it shared', () => {
    const propPools = [
      pool({ name: 'd', address: '192.0.2.0/29', isDefault: true }),
      pool({ name: 'n', address: '198.51.100.0/30', namespaces: ['team'] }),
      pool({ name: 'x', address: '203.0.113.0/30' }),
    ];
    const arbService = fc.record({
      name: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'),
      namespace: fc.constantFrom('default', 'team'),
      requestedIp: fc.option(fc.constantFrom('192.0.2.1', '192.0.2.2', '198.51.100.1', '203.0.113.2'), { nil: undefined }),
      pool: fc.option(fc.constantFrom('d', 'n', 'x'), { nil: undefined }),
      // A status that shows an address, maybe one another Service holds now: it never joins it.
      ingress: fc.option(fc.uniqueArray(fc.constantFrom('192.0.2.0', '192.0.2.2', '192.0.2.3', '198.51.100.1', '203.0.113.2', '198.51.100.200'), { maxLength: 2 }), { nil: undefined }),
      remove: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(arbService, { maxLength: 40 }), (steps) => {
        // The caller's side: one table of allocations, updated from each result.
        const table = new Map<string, Allocation>();
        const release = (key: string): void => {
          for (const a of table.values()) {
            a.services = a.services.filter((k) => k !== key);
            if (a.services.length === 0) table.delete(a.ip);
          }
        };
        for (const step of steps) {
          const s = svc(step);
          if (step.remove) {
            release(s.key);
            continue;
          }
          const current = [...table.values()].find((a) => a.services.includes(s.key));
          const r = allocate(s, propPools, [...table.values()], current);
          if (!r.ok) {
            release(s.key);
            continue;
          }
          const others = (table.get(r.ip)?.services ?? []).filter((k) => k !== s.key);
          expect(r.shared).toBe(others.length > 0);
          if (r.ip !== current?.ip && others.length > 0) expect(s.requestedIp).toBe(r.ip);
          expect(propPools.some((p) => p.name === r.pool && ipInPool(r.ip, p))).toBe(true);
          if (r.ip !== current?.ip) release(s.key);
          const entry = table.get(r.ip) ?? { ip: r.ip, pool: r.pool, services: [] };
          if (!entry.services.includes(s.key)) entry.services.push(s.key);
          table.set(r.ip, entry);
        }
      }),
      { numRuns: 500 },
    );
  });
});
