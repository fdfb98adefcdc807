/**
 * on-service finds the lowest free address of an IPv4 pool in an index of allocated addresses
 * (Keys.allocationIndex) instead of reading every allocation. Held to the reference: random histories
 * of Service adds, updates and deletes go through the real handler and Redis, and after every event
 * the stored IPs equal what `allocate` over the whole allocation table gives.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allocate } from '../../src/core/ipam.js';
import { parseEip, parseService } from '../../src/core/objects.js';
import type { Allocation } from '../../src/core/types.js';
import { ALLOCATION_INDEX_COMPLETE } from '../../src/store/store.js';
import { eip, service, uidFor } from '../helpers/fixtures.js';
import { flushStore, send, serveAll, type ServedFunctions } from '../helpers/functions.js';
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

const eipObjects = [
  eip({ name: 'd', address: '192.0.2.0/29', isDefault: true }),
  eip({ name: 'n', address: '198.51.100.0/30', namespaces: ['team'] }),
  eip({ name: 'm', address: '198.51.100.8/30', namespaces: ['team'], priority: 1 }),
  eip({ name: 'six', address: '2001:db8::/126', namespaces: ['six'] }),
];
const pools = eipObjects.map((o) => parseEip(o));

const arbStep = fc.record({
  name: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'),
  namespace: fc.constantFrom('default', 'team', 'six'),
  requestedIp: fc.option(fc.constantFrom('192.0.2.1', '192.0.2.3', '198.51.100.1', '2001:db8::2'), { nil: undefined }),
  pool: fc.option(fc.constantFrom('d', 'n', 'm'), { nil: undefined }),
  managed: fc.oneof(fc.constant(true), fc.constant(true), fc.constant(false)),
  // The status may show an address: taken back before the search when free (an index-path answer too).
  ingress: fc.option(fc.uniqueArray(fc.constantFrom('192.0.2.0', '192.0.2.3', '192.0.2.6', '198.51.100.2', '198.51.100.9', '2001:db8::3', '203.0.113.1'), { maxLength: 2 }), { nil: undefined }),
  remove: fc.boolean(),
});

describe('allocation index', () => {
  it('gives every Service the address allocate gives over the whole table', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(arbStep, { minLength: 1, maxLength: 30 }), async (steps) => {
        await flushStore(fns.store);
        for (const o of eipObjects) expect((await send(fns, 'add', o)).status).toBe(200);
        // The model: what the handler did before the index, over every allocation.
        const table = new Map<string, Allocation>();
        const svcIp = new Map<string, string>();
        const incarnation = new Map<string, number>();
        let rv = 100;
        for (const step of steps) {
          const key = `${step.namespace}/${step.name}`;
          const live = svcIp.has(key) || incarnation.has(`${key}#live`);
          const uid = uidFor('Service', `${step.name}-${incarnation.get(key) ?? 0}`, step.namespace);
          const object = service({ name: step.name, namespace: step.namespace, requestedIp: step.requestedIp, pool: step.pool, managed: step.managed, ipFamilies: step.namespace === 'six' ? ['IPv6'] : ['IPv4'], ingress: step.ingress, uid, resourceVersion: String(rv++) });
          if (step.remove && !live) continue;
          const answer = await send(fns, step.remove ? 'delete' : live ? 'update' : 'add', object);
          expect(answer.status, answer.body).toBe(200);
          expect(answer.outcome, answer.detail).toBe('applied');
          if (step.remove) {
            incarnation.set(key, (incarnation.get(key) ?? 0) + 1);
            incarnation.delete(`${key}#live`);
          } else incarnation.set(`${key}#live`, 1);

          const current = svcIp.get(key);
          const currentAllocation = current === undefined ? undefined : table.get(current);
          if (current !== undefined && currentAllocation) {
            const rest = currentAllocation.services.filter((s) => s !== key);
            // Who took an address back from its status is remembered only while it holds it.
            const { fromStatus, ...rest0 } = currentAllocation;
            if (rest.length === 0) table.delete(current);
            else table.set(current, { ...rest0, services: rest, ...(fromStatus !== undefined && fromStatus !== key ? { fromStatus } : {}) });
          }
          const record = step.remove ? undefined : parseService(object);
          const r = record?.managed ? allocate(record, pools, [...table.values()], currentAllocation) : undefined;
          if (r?.ok) {
            const fromStatus = r.fromStatus ? key : table.get(r.ip)?.fromStatus;
            table.set(r.ip, { ip: r.ip, pool: r.pool, services: [...new Set([...(table.get(r.ip)?.services ?? []), key])].sort(), ...(fromStatus !== undefined ? { fromStatus } : {}) });
            svcIp.set(key, r.ip);
          } else svcIp.delete(key);

          const k = fns.store.keys;
          expect(await fns.store.redis.hgetall(k.serviceIps())).toEqual(Object.fromEntries(svcIp));
          const stored = Object.fromEntries(Object.entries(await fns.store.redis.hgetall(k.allocations())).map(([ip, json]) => [ip, JSON.parse(json) as Allocation]));
          expect(stored).toEqual(Object.fromEntries(table));
          // Once complete, the index holds exactly the IPv4 allocations.
          const index = await fns.store.redis.zrange(k.allocationIndex(), 0, -1);
          if (index.includes(ALLOCATION_INDEX_COMPLETE)) expect(index.filter((m) => m !== ALLOCATION_INDEX_COMPLETE).sort()).toEqual([...table.keys()].filter((ip) => !ip.includes(':')).sort());
        }
      }),
      { numRuns: 40 },
    );
  }, 120_000);

  it('gives the lowest free address of a pool as it is now, after the pool moved', async () => {
    await flushStore(fns.store);
    const k = fns.store.keys;
    const pool = eip({ name: 'd', address: '192.0.2.0/29', isDefault: true, resourceVersion: '1' });
    expect((await send(fns, 'add', pool)).status).toBe(200);
    expect((await send(fns, 'add', service({ name: 'a', uid: uidFor('Service', 'a', 'default'), resourceVersion: '10' }))).detail).toContain('192.0.2.0 from Eip d');
    // The function last read the pool at 192.0.2.0/29: a Service add asks for the lowest free
    // addresses before it knows the pool moved, and must not take them.
    const moved = eip({ name: 'd', address: '192.0.2.8/29', isDefault: true, resourceVersion: '2' });
    expect((await send(fns, 'update', moved)).outcome).toBe('applied');
    expect(await fns.store.redis.hget(k.serviceIps(), 'default/a')).toBe('192.0.2.8');
    const answer = await send(fns, 'add', service({ name: 'b', uid: uidFor('Service', 'b', 'default'), resourceVersion: '11' }));
    expect(answer.detail).toContain('192.0.2.9 from Eip d');
    expect(await fns.store.redis.hgetall(k.serviceIps())).toEqual({ 'default/a': '192.0.2.8', 'default/b': '192.0.2.9' });
  });

  it('replaces a route intent left at a free address when the address is given out, and tells the speakers', async () => {
    await flushStore(fns.store);
    const k = fns.store.keys;
    expect((await send(fns, 'add', eip({ name: 'd', address: '192.0.2.0/29', isDefault: true }))).status).toBe(200);
    // Not written by racklb: a restore or a hand edit left it behind, with no allocation under it.
    const leftover = { ip: '192.0.2.0', family: 'ipv4', services: ['default/ghost'], policy: 'Local', nodes: ['gone'] };
    await fns.store.redis.hset(k.intents(), '192.0.2.0', JSON.stringify(leftover));
    const before = (await fns.store.redis.xrevrange(k.changes(), '+', '-', 'COUNT', 1))[0]?.[0] ?? '0-0';

    const answer = await send(fns, 'add', service({ name: 'b', uid: uidFor('Service', 'b', 'default'), resourceVersion: '7' }));
    expect(answer.outcome, answer.detail).toBe('applied');
    expect(answer.detail).toContain('192.0.2.0 from Eip d');
    const stored = JSON.parse((await fns.store.redis.hget(k.intents(), '192.0.2.0')) ?? 'null') as unknown;
    expect(stored).toEqual({ ip: '192.0.2.0', family: 'ipv4', services: ['default/b'], policy: 'Cluster', nodes: [] });
    const told = (await fns.store.redis.xrange(k.changes(), `(${before}`, '+')).map(([, fields]) => Object.fromEntries(fields.flatMap((f, i) => (i % 2 === 0 ? [[f, fields[i + 1]]] : []))) as Record<string, string>);
    expect(told.filter((f) => f.topic === 'intent' && f.subject === '192.0.2.0').map((f) => JSON.parse(f.intent ?? 'null') as unknown)).toEqual([stored]);
  });
});
