/**
 * `racklb bridge` against the test API server (test/helpers/kube-api.ts), a real redis-server and
 * the real functions: objects that exist at start are delivered, changes after that follow, an
 * expired watch relists and converges, and every event is ApiServerSource's, attribute for
 * attribute.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { request } from 'undici';
import { Bridge } from '../../src/k8s/bridge.js';
import { Deliverer, type Target } from '../../src/k8s/deliver.js';
import { KubeApi } from '../../src/k8s/kube.js';
import { resync, ResultSink } from '../../src/k8s/resync.js';
import { consumeStream } from '../../src/serve/stream.js';
import { FUNCTIONS } from '../../src/functions.js';
import { readState } from '../../src/state/read.js';
import { Store } from '../../src/store/store.js';
import { bgpConf, bgpPeer, eip, endpointSlice, node, porterLbExample, service, type Json } from '../helpers/fixtures.js';
import { serveAll, send, type ServedFunctions } from '../helpers/functions.js';
import { cli, spawnCli } from '../helpers/cli.js';
import { startKubeApi, type FakeKubeApi } from '../helpers/kube-api.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

const logger = pino({ level: 'silent' });
let redis: TestRedis;
let fns: ServedFunctions;
let kube: FakeKubeApi;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  redis = await startRedis();
  fns = await serveAll(redis.url);
});

afterAll(async () => {
  await fns?.close();
  if (redis) await removeRedis(redis);
});

beforeEach(async () => {
  await fns.store.redis.flushall();
  kube = await startKubeApi();
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await kube?.close();
});

/** Objects as a user creates them: the API server assigns uid and resourceVersion. */
function fresh(o: Json): Json {
  const copy = structuredClone(o);
  const meta = copy.metadata as Json;
  delete meta.uid;
  delete meta.resourceVersion;
  return copy;
}

function seedExample(): void {
  const ex = porterLbExample();
  for (const o of [...ex.nodes, ex.conf, ...ex.peers, ex.eip, ex.service, ex.slice]) kube.apply(fresh(o));
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
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

async function startBridge(target: Target, opts: { store?: Store | null; registry?: Registry } = {}): Promise<{ bridge: Bridge; registry: Registry; first: Promise<{ deleted: number; markedComplete: boolean }> }> {
  const api = new KubeApi({ kubeconfig: kube.kubeconfig, requestTimeoutMs: 5000 });
  const registry = opts.registry ?? new Registry();
  const sink = new ResultSink();
  const deliverer = new Deliverer({ target, source: api.server, logger, registry, backoffMs: 50, maxBackoffMs: 500, onResult: sink.handle });
  const bridge = new Bridge({ api, deliverer, logger, registry, store: opts.store === null ? undefined : (opts.store ?? fns.store), sink, restartBackoffMs: 50, convergenceTimeoutMs: 10_000 });
  cleanups.push(() => bridge.stop());
  const first = bridge.start();
  // A test that fails before awaiting it stops the bridge: its first sync then ends in an error.
  first.catch(() => undefined);
  return { bridge, registry, first };
}

async function metric(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  const values = (m?.values ?? []) as { value: number; labels: Record<string, string | number> }[];
  return values.filter((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want)).reduce((s, v) => s + v.value, 0);
}

const functionsTarget = (): Target => ({ type: 'functions', urls: fns.urls });

describe('racklb bridge', () => {
  it('delivers the objects that exist at start, marks the store complete, then follows changes', async () => {
    seedExample();
    const { first, bridge } = await startBridge(functionsTarget());
    expect(await first).toEqual({ deleted: 0, markedComplete: true });
    expect(bridge.isReady()).toBe(true);
    let state = await readState(fns.store);
    expect(state.complete).toBe(true);
    expect(state.services['default/porter-bgp-svc']?.ip).toBe('172.22.0.2');
    expect(state.racks.leaf1?.routes['172.22.0.2/32']).toEqual(['192.168.0.3', '192.168.0.4']);
    // worker-p001 has no rack label: a candidate in every rack (the speaker keeps only its subnet).
    expect(state.racks.leaf2?.routes['172.22.0.2/32']).toContain('192.168.1.2');
    expect(state.racks.leaf2?.routes['172.22.0.2/32']).not.toContain('192.168.0.3');

    // A change after start: worker-p002 is relabelled to leaf1.
    kube.apply(fresh(node({ name: 'worker-p002', ip: '192.168.1.2', rack: 'leaf1', speaker: true })));
    state = await eventually('the relabel to reach the store', async () => {
      const s = await readState(fns.store);
      return s.racks.leaf2 === undefined ? s : undefined;
    });
    expect(state.racks.leaf1?.routes['172.22.0.2/32']).toEqual(['192.168.0.3', '192.168.0.4', '192.168.1.2']);
    expect(state.peers['worker-p002']).toEqual([{ name: 'bgppeer-leaf1', address: '192.168.0.2', asn: 50001 }]);

    // A delete after start.
    kube.remove('Service', 'porter-bgp-svc', 'default');
    await eventually('the Service delete to reach the store', async () => ((await readState(fns.store)).services['default/porter-bgp-svc'] === undefined ? true : undefined));
  });

  it('relists after its watch expires (410 Gone) and converges on what changed meanwhile', async () => {
    seedExample();
    const { first, registry } = await startBridge(functionsTarget());
    await first;
    expect(await metric(registry, 'racklb_bridge_lists_total', { kind: 'Node' })).toBe(1);

    // Changes the bridge never hears about (its watch is "down"), then the watch expires.
    kube.apply(fresh(node({ name: 'worker-p002', ip: '192.168.1.2', rack: 'leaf1', speaker: true })), { silent: true });
    kube.remove('Service', 'porter-bgp-svc', 'default', { silent: true });
    kube.apply(fresh(eip({ name: 'pool-b', address: '198.51.100.0/28' })), { silent: true });
    kube.apply(fresh(service({ name: 'web', pool: 'pool-b' })), { silent: true });
    kube.expireWatches();

    const state = await eventually('the relist to converge', async () => {
      const s = await readState(fns.store);
      return s.services['default/web']?.ip === '198.51.100.0' && s.services['default/porter-bgp-svc'] === undefined && s.racks.leaf2 === undefined ? s : undefined;
    });
    expect(state.peers['worker-p002']).toEqual([{ name: 'bgppeer-leaf1', address: '192.168.0.2', asn: 50001 }]);
    for (const kind of ['Node', 'Service', 'EndpointSlice', 'Eip', 'BgpPeer', 'BgpConf']) {
      expect(await metric(registry, 'racklb_bridge_lists_total', { kind }), kind).toBe(2);
    }
    // And it watches again: a later change arrives without another relist.
    kube.apply(fresh(service({ name: 'web2', pool: 'pool-b' })));
    await eventually('a change after the relist', async () => ((await readState(fns.store)).services['default/web2']?.ip ? true : undefined));
    expect(await metric(registry, 'racklb_bridge_lists_total', { kind: 'Service' })).toBe(2);
  });

  it('restarts a watch that fails with a server error, with backoff, and catches up', async () => {
    seedExample();
    const { first, registry } = await startBridge(functionsTarget());
    await first;
    kube.fail({ method: 'GET', path: /\/services$/, status: 500, times: 3 });
    kube.expireWatches();
    kube.apply(fresh(eip({ name: 'pool-c', address: '198.51.100.32/28' })));
    kube.apply(fresh(service({ name: 'late', pool: 'pool-c' })));
    await eventually('the Service to arrive after the failures', async () => ((await readState(fns.store)).services['default/late']?.ip === '198.51.100.32' ? true : undefined));
    expect(await metric(registry, 'racklb_bridge_watch_errors_total', { kind: 'Service', reason: '500' })).toBeGreaterThanOrEqual(1);
  });

  it('does not forward an Eip, BgpPeer or BgpConf update that changes only its status, and a resync finds nothing to correct', async () => {
    seedExample();
    const { first, registry } = await startBridge(functionsTarget());
    await first;
    const journal = async (): Promise<number> => fns.store.redis.xlen(fns.store.keys.journal());
    const before = await journal();
    kube.setStatus('Eip', 'porter-bgp-eip', undefined, { usage: 1, poolSize: 1 });
    kube.setStatus('BgpPeer', 'bgppeer-leaf1', undefined, { nodesPeerStatus: {} });
    // A spec change still goes through.
    kube.apply(fresh(bgpConf({ as: 65100 })));
    await eventually('the BgpConf change', async () => ((await readState(fns.store)).racks.leaf1?.bgp?.as === 65100 ? true : undefined));
    expect(await metric(registry, 'racklb_bridge_status_only_updates_total', {})).toBe(2);
    expect((await journal()) - before).toBe(1);
    // The store's Eip is at an older resourceVersion than the API's, with the same content: no drift.
    const api = new KubeApi({ kubeconfig: kube.kubeconfig });
    const sink = new ResultSink();
    const deliverer = new Deliverer({ target: functionsTarget(), source: api.server, logger, registry: new Registry(), onResult: sink.handle });
    const report = await resync({ api, store: fns.store, deliverer, target: functionsTarget(), logger }, sink);
    deliverer.stop();
    expect(report.corrected).toBe(0);
    expect(report.kinds.Eip?.unchanged).toBe(1);
  });

  it('deletes at start what the store holds but the cluster no longer does, and only that', async () => {
    seedExample();
    // The store knows a Service and a Node that were deleted while racklb was down.
    expect((await send(fns, 'add', service({ name: 'gone', requestedIp: '172.22.0.2' }))).status).toBe(200);
    expect((await send(fns, 'add', node({ name: 'old-node', ip: '192.168.0.9', rack: 'leaf1' }))).status).toBe(200);
    // And one stored at a version newer than any list: created after the list, by another feeder.
    expect((await send(fns, 'add', service({ name: 'brand-new', resourceVersion: '999999' }))).status).toBe(200);
    const { first } = await startBridge(functionsTarget());
    expect((await first).deleted).toBe(2);
    const state = await readState(fns.store);
    expect(state.services['default/gone']).toBeUndefined();
    expect(state.racks.leaf1?.nodes).not.toContain('old-node');
    expect(Object.keys(state.services)).toContain('default/brand-new');
    expect(state.complete).toBe(true);
  });

  it('sends exactly the CloudEvents ApiServerSource sends, to a broker that answers 202, retrying a 500', async () => {
    kube.apply(fresh(node({ name: 'master1', ip: '192.168.0.3', rack: 'leaf1', speaker: true })));
    kube.apply(fresh(endpointSlice({ service: 'web', endpoints: [{ nodeName: 'master1' }] })));
    kube.apply(fresh(bgpConf({ as: 65100 })));
    const received: { headers: IncomingMessage['headers']; body: string }[] = [];
    let failures = 2;
    const broker: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (failures > 0) {
          failures--;
          res.writeHead(500).end();
          return;
        }
        received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
        res.writeHead(202).end();
      });
    });
    await new Promise<void>((r) => broker.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => broker.close(() => r())));
    const url = `http://127.0.0.1:${(broker.address() as AddressInfo).port}/racklb-system/default`;
    const { first, registry } = await startBridge({ type: 'broker', url }, { store: null });
    await first;
    await eventually('three events at the broker', async () => (received.length === 3 ? true : undefined));
    expect(await metric(registry, 'racklb_bridge_delivery_failures_total', {})).toBe(2);
    expect(await metric(registry, 'racklb_bridge_events_total', { outcome: 'accepted' })).toBe(3);

    const byKind = new Map(received.map((r) => [String(r.headers['ce-kind']), r]));
    const nodeEvent = byKind.get('Node');
    expect(nodeEvent?.headers).toMatchObject({
      'ce-specversion': '1.0',
      'ce-type': 'dev.knative.apiserver.resource.add',
      'ce-source': kube.url,
      'ce-subject': '/apis/v1/namespaces//nodes/master1',
      'ce-kind': 'Node',
      'ce-apiversion': 'v1',
      'ce-name': 'master1',
      'ce-namespace': '',
      'content-type': 'application/json',
    });
    expect(nodeEvent?.headers['ce-id']).toMatch(/^[0-9a-f-]{36}$/);
    // The data is the object exactly as the API server holds it (list items get apiVersion and kind).
    expect(JSON.parse(nodeEvent?.body ?? '')).toEqual(kube.get('Node', 'master1'));
    const slice = byKind.get('EndpointSlice');
    expect(slice?.headers['ce-subject']).toBe('/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/web-abcde');
    expect(slice?.headers['ce-namespace']).toBe('default');
    expect(JSON.parse(slice?.body ?? '')).toEqual(kube.get('EndpointSlice', 'web-abcde', 'default'));
    expect(byKind.get('BgpConf')?.headers['ce-subject']).toBe('/apis/network.kubesphere.io/v1alpha2/namespaces//bgpconfs/default');

    // An update and a delete after start carry the same attributes with their own types.
    kube.apply(fresh(node({ name: 'master1', ip: '192.168.0.3', rack: 'leaf2', speaker: true })));
    kube.remove('BgpConf', 'default');
    await eventually('update and delete at the broker', async () => (received.length === 5 ? true : undefined));
    expect(received.slice(3).map((r) => `${String(r.headers['ce-type'])} ${String(r.headers['ce-kind'])}`).sort()).toEqual([
      'dev.knative.apiserver.resource.delete BgpConf',
      'dev.knative.apiserver.resource.update Node',
    ]);
  });

  it('runs as `racklb bridge --write-status`: first sync, store marked complete, ready, metrics, status written back', async () => {
    seedExample();
    const args = ['bridge', '--kubeconfig', kube.kubeconfig, '--redis', redis.url, '--metrics-port', '0', '--write-status', ...Object.entries(fns.urls).flatMap(([n, u]) => ['--function-url', `${n}=${u}`])];
    const proc = spawnCli(args);
    const kill = (): void => void proc.proc.kill('SIGKILL');
    process.once('exit', kill);
    cleanups.push(async () => {
      await proc.stop();
      process.off('exit', kill);
    });
    const start = await proc.waitForLine((l) => l.includes('bridge starting'), 15_000);
    await proc.waitForLine((l) => l.includes('first sync done; following changes'), 15_000);
    expect((await readState(fns.store)).services['default/porter-bgp-svc']?.ip).toBe('172.22.0.2');
    const ops = String((JSON.parse(start) as Json).metrics);
    expect((await request(`${ops}/health/readiness`)).statusCode).toBe(200);
    const metrics = await (await request(`${ops}/metrics`)).body.text();
    expect(metrics).toMatch(/racklb_bridge_events_total\{kind="Node",action="add",outcome="applied"\} 3/);
    expect(metrics).toContain('racklb_bridge_synced 1');
    await eventually('the Service status', async () => (((kube.get('Service', 'porter-bgp-svc', 'default')?.status as Json).loadBalancer as Json).ingress ? true : undefined));
    expect(await proc.stop()).toBe(0);
  });

  it('refuses to start without exactly one delivery target, naming the options', async () => {
    const none = await cli(['bridge', '--kubeconfig', kube.kubeconfig]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('choose exactly one delivery target: --function-url NAME=URL (for each function), --broker URL or --streams');
    const partial = await cli(['bridge', '--kubeconfig', kube.kubeconfig, '--function-url', `on-service=${fns.urls['on-service']}`]);
    expect(partial.code).toBe(2);
    expect(partial.stderr).toContain('--function-url: every function needs a URL; missing on-node-label, on-bgppeer');
    const streams = await cli(['bridge', '--kubeconfig', kube.kubeconfig, '--streams'], { env: { RACKLB_REDIS_URL: '' } });
    expect(streams.stderr).toContain('--streams needs --redis');
  });

  it('publishes onto the Redis streams, and marks the store complete only once the consumers applied everything', async () => {
    seedExample();
    kube.apply(fresh(bgpPeer({ name: 'extra', neighborAddress: '192.168.0.250', rack: 'leaf1' })));
    const { first } = await startBridge({ type: 'streams', store: fns.store });
    // Nothing consumes yet: the first sync cannot vouch for the store.
    await new Promise((r) => setTimeout(r, 300));
    expect((await readState(fns.store)).complete).toBe(false);
    // The bridge created each function's consumer group, so KEDA sees the lag and starts a consumer.
    const groups = (await fns.store.redis.xinfo('GROUPS', fns.store.keys.eventStream('on-service'))) as unknown[][];
    const info = Object.fromEntries(((groups[0] ?? []) as unknown[]).reduce<[string, unknown][]>((acc, v, i, all) => (i % 2 === 0 ? [...acc, [String(v), all[i + 1]]] : acc), []));
    expect(info.name).toBe('on-service');
    expect(Number(info.lag)).toBe(3); // the Eip, the Service and the EndpointSlice, none consumed yet
    const stop = new AbortController();
    const consumers = Object.values(FUNCTIONS).map((def) => consumeStream(def, { store: fns.store, logger }, { consumer: 'test', signal: stop.signal, blockMs: 100 }));
    cleanups.push(async () => {
      stop.abort();
      await Promise.all(consumers);
    });
    expect((await first).markedComplete).toBe(true);
    const state = await readState(fns.store);
    expect(state.complete).toBe(true);
    expect(state.racks.leaf1?.routes['172.22.0.2/32']).toEqual(['192.168.0.3', '192.168.0.4']);
    expect(state.peers.master1?.map((p) => p.name)).toEqual(['bgppeer-leaf1', 'extra']);
  });
});
