/**
 * How a speaker follows the change stream: an intent's entry carries the intent, a next hop's entry
 * the node's candidate, as the transaction wrote them, so the speaker need not read them back; an
 * entry an older racklb wrote without the value is still followed (the speaker reads). Real pieces:
 * redis-server, the three functions over HTTP, a speaker and its gobgpd (on loopback, BGP not
 * listening, the one peer passive).
 */
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { GobgpClient } from '../../src/gobgp/client.js';
import { markComplete } from '../../src/state/complete.js';
import { Store } from '../../src/store/store.js';
import { createSpeakerMetrics } from '../../speaker/metrics.js';
import { Speaker } from '../../speaker/speaker.js';
import { bgpConf, bgpPeer, eip, node, service } from '../helpers/fixtures.js';
import { send, serveAll, type ServedFunctions } from '../helpers/functions.js';
import { startGobgpd, type RunningGobgpd } from '../helpers/gobgpd.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

const N1 = '192.0.2.11';
const N2 = '192.0.2.12';

let redis: TestRedis | undefined;
let fns: ServedFunctions | undefined;
let gobgpd: RunningGobgpd | undefined;
let speakerStore: Store | undefined;
let speakerGobgp: GobgpClient | undefined;
let reader: GobgpClient | undefined;
let speaker: Speaker | undefined;
const speakerLog: string[] = [];

async function rib(): Promise<string[]> {
  const paths = await (reader as GobgpClient).listPaths('ipv4');
  return paths.map((p) => `${p.prefix} via ${p.nextHop}`).sort();
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; gobgpd holds ${(await rib().catch(() => [])).join(', ') || 'nothing'}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function ribIs(expected: string[]): Promise<void> {
  const want = [...expected].sort().join();
  await eventually(`gobgpd to hold ${expected.join(', ') || 'nothing'}`, async () => ((await rib()).join() === want ? true : undefined));
}

/** The change stream's entries, newest last, as field maps. */
async function entries(store: Store): Promise<Record<string, string>[]> {
  const raw = await store.redis.xrange(store.keys.changes(), '-', '+');
  return raw.map(([, fields]) => {
    const out: Record<string, string> = {};
    for (let i = 0; i + 1 < fields.length; i += 2) out[fields[i] as string] = fields[i + 1] as string;
    return out;
  });
}

async function applied(action: 'add' | 'update' | 'delete', o: Record<string, unknown>): Promise<void> {
  const answer = await send(fns as ServedFunctions, action, o);
  expect(answer.outcome, answer.detail ?? answer.body).toBe('applied');
}

describe('a speaker following the change stream', () => {
  beforeAll(async () => {
    redis = await startRedis();
    fns = await serveAll(redis.url);
    gobgpd = await startGobgpd();
    for (const o of [
      node({ name: 'n1', ip: N1, rack: 'leaf1', speaker: true }),
      node({ name: 'n2', ip: N2, rack: 'leaf1' }),
      bgpConf({ as: 65100, listenPort: -1 }),
      // Passive: gobgpd never dials 192.0.2.1, so nothing leaves loopback.
      bgpPeer({ name: 'peer-leaf1', peerAs: 65001, neighborAddress: '192.0.2.1', rack: 'leaf1', spec: { transport: { passiveMode: true } } }),
      eip({ name: 'pool', address: '198.51.100.0/28', isDefault: true }),
    ]) {
      await applied('add', o);
    }
    await markComplete(fns.store);

    speakerStore = Store.open(redis.url, { connectionName: 'racklb-speaker-n1' });
    await speakerStore.connect();
    speakerGobgp = new GobgpClient(gobgpd.apiAddress);
    reader = new GobgpClient(gobgpd.apiAddress);
    const logger = pino(
      { level: 'info' },
      new Writable({
        write(chunk: Buffer, _enc, done) {
          speakerLog.push(...chunk.toString('utf8').split('\n').filter(Boolean));
          done();
        },
      }),
    );
    speaker = new Speaker({ node: 'n1', store: speakerStore, gobgp: speakerGobgp, logger, metrics: createSpeakerMetrics(), localAddresses: () => [{ address: N1, prefixLength: 24, family: 'ipv4' }] });
    await speaker.start();
  }, 60_000);

  afterAll(async () => {
    // Each step runs even when an earlier one fails: no process may outlive the file.
    const steps: (() => Promise<unknown> | void)[] = [
      () => speaker?.stop(),
      () => speakerGobgp?.close(),
      () => reader?.close(),
      () => speakerStore?.close(),
      () => fns?.close(),
      () => gobgpd?.stop(),
      () => (redis ? removeRedis(redis) : undefined),
    ];
    for (const step of steps) await Promise.resolve().then(step).catch(() => undefined);
  }, 60_000);

  it('an intent entry carries the intent as its transaction left it, and nothing once it is removed', async () => {
    const store = (fns as ServedFunctions).store;
    await applied('add', service({ name: 'a', requestedIp: '198.51.100.5' }));
    await ribIs([`198.51.100.5/32 via ${N1}`, `198.51.100.5/32 via ${N2}`]);
    const added = (await entries(store)).filter((e) => e.topic === 'intent' && e.subject === '198.51.100.5');
    expect(added).toHaveLength(1);
    expect(added[0]?.intent).toBe(await store.redis.hget(store.keys.intents(), '198.51.100.5'));
    expect(JSON.parse(added[0]?.intent ?? '')).toMatchObject({ ip: '198.51.100.5', services: ['default/a'], policy: 'Cluster' });

    await applied('delete', service({ name: 'a', requestedIp: '198.51.100.5' }));
    await ribIs([]);
    const removed = (await entries(store)).filter((e) => e.topic === 'intent' && e.subject === '198.51.100.5');
    expect(removed).toHaveLength(2);
    expect(removed[1]?.intent).toBe('');
  }, 30_000);

  it('follows an intent entry written without the intent (an older racklb) by reading the intent', async () => {
    const store = (fns as ServedFunctions).store;
    const k = store.keys;
    const intent = { ip: '198.51.100.9', family: 'ipv4', services: ['default/old'], policy: 'Cluster', nodes: [] };
    // What an older racklb's transaction wrote: the intent, then an entry naming only its IP.
    const rev = Number(await store.redis.hget(k.meta(), 'rev')) + 1;
    await store.redis
      .multi()
      .hset(k.intents(), intent.ip, JSON.stringify(intent))
      .hset(k.meta(), 'rev', String(rev))
      .xadd(k.changes(), '*', 'rev', String(rev), 'scope', 'all', 'topic', 'intent', 'subject', intent.ip)
      .exec();
    await ribIs([`198.51.100.9/32 via ${N1}`, `198.51.100.9/32 via ${N2}`]);
    // Followed as a change, not by reloading everything.
    expect(speakerLog.some((l) => l.includes('gap in change notifications'))).toBe(false);

    await store.redis
      .multi()
      .hdel(k.intents(), intent.ip)
      .hset(k.meta(), 'rev', String(rev + 1))
      .xadd(k.changes(), '*', 'rev', String(rev + 1), 'scope', 'all', 'topic', 'intent', 'subject', intent.ip)
      .exec();
    await ribIs([]);
    expect(speakerLog.some((l) => l.includes('gap in change notifications'))).toBe(false);
  }, 30_000);

  it("takes a node's next hop from its entry: NotReady leaves gobgpd, Ready comes back; an entry without it is read", async () => {
    const store = (fns as ServedFunctions).store;
    const k = store.keys;
    const both = [`198.51.100.7/32 via ${N1}`, `198.51.100.7/32 via ${N2}`];
    await applied('add', service({ name: 'steady', requestedIp: '198.51.100.7' }));
    await ribIs(both);

    await applied('update', node({ name: 'n2', ip: N2, rack: 'leaf1', ready: false, resourceVersion: '10' }));
    await ribIs([`198.51.100.7/32 via ${N1}`]);
    const hop = async (): Promise<Record<string, string> | undefined> => (await entries(store)).filter((e) => e.topic === 'nexthops' && e.subject === 'n2').at(-1);
    expect((await hop())?.nexthop).toBe('');
    await applied('update', node({ name: 'n2', ip: N2, rack: 'leaf1', ready: true, resourceVersion: '11' }));
    await ribIs(both);
    expect((await hop())?.nexthop).toBe(await store.redis.hget(k.rackNextHops('leaf1'), 'n2'));
    expect(JSON.parse((await hop())?.nexthop ?? '')).toMatchObject({ node: 'n2' });

    // An older racklb's NotReady: the candidate removed, an entry naming only the node.
    const candidate = (await store.redis.hget(k.rackNextHops('leaf1'), 'n2')) as string;
    const oldStyle = async (write: (m: ReturnType<typeof store.redis.multi>) => void): Promise<void> => {
      const rev = Number(await store.redis.hget(k.meta(), 'rev')) + 1;
      const m = store.redis.multi();
      write(m);
      await m.hset(k.meta(), 'rev', String(rev)).xadd(k.changes(), '*', 'rev', String(rev), 'scope', 'rack:leaf1', 'topic', 'nexthops', 'subject', 'n2').exec();
    };
    await oldStyle((m) => m.hdel(k.rackNextHops('leaf1'), 'n2'));
    await ribIs([`198.51.100.7/32 via ${N1}`]);
    await oldStyle((m) => m.hset(k.rackNextHops('leaf1'), 'n2', candidate));
    await ribIs(both);
    expect(speakerLog.some((l) => l.includes('gap in change notifications'))).toBe(false);

    await applied('delete', service({ name: 'steady', requestedIp: '198.51.100.7' }));
    await ribIs([]);
  }, 30_000);

  it('announces every Service of a burst of adds, and withdraws them all after a burst of deletes', async () => {
    const objects = Array.from({ length: 40 }, (_, i) => service({ name: `burst-${i}`, requestedIp: `198.51.100.${(i % 14) + 1}`, namespace: `ns${Math.floor(i / 14)}` }));
    // Three namespaces share each address: 14 IPs for 40 Services, each Service event changes one.
    await Promise.all(objects.map((o) => applied('add', o)));
    await ribIs(Array.from({ length: 14 }, (_, i) => [`198.51.100.${i + 1}/32 via ${N1}`, `198.51.100.${i + 1}/32 via ${N2}`]).flat());
    await Promise.all(objects.map((o) => applied('delete', o)));
    await ribIs([]);
  }, 60_000);
});
