/**
 * `racklb resync`, run as a user runs it, against the test API server, a real redis-server and the
 * real functions: it adds what the store lacks, updates what it holds at an older version, deletes
 * what vanished from the cluster, reports each correction, and marks the store complete only when
 * the store reflects the cluster.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { request } from 'undici';
import type { ResyncReport } from '../../src/k8s/resync.js';
import { consumeStream } from '../../src/serve/stream.js';
import { FUNCTIONS } from '../../src/functions.js';
import { readState } from '../../src/state/read.js';
import { asOpenElb, bgpPeer, eip, node, porterLbExample, service, type Json } from '../helpers/fixtures.js';
import { parseNode } from '../../src/core/objects.js';
import { cli, spawnCli } from '../helpers/cli.js';
import { send, serveAll, type ServedFunctions } from '../helpers/functions.js';
import { startKubeApi, type FakeKubeApi } from '../helpers/kube-api.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
let fns: ServedFunctions;
let kube: FakeKubeApi;
const cleanups: (() => Promise<unknown> | void)[] = [];

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

function targetArgs(): string[] {
  return Object.entries(fns.urls).flatMap(([name, url]) => ['--function-url', `${name}=${url}`]);
}

async function resync(extra: string[]): Promise<{ code: number; report: ResyncReport; stderr: string }> {
  const r = await cli(['resync', '--kubeconfig', kube.kubeconfig, '--redis', redis.url, '--json', ...extra], { timeoutMs: 30_000 });
  let report: ResyncReport;
  try {
    report = JSON.parse(r.stdout) as ResyncReport;
  } catch {
    throw new Error(`racklb resync printed no report (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
  return { code: r.code, report, stderr: r.stderr };
}

/** The example in the API and, through the functions, in the store: both agree. */
async function inSync(): Promise<ReturnType<typeof porterLbExample>> {
  const ex = porterLbExample();
  for (const o of [...ex.nodes, ex.conf, ...ex.peers, ex.eip, ex.service, ex.slice]) {
    const stored = kube.apply(o);
    expect((await send(fns, 'add', stored)).status).toBe(200);
  }
  return ex;
}

describe('racklb resync', () => {
  it('corrects every kind of drift, reports each correction, and marks the store complete', async () => {
    await inSync();
    // Drift: changes the store never heard of, and a Service deleted while nothing listened.
    kube.apply(node({ name: 'worker-p002', ip: '192.168.1.2', rack: 'leaf1', speaker: true }));
    kube.apply(eip({ name: 'pool-b', address: '198.51.100.0/28' }));
    kube.apply(service({ name: 'web', pool: 'pool-b' }));
    const gone = kube.apply(service({ name: 'gone', requestedIp: '172.22.0.2' }));
    expect((await send(fns, 'add', gone)).status).toBe(200);
    kube.remove('Service', 'gone', 'default');
    // An object racklb's functions refuse: reported, not sent.
    kube.apply(bgpPeer({ name: 'bad-peer', peerAs: 0, neighborAddress: '192.168.0.9' }));

    const { code, report } = await resync(targetArgs());
    expect(code).toBe(0);
    expect(report.complete).toBe(true);
    expect(report.markedComplete).toBe(true);
    expect(report.corrected).toBe(4);
    expect(report.kinds.Node).toMatchObject({ listed: 3, stored: 3, unchanged: 2, added: [], updated: ['worker-p002'], deleted: [] });
    expect(report.kinds.Service).toMatchObject({ listed: 2, stored: 2, unchanged: 1, added: ['default/web'], updated: [], deleted: ['default/gone'] });
    expect(report.kinds.Eip).toMatchObject({ added: ['pool-b'], unchanged: 1 });
    expect(report.kinds.BgpPeer?.invalid).toEqual([{ key: 'bad-peer', reason: expect.stringContaining('spec.conf.peerAs') as unknown }]);
    expect(report.kinds.EndpointSlice).toMatchObject({ listed: 1, unchanged: 1 });

    const state = await readState(fns.store);
    expect(state.complete).toBe(true);
    expect(state.services['default/gone']).toBeUndefined();
    expect(state.services['default/web']?.ip).toBe('198.51.100.0');
    expect(state.racks.leaf2).toBeUndefined();
    expect(state.racks.leaf1?.routes['172.22.0.2/32']).toEqual(['192.168.0.3', '192.168.0.4', '192.168.1.2']);

    // Nothing left to correct.
    const again = await resync(targetArgs());
    expect(again.report.corrected).toBe(0);
    expect(again.code).toBe(0);
  });

  it('reads again what a racklb that knew only PorterLB\'s keys stored, at the version it stored', async () => {
    await inSync();
    // A Node with OpenELB's rack label, stored as a racklb before OpenELB's keys read it: no rack.
    const relabelled = kube.apply(asOpenElb(node({ name: 'worker-p002', ip: '192.168.1.2', rack: 'leaf1', speaker: true })));
    const readBefore = parseNode({ ...relabelled, metadata: { ...(relabelled.metadata as Json), labels: { 'lb.kubesphere.io/v1alpha1': 'porter' } } });
    expect(readBefore.rack).toBeUndefined();
    await fns.store.redis.set(fns.store.keys.object('Node', 'worker-p002'), JSON.stringify({ deleted: false, record: readBefore }));

    const { code, report } = await resync(targetArgs());
    expect(code).toBe(0);
    expect(report.kinds.Node).toMatchObject({ updated: ['worker-p002'], unchanged: 2 });
    const state = await readState(fns.store);
    expect(state.racks.leaf1?.nodes).toContain('worker-p002');
    expect((await resync(targetArgs())).report.corrected).toBe(0);
  });

  it('prints a report a person can read', async () => {
    await inSync();
    kube.apply(service({ name: 'web', requestedIp: '172.22.0.2' }));
    const r = await cli(['resync', '--kubeconfig', kube.kubeconfig, '--redis', redis.url, ...targetArgs()], { timeoutMs: 30_000 });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^resync to the functions: 1 correction\(s\) in \d+ ms; store marked complete$/m);
    expect(r.stdout).toMatch(/Service\s+listed 2, stored 1: 1 unchanged, 1 added, 0 updated, 0 deleted/);
    expect(r.stdout).toContain('added    default/web');
  });

  it('leaves a kind it cannot list untouched and does not vouch for the store', async () => {
    await inSync();
    kube.remove('Eip', 'porter-bgp-eip');
    kube.fail({ method: 'GET', path: /\/eips$/, status: 500, times: Infinity });
    const { code, report } = await resync(targetArgs());
    expect(code).toBe(1);
    expect(report.kinds.Eip?.error).toContain('500');
    expect(report.complete).toBe(false);
    expect(report.markedComplete).toBe(false);
    const state = await readState(fns.store);
    expect(state.complete).toBe(false);
    // The Eip the cluster lost is still stored: an unreadable list proves nothing.
    expect(state.services['default/porter-bgp-svc']?.pool).toBe('porter-bgp-eip');
  });

  it('over the Redis streams, waits for the consumers before vouching, and says what is still pending', async () => {
    kube.apply(eip({ name: 'pool-b', address: '198.51.100.0/28' }));
    kube.apply(service({ name: 'web', pool: 'pool-b' }));
    // No consumer: the events sit in the streams; the store is not complete.
    const first = await resync(['--streams', '--timeout', '1']);
    expect(first.code).toBe(1);
    expect(first.report.kinds.Service?.notConverged).toEqual(['default/web']);
    expect(first.report.markedComplete).toBe(false);
    // The KEDA consumers start; a resync now converges.
    const stop = new AbortController();
    const consumers = Object.values(FUNCTIONS).map((def) => consumeStream(def, { store: fns.store, logger: pino({ level: 'silent' }) }, { consumer: 'test', signal: stop.signal, blockMs: 100 }));
    cleanups.push(async () => {
      stop.abort();
      await Promise.all(consumers);
    });
    const second = await resync(['--streams', '--timeout', '10']);
    expect(second.code).toBe(0);
    expect(second.report.markedComplete).toBe(true);
    expect((await readState(fns.store)).services['default/web']?.ip).toBe('198.51.100.0');
  });

  it('runs on every POST when serving (a PingSource tick or a dead-lettered event)', async () => {
    await inSync();
    kube.apply(service({ name: 'web', requestedIp: '172.22.0.2' }));
    const proc = spawnCli(['resync', '--serve', '--port', '0', '--kubeconfig', kube.kubeconfig, '--redis', redis.url, ...targetArgs()]);
    const kill = (): void => void proc.proc.kill('SIGKILL');
    process.once('exit', kill);
    cleanups.push(async () => {
      await proc.stop();
      process.off('exit', kill);
    });
    // --port 0 picks a free port; the log line says which.
    const line = await proc.waitForLine((l) => l.includes('resync serving'), 15_000);
    const port = Number((JSON.parse(line) as Json).port);
    const tick = await request(`http://127.0.0.1:${port}/`, {
      method: 'POST',
      headers: { 'ce-specversion': '1.0', 'ce-type': 'dev.knative.sources.ping', 'ce-source': '/apis/v1/namespaces/racklb-system/pingsources/racklb-resync', 'ce-id': '1', 'content-type': 'application/json' },
      body: '{}',
    });
    expect(tick.statusCode).toBe(200);
    expect(tick.headers['racklb-outcome']).toBe('complete');
    expect(tick.headers['racklb-detail']).toBe('1 correction(s)');
    expect(await tick.body.text()).toBe('');
    expect((await readState(fns.store)).services['default/web']?.ip).toBe('172.22.0.2');
  });
});
