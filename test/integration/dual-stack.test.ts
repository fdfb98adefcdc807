/**
 * Dual-stack Services (issue 8: "a dual-stack Service announced in both families") through the real
 * on-service function over HTTP, a real redis-server, `racklb state` and `racklb explain` as a user
 * runs them, and the status writer against the test API server: one address per family, a route
 * intent for each with the node's address of that family as next hop, both in the Service's ingress,
 * both released on delete, and malformed lists refused with the field named and nothing written.
 */
import fc from 'fast-check';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { explainService } from '../../src/explain/explain.js';
import { KubeApi } from '../../src/k8s/kube.js';
import { StatusWriter } from '../../src/k8s/status-writer.js';
import { serviceChange } from '../../src/k8s/status.js';
import { parseEip } from '../../src/core/objects.js';
import type { Allocation, ServiceIpIntent } from '../../src/core/types.js';
import { readSnapshot } from '../../src/state/snapshot.js';
import { viewRows } from '../../src/state/views.js';
import { ALLOCATION_INDEX_COMPLETE } from '../../src/store/store.js';
import { bgpConf, eip, node, service, type Json, type ServiceOpts } from '../helpers/fixtures.js';
import { flushStore, send, serveAll, snapshot, stateJson, withVersion, type ServedFunctions } from '../helpers/functions.js';
import { cli } from '../helpers/cli.js';
import { startKubeApi } from '../helpers/kube-api.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
let fns: ServedFunctions;

beforeAll(async () => {
  redis = await startRedis();
  fns = await serveAll(redis.url);
});

afterAll(async () => {
  await fns?.close();
  if (redis) await removeRedis(redis);
});

beforeEach(async () => {
  await flushStore(fns.store);
});

const POOL_ANN = 'metadata.annotations["eip.porter.kubesphere.io/v1alpha2"]';
const IP_ANN = 'metadata.annotations["eip.porter.kubesphere.io/v1alpha1"]';

/** A rack with a dual-stack node (two InternalIPs) and an IPv4-only one, an IPv4 and an IPv6 Eip. */
const cluster = (): Json[] => [
  node({ name: 'n1', ip: '192.0.2.11', ipv6: '2001:db8:0:1::11', rack: 'leaf1', speaker: true }),
  node({ name: 'n2', ip: '192.0.2.12', rack: 'leaf1' }),
  bgpConf({ as: 65100 }),
  eip({ name: 'eip-v4', address: '198.51.100.0/28' }),
  eip({ name: 'eip-v6', address: '2001:db8:100::/120' }),
];
const dualService = (o: Partial<ServiceOpts> = {}): Json => service({ name: 'web', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', pool: 'eip-v4,eip-v6', ...o });

async function apply(...objects: Json[]): Promise<void> {
  for (const o of objects) {
    const a = await send(fns, 'add', o);
    expect(a.status, `${String(o.kind)}: ${a.body}`).toBe(200);
    expect(a.outcome, a.detail).toBe('applied');
  }
}

async function store(): Promise<{ svcip: Record<string, string>; alloc: Record<string, Allocation>; intents: Record<string, ServiceIpIntent>; pending: Record<string, string>; index: string[] }> {
  const k = fns.store.keys;
  const r = fns.store.redis;
  const json = <T>(h: Record<string, string>): Record<string, T> => Object.fromEntries(Object.entries(h).map(([f, v]) => [f, JSON.parse(v) as T]));
  return {
    svcip: await r.hgetall(k.serviceIps()),
    alloc: json<Allocation>(await r.hgetall(k.allocations())),
    intents: json<ServiceIpIntent>(await r.hgetall(k.intents())),
    pending: await r.hgetall(k.pending()),
    index: (await r.zrange(k.allocationIndex(), 0, -1)).filter((m) => m !== ALLOCATION_INDEX_COMPLETE),
  };
}

/** Every allocation is held by exactly the Services whose stored addresses name it, and the index holds exactly the IPv4 ones. */
function expectNoLeak(s: Awaited<ReturnType<typeof store>>): void {
  const holders = new Map<string, string[]>();
  for (const [svc, value] of Object.entries(s.svcip)) for (const ip of value.split(',')) holders.set(ip, [...(holders.get(ip) ?? []), svc].sort());
  expect(Object.fromEntries(Object.entries(s.alloc).map(([ip, a]) => [ip, a.services]))).toEqual(Object.fromEntries(holders));
  expect(s.index.sort()).toEqual(Object.keys(s.alloc).filter((ip) => !ip.includes(':')).sort());
}

describe('a dual-stack Service', () => {
  it('gets one address per family, a route for each through the node\'s address of that family, and loses both on delete', async () => {
    await apply(...cluster());
    const web = dualService();
    await apply(web);
    let s = await store();
    expect(s.svcip).toEqual({ 'default/web': '198.51.100.0,2001:db8:100::' });
    expect(s.alloc).toEqual({
      '198.51.100.0': { ip: '198.51.100.0', pool: 'eip-v4', services: ['default/web'] },
      '2001:db8:100::': { ip: '2001:db8:100::', pool: 'eip-v6', services: ['default/web'] },
    });
    expect(s.intents['198.51.100.0']).toMatchObject({ family: 'ipv4', services: ['default/web'], policy: 'Cluster' });
    expect(s.intents['2001:db8:100::']).toMatchObject({ family: 'ipv6', services: ['default/web'], policy: 'Cluster' });
    expect(s.pending).toEqual({});
    expectNoLeak(s);

    const state = await stateJson(redis.url);
    expect(state.racks.leaf1?.routes).toEqual({ '198.51.100.0/32': ['192.0.2.11', '192.0.2.12'], '2001:db8:100::/128': ['2001:db8:0:1::11'] });
    expect(state.services['default/web']).toEqual({
      ip: '198.51.100.0',
      pool: 'eip-v4',
      policy: 'Cluster',
      pending: null,
      addresses: [
        { family: 'ipv4', ip: '198.51.100.0', pool: 'eip-v4', pending: null },
        { family: 'ipv6', ip: '2001:db8:100::', pool: 'eip-v6', pending: null },
      ],
    });

    expect((await send(fns, 'delete', withVersion(web, '2'))).outcome).toBe('applied');
    s = await store();
    expect(s).toEqual({ svcip: {}, alloc: {}, intents: {}, pending: {}, index: [] });
  });

  it('lists the addresses in spec.ipFamilies order, and takes the requested ones', async () => {
    await apply(...cluster());
    await apply(dualService({ name: 'v6-first', ipFamilies: ['IPv6', 'IPv4'], ipFamilyPolicy: 'RequireDualStack', requestedIp: '198.51.100.7,2001:db8:100::7' }));
    const s = await store();
    expect(s.svcip['default/v6-first']).toBe('2001:db8:100::7,198.51.100.7');
    expectNoLeak(s);
  });

  it('moves or drops one family without leaking or double-holding an address', async () => {
    await apply(...cluster(), eip({ name: 'eip-v6b', address: '2001:db8:200::/120' }));
    const web = dualService({ requestedIp: '198.51.100.5' });
    await apply(web, dualService({ name: 'api' }));
    let s = await store();
    expect(s.svcip).toEqual({ 'default/web': '198.51.100.5,2001:db8:100::', 'default/api': '198.51.100.0,2001:db8:100::1' });
    // The IPv6 address moves to another pool; the IPv4 one stays.
    let a = await send(fns, 'update', withVersion(dualService({ requestedIp: '198.51.100.5', pool: 'eip-v4,eip-v6b' }), '2'));
    expect(a.detail).toContain('IPv4 198.51.100.5 from Eip eip-v4; IPv6 2001:db8:200:: from Eip eip-v6b');
    s = await store();
    expect(s.svcip['default/web']).toBe('198.51.100.5,2001:db8:200::');
    expect(s.alloc['2001:db8:100::']).toBeUndefined();
    expect(Object.keys(s.intents).sort()).toEqual(['198.51.100.0', '198.51.100.5', '2001:db8:100::1', '2001:db8:200::']);
    expectNoLeak(s);
    // Back to single-stack: the IPv6 address is released, the IPv4 one kept.
    a = await send(fns, 'update', withVersion(service({ name: 'web', requestedIp: '198.51.100.5' }), '3'));
    expect(a.detail).toBe('Service default/web: 198.51.100.5 from Eip eip-v4');
    s = await store();
    expect(s.svcip['default/web']).toBe('198.51.100.5');
    expect(s.alloc['2001:db8:200::']).toBeUndefined();
    expect(s.intents['2001:db8:200::']).toBeUndefined();
    expectNoLeak(s);
    // The IPv4 address moves inside its pool: the old one is free for the next Service.
    await send(fns, 'update', withVersion(service({ name: 'web', requestedIp: '198.51.100.9' }), '4'));
    await apply(service({ name: 'next', pool: 'eip-v4' }));
    s = await store();
    expect(s.svcip['default/next']).toBe('198.51.100.1');
    expectNoLeak(s);
  });

  it('keeps what it can under PreferDualStack and says why a family has none; RequireDualStack counts that as a problem', async () => {
    await apply(...cluster());
    await apply(dualService({ name: 'prefer', pool: 'eip-v4' }), dualService({ name: 'require', ipFamilyPolicy: 'RequireDualStack', pool: 'eip-v4' }));
    const s = await store();
    expect(s.svcip).toEqual({ 'default/prefer': '198.51.100.0', 'default/require': '198.51.100.1' });
    const why = 'the annotation eip.porter.kubesphere.io/v1alpha2 names no IPv6 pool ("eip-v4" is IPv4)';
    expect(s.pending).toEqual({ 'default/prefer': `IPv6: ${why}`, 'default/require': `IPv6: ${why}` });

    const snap = await readSnapshot(fns.store);
    const prefer = explainService(snap, 'default/prefer');
    expect(prefer.families?.map((f) => [f.family, f.ip, f.pending])).toEqual([
      ['ipv4', '198.51.100.0', null],
      ['ipv6', null, why],
    ]);
    expect(prefer.families?.[0]?.origin).toMatchObject({ pool: 'eip-v4', by: 'poolAnnotation', requested: false });
    expect(prefer.families?.[0]?.racks.map((r) => [r.rack, r.announced])).toEqual([['leaf1', []]]);
    expect(prefer.problems.join('\n')).not.toContain('RequireDualStack');
    const require = explainService(snap, 'default/require');
    expect(require.problems).toContain(`RequireDualStack, but no IPv6 address: ${why}`);
    expect(viewRows('services', snap)).toContainEqual({ service: 'default/prefer', family: 'ipv6', ip: null, pool: null, policy: 'Cluster', origin: null, announcedIn: [], pending: why });

    // An IPv6 pool named later serves the waiting family; the IPv4 address stays.
    expect((await send(fns, 'update', withVersion(dualService({ name: 'prefer', pool: 'eip-v4,eip-v6' }), '2'))).outcome).toBe('applied');
    expect((await store()).svcip['default/prefer']).toBe('198.51.100.0,2001:db8:100::');
    expect((await store()).pending['default/prefer']).toBeUndefined();
  });

  it('gets its second family when an Eip of that family arrives', async () => {
    await apply(...cluster().filter((o) => (o.metadata as Json).name !== 'eip-v6'));
    await apply(dualService({ pool: undefined, requestedIp: '198.51.100.3,2001:db8:100::3' }));
    expect((await store()).pending['default/web']).toBe('IPv6: requested IP 2001:db8:100::3 is in no enabled Eip');
    await apply(eip({ name: 'eip-v6', address: '2001:db8:100::/120' }));
    const s = await store();
    expect(s.svcip['default/web']).toBe('198.51.100.3,2001:db8:100::3');
    expect(s.pending).toEqual({});
    expectNoLeak(s);
  });

  it('is explained per family by racklb explain and racklb state, as a user runs them', async () => {
    await apply(...cluster(), dualService({ requestedIp: '2001:db8:100::20' }));
    const explained = await cli(['explain', 'service', 'default/web', '--redis', redis.url]);
    expect(explained.code, explained.stderr).toBe(0);
    expect(explained.stdout).toContain('dual-stack (PreferDualStack): IPv4 198.51.100.0, IPv6 2001:db8:100::20');
    expect(explained.stdout).toContain('IPv4 198.51.100.0: allocated (the lowest free address), from Eip eip-v4 (198.51.100.0/28)');
    expect(explained.stdout).toContain('IPv6 2001:db8:100::20: requested by the Service, from Eip eip-v6 (2001:db8:100::/120)');
    expect(explained.stdout).toMatch(/rack leaf1: 2001:db8:100::20\/128 not announced/);
    expect(explained.stdout).toMatch(/n2\s+-\s+NOT announced: noAddressOfFamily/);
    const table = await cli(['state', 'services', '--redis', redis.url]);
    expect(table.stdout).toMatch(/default\/web \(IPv4\)\s+198\.51\.100\.0\s+eip-v4/);
    expect(table.stdout).toMatch(/default\/web \(IPv6\)\s+2001:db8:100::20\s+eip-v6\s+Cluster\s+requested/);
    const whole = await cli(['state', '--redis', redis.url]);
    expect(whole.stdout).toContain('198.51.100.0 (Eip eip-v4), 2001:db8:100::20 (Eip eip-v6)');
  });
});

describe('malformed lists', () => {
  const cases: { name: string; o: Partial<ServiceOpts>; field: string; says: string }[] = [
    { name: 'two addresses of one family', o: { requestedIp: '198.51.100.1,198.51.100.2' }, field: IP_ANN, says: 'at most one address per IP family' },
    { name: 'an empty element', o: { requestedIp: '198.51.100.1,' }, field: IP_ANN, says: 'without empty elements' },
    { name: 'an element that is not an address', o: { loadBalancerIP: '198.51.100.1,fe80::1%eth0' }, field: 'spec.loadBalancerIP', says: 'must be an IPv4 address' },
    { name: 'a family a single-stack Service does not have', o: { ipFamilyPolicy: 'SingleStack', requestedIp: '198.51.100.1,2001:db8:100::1' }, field: IP_ANN, says: 'a family the Service does not have' },
    { name: 'three pools', o: { pool: 'eip-v4,eip-v6,eip-x' }, field: POOL_ANN, says: 'at most one pool per IP family' },
    { name: 'a pool twice', o: { pool: 'eip-v4,eip-v4' }, field: POOL_ANN, says: 'must not name a pool twice' },
    { name: 'an unknown ipFamilyPolicy', o: { ipFamilyPolicy: 'DualStack' }, field: 'spec.ipFamilyPolicy', says: 'must be SingleStack, PreferDualStack or RequireDualStack' },
  ];
  for (const c of cases) {
    it(`refuses ${c.name} with 400 naming ${c.field}, the store byte-for-byte unchanged`, async () => {
      await apply(...cluster(), dualService());
      const before = await snapshot(fns.store);
      const a = await send(fns, 'update', withVersion(dualService(c.o), '5'));
      expect(a.status).toBe(400);
      const body = JSON.parse(a.body) as { error: string; field?: string };
      expect(body.field).toBe(c.field);
      expect(body.error).toContain(c.field);
      expect(body.error).toContain(c.says);
      expect(await snapshot(fns.store)).toBe(before);
    });
  }
});

describe('delivery order', () => {
  /** Services that request their addresses, so that the final state cannot depend on who came first. */
  const events = (): { action: 'add' | 'update' | 'delete'; object: Json }[] => {
    let rv = 100;
    const v = (o: Json): Json => withVersion(o, String(++rv));
    return [
      ...cluster().map((o) => ({ action: 'add' as const, object: v(o) })),
      { action: 'add', object: v(eip({ name: 'eip-v6b', address: '2001:db8:200::/120' })) },
      { action: 'add', object: v(dualService({ requestedIp: '198.51.100.1,2001:db8:100::1' })) },
      { action: 'add', object: v(dualService({ name: 'api', ipFamilies: ['IPv6', 'IPv4'], requestedIp: '2001:db8:100::1,198.51.100.2' })) },
      { action: 'add', object: v(service({ name: 'v4', requestedIp: '198.51.100.3' })) },
      { action: 'update', object: v(dualService({ requestedIp: '198.51.100.1,2001:db8:200::5', pool: 'eip-v4,eip-v6b' })) },
      { action: 'delete', object: v(service({ name: 'v4', requestedIp: '198.51.100.3' })) },
    ];
  };

  async function deliver(list: { action: 'add' | 'update' | 'delete'; object: Json }[]): Promise<Record<string, unknown>> {
    await flushStore(fns.store);
    for (const e of list) expect((await send(fns, e.action, e.object)).status).toBe(200);
    return store();
  }

  it('leaves the same addresses, allocations and intents in any order', async () => {
    const list = events();
    const reference = await deliver(list);
    expect(reference.svcip).toEqual({ 'default/web': '198.51.100.1,2001:db8:200::5', 'default/api': '2001:db8:100::1,198.51.100.2' });
    expectNoLeak(reference as Awaited<ReturnType<typeof store>>);
    expect(await deliver([...list].reverse())).toEqual(reference);
    await fc.assert(
      fc.asyncProperty(fc.shuffledSubarray(list, { minLength: list.length, maxLength: list.length }), async (order) => {
        expect(await deliver(order)).toEqual(reference);
      }),
      { numRuns: 15, seed: 4242 },
    );
  }, 60_000);
});

describe('status write-back', () => {
  it('lists every address in the ingress, in spec.ipFamilies order', async () => {
    const kube = await startKubeApi();
    const writer = new StatusWriter({ api: new KubeApi({ kubeconfig: kube.kubeconfig, requestTimeoutMs: 5000 }), store: fns.store, logger: pino({ level: 'silent' }), registry: new Registry(), pollMs: 50, sessionsEveryMs: 100, fullEveryMs: 3_600_000, backoffMs: 50, maxBackoffMs: 300 });
    try {
      for (const o of [...cluster(), dualService({ ipFamilies: ['IPv6', 'IPv4'] })]) {
        const a = await send(fns, 'add', kube.apply(o));
        expect(a.status, a.body).toBe(200);
      }
      writer.start();
      const deadline = Date.now() + 10_000;
      let ingress: unknown;
      while (Date.now() < deadline) {
        ingress = ((kube.get('Service', 'web', 'default')?.status as Json | undefined)?.loadBalancer as Json | undefined)?.ingress;
        if (Array.isArray(ingress) && ingress.length === 2) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      expect(ingress).toEqual([{ ip: '2001:db8:100::' }, { ip: '198.51.100.0' }]);
      // The label holds one Eip name: the first address's.
      expect(((kube.get('Service', 'web', 'default')?.metadata as Json).labels as Record<string, string>)['eip.porter.kubesphere.io/v1alpha2']).toBe('eip-v6');
    } finally {
      await writer.stop();
      await kube.close();
    }
  });

  it('adds, keeps and takes back addresses of a dual-stack target (serviceChange)', () => {
    const pools = [parseEip(eip({ name: 'eip-v4', address: '198.51.100.0/28' })), parseEip(eip({ name: 'eip-v6', address: '2001:db8:100::/120' }))];
    const target = { key: 'default/web', namespace: 'default', name: 'web', ip: '198.51.100.1', pool: 'eip-v4', ips: ['198.51.100.1', '2001:db8:100::1'] };
    const label = { 'eip.porter.kubesphere.io/v1alpha2': 'eip-v4' };
    expect(serviceChange(target, { labels: label, ingress: [{ ip: '198.51.100.1' }, { ip: '2001:db8:100::1' }] }, pools, true)).toEqual({ labels: undefined, ingress: undefined });
    expect(serviceChange(target, { labels: label, ingress: [{ ip: '2001:db8:100::1' }, { ip: '198.51.100.1' }] }, pools, true)).toEqual({ labels: undefined, ingress: [{ ip: '198.51.100.1' }, { ip: '2001:db8:100::1' }] });
    expect(serviceChange(target, { labels: label, ingress: [{ ip: '198.51.100.1' }, { ip: '2001:db8:100::9' }, { ip: '203.0.113.9' }] }, pools, true)).toEqual({ labels: undefined, ingress: [{ ip: '198.51.100.1' }, { ip: '2001:db8:100::1' }, { ip: '203.0.113.9' }] });
    expect(serviceChange(target, { labels: label, ingress: [{ ip: '2001:db8:100::9' }] }, pools, false)).toEqual({ labels: undefined, ingress: [{ ip: '198.51.100.1' }, { ip: '2001:db8:100::1' }, { ip: '2001:db8:100::9' }] });
  });
});
