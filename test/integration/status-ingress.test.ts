/**
 * A Service keeps the address its status shows when the store has lost its allocation (Redis
 * restarted empty, a store rebuilt by `racklb resync` or the bridge): the objects come back in any
 * order, and without the status the lowest free address would swap or move Services. Through the
 * real on-service function over HTTP and a real redis-server; what is asserted is what a user reads
 * (`racklb state`, `racklb explain`) and, for a refusal, the store byte for byte.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { explainService } from '../../src/explain/explain.js';
import { formatServiceExplanation } from '../../src/explain/format.js';
import { readState } from '../../src/state/read.js';
import { readSnapshot } from '../../src/state/snapshot.js';
import { ALLOCATION_INDEX_COMPLETE } from '../../src/store/store.js';
import { eip, service, type Json, type ServiceOpts } from '../helpers/fixtures.js';
import { flushStore, send, serveAll, snapshot, withVersion, type ServedFunctions } from '../helpers/functions.js';
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

const pools = [
  eip({ name: 'pool', address: '198.51.100.10-198.51.100.19', isDefault: true }),
  eip({ name: 'pool-v6', address: '2001:db8::10-2001:db8::1f', isDefault: true }),
  eip({ name: 'pool-team', address: '203.0.113.0/28', namespaces: ['team'] }),
];

async function apply(...objects: Json[]): Promise<string[]> {
  const details: string[] = [];
  for (const o of objects) {
    const a = await send(fns, 'add', o);
    expect(a.status, `${String(o.kind)}: ${a.body}`).toBe(200);
    expect(a.outcome, a.detail).toBe('applied');
    details.push(a.detail ?? '');
  }
  return details;
}

async function ipsOf(...keys: string[]): Promise<Record<string, string | null>> {
  const state = await readState(fns.store);
  return Object.fromEntries(keys.map((k) => [k, state.services[k]?.ip ?? null]));
}

const svc = (o: ServiceOpts): Json => service(o);

describe('a store that lost the allocations', () => {
  it('gives two Services delivered in the order that would swap them each the address its status shows', async () => {
    await apply(...pools);
    // a shows .11 and b .10: the reverse of what a-then-b would get from the lowest free address.
    const details = await apply(svc({ name: 'a', ingress: ['198.51.100.11'] }), svc({ name: 'b', ingress: ['198.51.100.10'] }));
    expect(await ipsOf('default/a', 'default/b')).toEqual({ 'default/a': '198.51.100.11', 'default/b': '198.51.100.10' });
    expect(details[0]).toContain('198.51.100.11 from Eip pool (the address its status showed');
    // The second Service was allocated through the allocation index (complete after the first).
    const index = await fns.store.redis.zrange(fns.store.keys.allocationIndex(), 0, -1);
    expect(index.sort()).toEqual([ALLOCATION_INDEX_COMPLETE, '198.51.100.10', '198.51.100.11'].sort());

    // A later Service without a status takes the lowest free address, as before.
    await apply(svc({ name: 'c' }));
    expect((await ipsOf('default/c'))['default/c']).toBe('198.51.100.12');

    const e = explainService(await readSnapshot(fns.store), 'default/a');
    expect(e.origin).toEqual({ pool: 'pool', poolAddress: '198.51.100.10-198.51.100.19', requested: false, by: 'keptFromStatus', sharedWith: [] });
    expect(formatServiceExplanation(e)).toContain('IP 198.51.100.11: kept the address its status showed (the store had lost it');
    expect(explainService(await readSnapshot(fns.store), 'default/c').origin).toMatchObject({ requested: false, by: 'defaultPool' });

    // An update of the Service (its status written again) keeps the address and what explain says.
    await send(fns, 'update', withVersion(svc({ name: 'a', ingress: ['198.51.100.11'], labels: { app: 'a' } }), '2'));
    expect((await ipsOf('default/a'))['default/a']).toBe('198.51.100.11');
    expect(explainService(await readSnapshot(fns.store), 'default/a').origin?.by).toBe('keptFromStatus');
  });

  it('keeps every Service where it was after the store is emptied and the objects come back in reverse order', async () => {
    await apply(...pools);
    // A life before the loss: x, a and b allocated in turn, x deleted, statuses written by racklb.
    await apply(svc({ name: 'x' }), svc({ name: 'a' }), svc({ name: 'b' }));
    expect(await ipsOf('default/x', 'default/a', 'default/b')).toEqual({ 'default/x': '198.51.100.10', 'default/a': '198.51.100.11', 'default/b': '198.51.100.12' });
    await send(fns, 'delete', withVersion(svc({ name: 'x' }), '2'));
    const a = withVersion(svc({ name: 'a', ingress: ['198.51.100.11'] }), '3');
    const b = withVersion(svc({ name: 'b', ingress: ['198.51.100.12'] }), '4');
    await send(fns, 'update', a);
    await send(fns, 'update', b);
    const before = await readState(fns.store);

    // Redis restarted empty: the bridge sends every object again, in whatever order.
    await flushStore(fns.store);
    await apply(b, a, ...pools);
    const after = await readState(fns.store);
    expect(after.services).toEqual(before.services);
    expect(after.intents).toEqual(before.intents);
  });

  it('takes the address back once the pool arrives after the Services (they wait, then keep their own)', async () => {
    await apply(svc({ name: 'a', ingress: ['198.51.100.13'] }), svc({ name: 'b', ingress: ['198.51.100.10'] }));
    const waiting = await readState(fns.store);
    expect(waiting.services['default/a']?.pending).toContain('no default Eip');
    await apply(...pools);
    expect(await ipsOf('default/a', 'default/b')).toEqual({ 'default/a': '198.51.100.13', 'default/b': '198.51.100.10' });
  });

  it('does not take an address outside every pool the Service may use, nor one another Service holds', async () => {
    await apply(...pools);
    await apply(svc({ name: 'holder', requestedIp: '198.51.100.10' }));
    await apply(
      // Another namespace's pool, and no pool at all.
      svc({ name: 'outside', ingress: ['203.0.113.5', '192.0.2.50'] }),
      // The address its status shows is held: a status is not a request and joins nobody.
      svc({ name: 'late', ingress: ['198.51.100.10'] }),
    );
    expect(await ipsOf('default/outside', 'default/late', 'default/holder')).toEqual({ 'default/outside': '198.51.100.11', 'default/late': '198.51.100.12', 'default/holder': '198.51.100.10' });
    const holder = explainService(await readSnapshot(fns.store), 'default/holder');
    expect(holder.origin?.sharedWith).toEqual([]);
    // In its own namespace's pool the same kind of address is taken.
    await apply(svc({ name: 'inside', namespace: 'team', ingress: ['203.0.113.5'] }));
    expect((await ipsOf('team/inside'))['team/inside']).toBe('203.0.113.5');
  });

  it('keeps both families of a dual-stack Service', async () => {
    await apply(...pools);
    const dual = (name: string, ingress?: string[]): Json => svc({ name, ipFamilies: ['IPv6', 'IPv4'], ipFamilyPolicy: 'RequireDualStack', ingress });
    await apply(dual('d', ['2001:db8::13', '198.51.100.14']), dual('e'));
    const state = await readState(fns.store);
    expect(state.services['default/d']?.addresses?.map((x) => x.ip)).toEqual(['2001:db8::13', '198.51.100.14']);
    expect(state.services['default/e']?.addresses?.map((x) => x.ip)).toEqual(['2001:db8::10', '198.51.100.10']);
    const e = explainService(await readSnapshot(fns.store), 'default/d');
    expect(e.families?.map((f) => f.origin?.by)).toEqual(['keptFromStatus', 'keptFromStatus']);
  });

  it('refuses a malformed ingress ip with 400 naming the field, the store unchanged byte for byte', async () => {
    await apply(...pools, svc({ name: 'a', ingress: ['198.51.100.12'] }));
    const before = await snapshot(fns.store);
    for (const [action, object] of [
      ['update', withVersion(svc({ name: 'a', ingress: ['198.51.100.12', { hostname: 'lb.example.com' }, 'lb.example.com'] }), '2')],
      ['add', svc({ name: 'new', ingress: [{ ip: '198.51.100.300' }] })],
    ] as const) {
      const answer = await send(fns, action, object);
      expect(answer.status).toBe(400);
      const body = JSON.parse(answer.body) as { error: string; field?: string };
      expect(body.field).toBe(action === 'update' ? 'status.loadBalancer.ingress[2].ip' : 'status.loadBalancer.ingress[0].ip');
      expect(body.error).toContain('must be an IPv4 address');
    }
    expect(await snapshot(fns.store)).toBe(before);
  });
});
