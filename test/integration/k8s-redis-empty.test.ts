/**
 * Redis restarted empty under a running `racklb bridge` (issue 8): the speaker holds every route
 * (its empty-store guard), the bridge notices that the store lost the complete mark it set, sends
 * every object again from its informers, and marks the store complete only once it holds all of
 * them. Real pieces throughout: the test API server, redis-server, the three functions, the
 * bridge, a speaker and its gobgpd (on loopback, BGP not listening, the one peer passive, so
 * nothing leaves the machine). Both ways the bridge feeds the functions run it: over HTTP (the
 * functions as Knative serves them) and onto the Redis streams their consumers read (KEDA), whose
 * consumer groups go with the empty Redis. What is asserted is what a user sees: gobgpd's RIB,
 * the state, logs.
 */
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino, type Logger } from 'pino';
import { Registry } from 'prom-client';
import { Bridge } from '../../src/k8s/bridge.js';
import { Deliverer, type Target } from '../../src/k8s/deliver.js';
import { KubeApi } from '../../src/k8s/kube.js';
import { ResultSink } from '../../src/k8s/resync.js';
import { GobgpClient } from '../../src/gobgp/client.js';
import { FUNCTIONS } from '../../src/functions.js';
import { consumeStream } from '../../src/serve/stream.js';
import { readState, type StateDocument } from '../../src/state/read.js';
import { Store } from '../../src/store/store.js';
import { createSpeakerMetrics, type SpeakerMetrics } from '../../speaker/metrics.js';
import { Speaker } from '../../speaker/speaker.js';
import { bgpConf, bgpPeer, eip, endpointSlice, node, service, type Json } from '../helpers/fixtures.js';
import { serveAll } from '../helpers/functions.js';
import { startGobgpd, type RunningGobgpd } from '../helpers/gobgpd.js';
import { startKubeApi, type FakeKubeApi } from '../helpers/kube-api.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

/**
 * Service a requests no IP: it holds 198.51.100.1 because its status shows it (as the status writer
 * of an earlier racklb left it), not the lowest free 198.51.100.0, on every store built from empty.
 */
const A = '198.51.100.1/32';
const B = '198.51.100.2/32';
const N1 = '192.0.2.11';
const N2 = '192.0.2.12';
/** What the speaker on n1 announces: A through both nodes of its rack, B (Local) through n2 only. */
const EXPECTED = [`${A} via ${N1}`, `${A} via ${N2}`, `${B} via ${N2}`];

/** The three functions, however the bridge reaches them, and a store to read what they wrote. */
interface RunningFunctions {
  store: Store;
  target(bridgeStore: Store): Target;
  close(): Promise<void>;
}

/** As `racklb serve <fn> --from-stream` runs each of them: a consumer of its stream, its store failing fast. */
async function consumeAll(redisUrl: string): Promise<RunningFunctions> {
  const store = Store.open(redisUrl, { failFast: true });
  await store.connect();
  const stop = new AbortController();
  const logger = pino({ level: 'silent' });
  const running = Object.values(FUNCTIONS).map((def) => consumeStream(def, { store, logger }, { consumer: `pod-${def.name}`, signal: stop.signal, blockMs: 200 }));
  return {
    store,
    target: (bridgeStore) => ({ type: 'streams', store: bridgeStore }),
    async close() {
      stop.abort();
      await Promise.all(running);
      await store.close();
    },
  };
}

async function serveOverHttp(redisUrl: string): Promise<RunningFunctions> {
  const served = await serveAll(redisUrl);
  return { store: served.store, target: () => ({ type: 'functions', urls: served.urls }), close: () => served.close() };
}

let redis: TestRedis | undefined;
let fns: RunningFunctions | undefined;
let kube: FakeKubeApi | undefined;
let gobgpd: RunningGobgpd | undefined;
let speakerStore: Store | undefined;
let bridgeStore: Store | undefined;
let speakerGobgp: GobgpClient | undefined;
let reader: GobgpClient | undefined;
let speaker: Speaker | undefined;
let bridge: Bridge | undefined;
let speakerMetrics: SpeakerMetrics;
let registry: Registry;
let speakerLog: string[] = [];
let bridgeLog: string[] = [];
/** Called with every bridge log line as it is written: lets a test act at an exact step of the bridge. */
let onBridgeLine: ((line: string) => void) | undefined;

function capture(lines: string[], onLine?: (line: string) => void): Logger {
  return pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
          lines.push(line);
          onLine?.(line);
        }
        done();
      },
    }),
  );
}

/** Objects as a user creates them: the API server assigns uid and resourceVersion. */
function fresh(o: Json): Json {
  const copy = structuredClone(o);
  const meta = copy.metadata as Json;
  delete meta.uid;
  delete meta.resourceVersion;
  return copy;
}

async function rib(): Promise<string[]> {
  const paths = await (reader as GobgpClient).listPaths('ipv4');
  return paths.map((p) => `${p.prefix} via ${p.nextHop}`).sort();
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function metric(reg: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await reg.getMetricsAsJSON()).find((x) => x.name === name);
  const values = (m?.values ?? []) as { value: number; labels: Record<string, string | number> }[];
  return values.filter((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want)).reduce((s, v) => s + v.value, 0);
}

interface Sampler {
  stop(): Promise<{ samples: number; bad: { at: number; missing: string[] }[] }>;
}
/** The samplers running: stopped before gobgpd and Redis go, even when the test failed. */
const sampling = new Set<{ stop(): Promise<unknown> }>();

/** Reads gobgpd's RIB every 50 ms and keeps every read that lacks an expected path (or failed). */
function sampleRib(expected: readonly string[]): Sampler {
  let running = true;
  let samples = 0;
  const bad: { at: number; missing: string[] }[] = [];
  const started = Date.now();
  const loop = (async () => {
    while (running) {
      const held = await rib().then(
        (paths) => new Set(paths),
        (err: unknown) => new Set([`unreadable: ${String(err)}`]),
      );
      samples++;
      const missing = expected.filter((p) => !held.has(p));
      if (missing.length > 0) bad.push({ at: Date.now() - started, missing });
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const sampler: Sampler = {
    async stop() {
      running = false;
      await loop;
      sampling.delete(sampler);
      return { samples, bad };
    },
  };
  sampling.add(sampler);
  return sampler;
}

/**
 * Reads the state every 50 ms and keeps every read of a store marked complete that differs from
 * `whole`: the bridge must never vouch for a store lacking anything. A read counts only when the
 * generation and the mark are the same before and after it (one Redis throughout).
 */
function watchCompleteness(whole: StateDocument): { stop(): Promise<{ checked: number; wrong: unknown[] }> } {
  const store = (fns as RunningFunctions).store;
  const meta = async (): Promise<string> => JSON.stringify(await store.redis.hmget(store.keys.meta(), 'generation', 'complete'));
  let running = true;
  let checked = 0;
  const wrong: unknown[] = [];
  const expected = JSON.stringify(lasting(whole));
  const loop = (async () => {
    while (running) {
      try {
        const before = await meta();
        const s = await readState(store);
        if (s.complete && (await meta()) === before) {
          checked++;
          if (JSON.stringify(lasting(s)) !== expected) wrong.push(lasting(s));
        }
      } catch {
        // Redis away: nothing to read.
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const watcher = {
    async stop() {
      running = false;
      await loop;
      sampling.delete(watcher);
      return { checked, wrong };
    },
  };
  sampling.add(watcher);
  return watcher;
}

/** Kills Redis and starts it again, empty, on the same socket. */
async function restartEmpty(): Promise<void> {
  await (redis as TestRedis).stop();
  await new Promise((r) => setTimeout(r, 500));
  await (redis as TestRedis).start({ empty: true });
}

/** Resolves once the store is marked complete under a generation not in `old`, the state equal to `whole`, and the speaker trusts it. */
async function refilled(whole: StateDocument, old: readonly (string | null)[]): Promise<StateDocument> {
  const after = await eventually(
    'the bridge to fill the store again and mark it complete',
    async () => {
      const s = await readState((fns as RunningFunctions).store);
      return s.complete && !old.includes(s.generation) ? s : undefined;
    },
    30_000,
  );
  expect(lasting(after)).toEqual(lasting(whole));
  await eventually('the speaker to trust the store again', async () => ((await speakerMetrics.holding.get()).values[0]?.value === 0 ? true : undefined));
  await (speaker as Speaker).idle();
  // A few more reads after the speaker reconciled against the complete store.
  await new Promise((r) => setTimeout(r, 1000));
  return after;
}

/** Everything a user reads in `racklb state` that must survive: not the generation, revision or session reports. */
function lasting(s: StateDocument): Omit<StateDocument, 'generation' | 'revision' | 'sessions'> {
  const { generation: _g, revision: _r, sessions: _s, ...rest } = s;
  return rest;
}

describe.each([
  { delivery: 'functions over HTTP (Knative)', start: serveOverHttp },
  { delivery: 'the functions\' Redis streams (KEDA)', start: consumeAll },
])('Redis restarted empty under a running bridge delivering to $delivery', ({ start }) => {
  beforeAll(async () => {
    registry = new Registry();
    speakerLog = [];
    bridgeLog = [];
    redis = await startRedis();
    fns = await start(redis.url);
    kube = await startKubeApi();
    gobgpd = await startGobgpd();

    for (const o of [
      node({ name: 'n1', ip: N1, rack: 'leaf1', speaker: true }),
      node({ name: 'n2', ip: N2, rack: 'leaf1' }),
      bgpConf({ as: 65100, listenPort: -1 }),
      // Passive: gobgpd never dials 192.0.2.1, so nothing leaves loopback.
      bgpPeer({ name: 'peer-leaf1', peerAs: 65001, neighborAddress: '192.0.2.1', rack: 'leaf1', spec: { transport: { passiveMode: true } } }),
      eip({ name: 'pool', address: '198.51.100.0/28', isDefault: true }),
      service({ name: 'a' }),
      service({ name: 'b', requestedIp: '198.51.100.2', externalTrafficPolicy: 'Local' }),
      endpointSlice({ service: 'b', endpoints: [{ nodeName: 'n2' }] }),
    ]) {
      kube.apply(fresh(o));
    }
    // Through the status subresource, as the status writer writes it (it does not run here).
    kube.setStatus('Service', 'a', 'default', { loadBalancer: { ingress: [{ ip: '198.51.100.1' }] } });

    // As `racklb bridge` opens its store: commands fail fast while Redis is away.
    bridgeStore = Store.open(redis.url, { failFast: true, connectionName: 'racklb-bridge' });
    await bridgeStore.connect();
    const api = new KubeApi({ kubeconfig: kube.kubeconfig, requestTimeoutMs: 5000 });
    const sink = new ResultSink();
    const bridgeLogger = capture(bridgeLog, (line) => onBridgeLine?.(line));
    const deliverer = new Deliverer({ target: fns.target(bridgeStore), source: api.server, logger: bridgeLogger, registry, backoffMs: 50, maxBackoffMs: 500, onResult: sink.handle });
    // The bridge checks the store every 2.5 s, more than twice the clients' longest reconnect backoff
    // (1 s): the speaker reads the empty store before the bridge refills it, so the hold is exercised.
    bridge = new Bridge({ api, deliverer, logger: bridgeLogger, registry, store: bridgeStore, sink, restartBackoffMs: 50, convergenceTimeoutMs: 20_000, storeCheckMs: 2_500 });
    const first = bridge.start();
    first.catch(() => undefined);
    expect(await first).toEqual({ deleted: 0, markedComplete: true });

    // As `racklb speaker` opens its store: commands wait for Redis to come back.
    speakerStore = Store.open(redis.url, { connectionName: 'racklb-speaker-n1' });
    await speakerStore.connect();
    speakerGobgp = new GobgpClient(gobgpd.apiAddress);
    reader = new GobgpClient(gobgpd.apiAddress);
    speakerMetrics = createSpeakerMetrics();
    speaker = new Speaker({
      node: 'n1',
      store: speakerStore,
      gobgp: speakerGobgp,
      logger: capture(speakerLog),
      metrics: speakerMetrics,
      localAddresses: () => [{ address: N1, prefixLength: 24, family: 'ipv4' }],
      statusIntervalMs: 500,
    });
    await speaker.start();
  }, 60_000);

  afterAll(async () => {
    // Each step runs even when an earlier one fails: no process may outlive the file.
    const steps: (() => Promise<unknown> | void)[] = [
      () => Promise.all([...sampling].map((x) => x.stop())),
      () => bridge?.stop(),
      () => speaker?.stop(),
      () => speakerGobgp?.close(),
      () => reader?.close(),
      () => speakerStore?.close(),
      () => bridgeStore?.close(),
      () => fns?.close(),
      () => kube?.close(),
      () => gobgpd?.stop(),
      () => (redis ? removeRedis(redis) : undefined),
    ];
    for (const step of steps) await Promise.resolve().then(step).catch(() => undefined);
  }, 60_000);

  it('holds every path while the bridge fills the store again, marks it complete only then, and withdraws again afterwards', async () => {
    await eventually('the speaker to announce every path', async () => ((await rib()).join() === [...EXPECTED].sort().join() ? true : undefined));
    const before = await readState((fns as RunningFunctions).store);
    expect(before.complete).toBe(true);
    expect(before.intents['198.51.100.1']).toBeDefined();
    expect(before.services['default/a']?.ip).toBe('198.51.100.1');

    const sampler = sampleRib(EXPECTED);
    const checker = watchCompleteness(before);
    await restartEmpty();
    const after = await refilled(before, [before.generation]);
    // Its status, not an arrival order, gave a its address again: 198.51.100.0 stayed free.
    expect(after.services['default/a']?.ip).toBe('198.51.100.1');
    expect(after.intents['198.51.100.0']).toBeUndefined();
    const { samples, bad } = await sampler.stop();
    const { checked, wrong } = await checker.stop();

    expect(samples).toBeGreaterThan(20);
    expect(bad).toEqual([]);
    expect(checked).toBeGreaterThan(0);
    expect(wrong).toEqual([]);
    expect(await metric(registry, 'racklb_bridge_store_resyncs_total', { reason: 'store_lost' })).toBe(1);
    expect(bridgeLog.some((l) => l.includes('store lost the state the bridge marked complete'))).toBe(true);
    expect(bridgeLog.some((l) => l.includes('full resync done: store marked complete'))).toBe(true);
    // The speaker did hold: the new store was not complete when it first read it.
    expect(speakerLog.some((l) => l.includes('store is not marked complete (restarted empty?)'))).toBe(true);

    // The guard is released: deleting a Service withdraws its paths, and only those.
    (kube as FakeKubeApi).remove('Service', 'a', 'default');
    await eventually('the deleted Service to be withdrawn', async () => ((await rib()).join() === [`${B} via ${N2}`].join() ? true : undefined));
  }, 60_000);

  it('never marks a Redis that restarted empty again while the bridge was filling it: it starts over', async () => {
    const remaining = [`${B} via ${N2}`];
    const before = await readState((fns as RunningFunctions).store);
    expect(before.complete).toBe(true);
    const resyncsBefore = await metric(registry, 'racklb_bridge_store_resyncs_total');
    const sampler = sampleRib(remaining);
    const checker = watchCompleteness(before);

    // The second restart comes the moment the bridge has sent everything to the first new Redis.
    let second: Promise<{ generation: string | null }> | undefined;
    const generations: (string | null)[] = [before.generation];
    onBridgeLine = (line) => {
      if (second !== undefined || !line.includes('full resync: objects sent')) return;
      second = (async () => {
        const [generation] = await (fns as RunningFunctions).store.redis.hmget((fns as RunningFunctions).store.keys.meta(), 'generation').catch(() => [null]);
        await restartEmpty();
        return { generation: generation ?? null };
      })();
    };
    try {
      await restartEmpty();
      await eventually('the bridge to start filling the new Redis', async () => second);
    } finally {
      onBridgeLine = undefined;
    }
    generations.push((await (second as Promise<{ generation: string | null }>)).generation);
    await refilled(before, generations);
    const { samples, bad } = await sampler.stop();
    const { checked, wrong } = await checker.stop();

    expect(samples).toBeGreaterThan(20);
    expect(bad).toEqual([]);
    expect(checked).toBeGreaterThan(0);
    expect(wrong).toEqual([]);
    expect(bridgeLog.some((l) => l.includes('full resync: Redis was replaced while the bridge waited for it'))).toBe(true);
    expect(await metric(registry, 'racklb_bridge_store_resyncs_total')).toBeGreaterThanOrEqual(resyncsBefore + 2);

    // Still following changes, and trusted: a delete is withdrawn.
    (kube as FakeKubeApi).remove('Service', 'b', 'default');
    await eventually('the deleted Service to be withdrawn', async () => ((await rib()).length === 0 ? true : undefined));
  }, 60_000);
});
