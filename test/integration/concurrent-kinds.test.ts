/**
 * Transactions of different kinds run side by side: an Eip's, an EndpointSlice's and a Service's
 * event each in its own transaction, in one on-service process or in two replicas of it. Each
 * reads what the others write (a Local Service's route follows its slices; an Eip gives waiting
 * Services their addresses), so each must WATCH what it read: otherwise one that read before
 * another's EXEC overwrites that one's route intent with one computed without its change, and the
 * store holds every object yet a wrong route. Real redis-server, the real handlers; the races are
 * provoked many times, each on a fresh prefix, and every outcome must equal the sequential one.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { definition as onService } from '../../functions/on-service/handler.js';
import type { KubeAction, KubeEvent } from '../../src/events/codec.js';
import { runHandler, type FunctionDeps } from '../../src/serve/handler.js';
import { readState } from '../../src/state/read.js';
import { Store } from '../../src/store/store.js';
import { eip, endpointSlice, service, type Json } from '../helpers/fixtures.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
const stores: Store[] = [];
const logger = pino({ level: 'silent' });

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  for (const s of stores) await s.close();
  if (redis) await removeRedis(redis);
});

let eventId = 0;
function kubeEvent(action: KubeAction, object: Json): KubeEvent {
  eventId++;
  return { id: `e${eventId}`, source: 'test', type: `dev.knative.apiserver.resource.${action}`, time: undefined, action, object: structuredClone(object) };
}

/** Two replicas of on-service on one Redis, under one prefix. */
async function replicas(prefix: string): Promise<[FunctionDeps, FunctionDeps]> {
  const a = Store.open(redis.url, { prefix, failFast: true });
  const b = Store.open(redis.url, { prefix, failFast: true });
  stores.push(a, b);
  await Promise.all([a.connect(), b.connect()]);
  return [{ store: a, logger }, { store: b, logger }];
}

async function applied(deps: FunctionDeps, e: KubeEvent): Promise<void> {
  const h = await runHandler(onService, e, deps, 'test');
  expect(h.ok && h.outcome.outcome, JSON.stringify(h)).toBe('applied');
}

const ROUNDS = 150;

describe('an Eip and an EndpointSlice decided side by side', () => {
  it('give a waiting Local Service its address and the route through its endpoint, whatever their order', async () => {
    const wrong: unknown[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const [one, other] = await replicas(`race${round}`);
      // Waiting: no pool yet.
      await applied(one, kubeEvent('add', service({ name: 'b', requestedIp: '198.51.100.2', externalTrafficPolicy: 'Local' })));
      const pool = kubeEvent('add', eip({ name: 'pool', address: '198.51.100.0/28', isDefault: true }));
      const slice = kubeEvent('add', endpointSlice({ service: 'b', endpoints: [{ nodeName: 'n2' }] }));
      const lead = round % 3;
      await Promise.all([
        (async () => {
          if (lead === 1) await new Promise((r) => setImmediate(r));
          await applied(one, pool);
        })(),
        (async () => {
          if (lead === 2) await new Promise((r) => setImmediate(r));
          await applied(round % 2 === 0 ? other : one, slice);
        })(),
      ]);
      const state = await readState(one.store);
      const intent = state.intents['198.51.100.2'];
      if (JSON.stringify(intent?.nodes) !== JSON.stringify(['n2'])) wrong.push({ round, intent });
    }
    expect(wrong).toEqual([]);
  }, 120_000);

  it('give a Service that stops being Local the route of every node, while its EndpointSlice changes', async () => {
    const wrong: unknown[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const [one, other] = await replicas(`policy${round}`);
      await applied(one, kubeEvent('add', eip({ name: 'pool', address: '198.51.100.0/28', isDefault: true })));
      await applied(one, kubeEvent('add', service({ name: 'x', requestedIp: '198.51.100.3', externalTrafficPolicy: 'Local' })));
      await applied(one, kubeEvent('add', endpointSlice({ service: 'x', endpoints: [{ nodeName: 'n1' }] })));
      const cluster = kubeEvent('update', service({ name: 'x', requestedIp: '198.51.100.3', externalTrafficPolicy: 'Cluster', resourceVersion: '2' }));
      const moved = kubeEvent('update', endpointSlice({ service: 'x', resourceVersion: '2', endpoints: [{ nodeName: 'n2' }] }));
      const lead = round % 3;
      await Promise.all([
        (async () => {
          if (lead === 1) await new Promise((r) => setImmediate(r));
          await applied(one, cluster);
        })(),
        (async () => {
          if (lead === 2) await new Promise((r) => setImmediate(r));
          await applied(round % 2 === 0 ? other : one, moved);
        })(),
      ]);
      const intent = (await readState(one.store)).intents['198.51.100.3'];
      if (intent?.policy !== 'Cluster' || intent.nodes.length !== 0) wrong.push({ round, intent });
    }
    expect(wrong).toEqual([]);
  }, 120_000);
});
