/**
 * Status write-back against the test API server (test/helpers/kube-api.ts), with the store filled
 * by the real functions on a real redis-server: Service ingress and pool label, Eip, BgpPeer and
 * BgpConf status in PorterLB's shapes; 409 answered by re-reading; 404 taken as done; a failing or
 * hanging API server retried with backoff, counted, and never in the functions' way.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { request } from 'undici';
import { KubeApi } from '../../src/k8s/kube.js';
import { StatusWriter } from '../../src/k8s/status-writer.js';
import { serviceChange, type ServiceTarget } from '../../src/k8s/status.js';
import { parseEip } from '../../src/core/objects.js';
import { markComplete } from '../../src/state/complete.js';
import { asOpenElb, eip, porterLbExample, service, type Json } from '../helpers/fixtures.js';
import { send, serveAll, type ServedFunctions } from '../helpers/functions.js';
import { spawnCli } from '../helpers/cli.js';
import { startKubeApi, type FakeKubeApi } from '../helpers/kube-api.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

const logger = pino({ level: 'silent' });
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

async function eventually<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The example in the API (as its server numbers it) and, through the functions, in the store. */
async function loadExample(as: (o: Json) => Json = (o) => o): Promise<void> {
  const ex = porterLbExample();
  for (const o of [...ex.nodes, ex.conf, ...ex.peers, ex.eip, ex.service, ex.slice]) {
    const stored = kube.apply(as(o));
    const answer = await send(fns, 'add', stored);
    expect(answer.status, answer.body).toBe(200);
  }
}

function startWriter(requestTimeoutMs = 5000): { writer: StatusWriter; registry: Registry } {
  const api = new KubeApi({ kubeconfig: kube.kubeconfig, requestTimeoutMs });
  const registry = new Registry();
  const writer = new StatusWriter({ api, store: fns.store, logger, registry, pollMs: 50, sessionsEveryMs: 100, fullEveryMs: 3_600_000, backoffMs: 50, maxBackoffMs: 300 });
  writer.start();
  cleanups.push(() => writer.stop());
  return { writer, registry };
}

async function metric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  const values = (m?.values ?? []) as { value: number; labels: Record<string, string | number> }[];
  return values.filter((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want)).reduce((s, v) => s + v.value, 0);
}

const status = (o: Json | undefined): Json => (o?.status ?? {}) as Json;
const ingressOf = (o: Json | undefined): unknown[] | undefined => (status(o).loadBalancer as Json | undefined)?.ingress as unknown[] | undefined;
/** The Service once the status writer has given it an ingress. */
const statusWritten = (name: string): Promise<Json> =>
  eventually(`the status of Service ${name}`, () => {
    const s = kube.get('Service', name, 'default');
    return ingressOf(s) ? s : undefined;
  });
const labels = (o: Json | undefined): Record<string, string> => ((o?.metadata as Json | undefined)?.labels ?? {}) as Record<string, string>;

describe('status write-back', () => {
  it('writes Service ingress and pool label, and Eip, BgpPeer and BgpConf status as PorterLB does', async () => {
    await loadExample();
    // What the speaker on master1 reports for its session with leaf1's router.
    const updatedAt = '2026-01-02T03:04:05.678Z';
    const counters = (open: number, update: number, keepalive: number) => ({ notification: 0, update, open, keepalive, refresh: 0, discarded: 0, total: open + update + keepalive, withdrawUpdate: 0, withdrawPrefix: 0 });
    await fns.store.redis.hset(
      fns.store.keys.sessions('master1'),
      '192.168.0.2',
      JSON.stringify({ peer: 'bgppeer-leaf1', neighborAddress: '192.168.0.2', sessionState: 'established', adminState: 'up', uptimeSeconds: 42, prefixesSent: 1, prefixesReceived: 0, lastError: null, messages: { received: counters(1, 0, 14), sent: counters(1, 2, 14) }, updatedAt }),
    );
    startWriter();

    const svc = await statusWritten('porter-bgp-svc');
    expect(status(svc)).toEqual({ loadBalancer: { ingress: [{ ip: '172.22.0.2' }] } });
    expect(labels(svc)['eip.porter.kubesphere.io/v1alpha2']).toBe('porter-bgp-eip');
    // Through the status subresource, as merge patches conditional on the resourceVersion read.
    const statusPatch = kube.requests.find((r) => r.method === 'PATCH' && r.path === '/api/v1/namespaces/default/services/porter-bgp-svc/status');
    expect(statusPatch?.contentType).toBe('application/merge-patch+json');
    expect(((statusPatch?.body as Json).metadata as Json).resourceVersion).toMatch(/^\d+$/);

    const eip = await eventually('the Eip status', () => (status(kube.get('Eip', 'porter-bgp-eip')).poolSize ? kube.get('Eip', 'porter-bgp-eip') : undefined));
    expect(status(eip)).toEqual({ occupied: true, usage: 1, poolSize: 1, used: { '172.22.0.2': 'default/porter-bgp-svc' }, firstIP: '172.22.0.2', lastIP: '172.22.0.2', ready: true, v4: true });
    expect(kube.requests.some((r) => r.method === 'PUT' && r.path === '/apis/network.kubesphere.io/v1alpha2/eips/porter-bgp-eip/status')).toBe(true);

    const leaf1 = await eventually('the BgpPeer status', () => (status(kube.get('BgpPeer', 'bgppeer-leaf1')).nodesPeerStatus ? kube.get('BgpPeer', 'bgppeer-leaf1') : undefined));
    expect(status(leaf1)).toEqual({
      nodesPeerStatus: {
        master1: {
          peerState: {
            neighborAddress: '192.168.0.2',
            peerAs: 50001,
            sessionState: 'ESTABLISHED',
            adminState: 'UP',
            // jsonpb's uint64 strings, as PorterLB's CRD declares the counters.
            messages: {
              received: { notification: '0', update: '0', open: '1', keepalive: '14', refresh: '0', discarded: '0', total: '15', withdrawUpdate: '0', withdrawPrefix: '0' },
              sent: { notification: '0', update: '2', open: '1', keepalive: '14', refresh: '0', discarded: '0', total: '17', withdrawUpdate: '0', withdrawPrefix: '0' },
            },
          },
          timersState: { uptime: '2026-01-02T03:03:23Z' },
        },
      },
    });
    const leaf2 = await eventually('the second BgpPeer status', () => (status(kube.get('BgpPeer', 'bgppeer-leaf2')).nodesPeerStatus ? kube.get('BgpPeer', 'bgppeer-leaf2') : undefined));
    expect((status(leaf2).nodesPeerStatus as Json)['worker-p002']).toEqual({ peerState: { neighborAddress: '192.168.1.1', peerAs: 50001, sessionState: 'UNKNOWN', adminState: 'UP' }, timersState: {} });

    const conf = await eventually('the BgpConf status', () => (status(kube.get('BgpConf', 'default')).nodesConfStatus ? kube.get('BgpConf', 'default') : undefined));
    expect(status(conf)).toEqual({ nodesConfStatus: { master1: { routerId: '192.168.0.3', as: 50000 }, 'worker-p002': { routerId: '192.168.1.2', as: 50000 } } });

    // Status writes touch status only: the objects' specs are as the user wrote them.
    expect(kube.get('Eip', 'porter-bgp-eip')?.spec).toEqual(porterLbExample().eip.spec);

    // The session goes down: the BgpPeer status follows, and nothing else is rewritten.
    const writesBefore = kube.requests.filter((r) => r.method !== 'GET').length;
    await fns.store.redis.hset(fns.store.keys.sessions('master1'), '192.168.0.2', JSON.stringify({ neighborAddress: '192.168.0.2', sessionState: 'active', adminState: 'up', uptimeSeconds: 0, updatedAt }));
    await eventually('the session state change', () => ((status(kube.get('BgpPeer', 'bgppeer-leaf1')).nodesPeerStatus as Json | undefined)?.master1 as Json | undefined)?.timersState && JSON.stringify(kube.get('BgpPeer', 'bgppeer-leaf1')).includes('"ACTIVE"') ? true : undefined);
    await new Promise((r) => setTimeout(r, 300));
    expect(kube.requests.filter((r) => r.method !== 'GET').length - writesBefore).toBe(1);
  });

  it('takes the ingress and the label back when racklb releases the IP, once the store is complete', async () => {
    await loadExample();
    const { writer } = startWriter();
    await statusWritten('porter-bgp-svc');
    // The user opts the Service out.
    const optedOut = kube.apply(service({ name: 'porter-bgp-svc', requestedIp: '172.22.0.2', managed: false }));
    expect((await send(fns, 'update', optedOut)).outcome).toBe('applied');
    // Not complete yet: an ingress is never taken away on the word of a store that may be partial.
    await new Promise((r) => setTimeout(r, 400));
    await writer.idle();
    expect(ingressOf(kube.get('Service', 'porter-bgp-svc', 'default'))).toEqual([{ ip: '172.22.0.2' }]);
    await markComplete(fns.store);
    const svc = await eventually('the release', () => {
      const s = kube.get('Service', 'porter-bgp-svc', 'default');
      return (ingressOf(s) ?? []).length === 0 ? s : undefined;
    });
    expect(labels(svc)['eip.porter.kubesphere.io/v1alpha2']).toBeUndefined();
    // The Eip no longer counts it.
    await eventually('the Eip usage', () => (status(kube.get('Eip', 'porter-bgp-eip')).usage === 0 ? true : undefined));
  });

  it('writes OpenELB\'s pool label on a Service that opted in with openelb, and takes back a released one\'s', async () => {
    await loadExample(asOpenElb);
    // Left by OpenELB on a Service racklb never received: released once the store is complete.
    kube.apply(asOpenElb(service({ name: 'left-over', labels: { 'eip.porter.kubesphere.io/v1alpha2': 'porter-bgp-eip' } })));
    kube.setStatus('Service', 'left-over', 'default', { loadBalancer: { ingress: [{ ip: '172.22.0.2' }] } });
    await markComplete(fns.store);
    startWriter();
    const svc = await statusWritten('porter-bgp-svc');
    expect(status(svc)).toEqual({ loadBalancer: { ingress: [{ ip: '172.22.0.2' }] } });
    expect(labels(svc)['eip.openelb.kubesphere.io/v1alpha2']).toBe('porter-bgp-eip');
    expect(labels(svc)).not.toHaveProperty('eip.porter.kubesphere.io/v1alpha2');
    // The label and the ingress go in two writes (the label first): wait for both.
    const released = await eventually('the left-over Service released', () => {
      const s = kube.get('Service', 'left-over', 'default');
      return labels(s)['eip.openelb.kubesphere.io/v1alpha2'] === undefined && (ingressOf(s) ?? []).length === 0 ? s : undefined;
    });
    expect(labels(released)).not.toHaveProperty('eip.porter.kubesphere.io/v1alpha2');
  });

  it('answers a 409 conflict by reading the object again and reapplying, keeping the other writer\'s change', async () => {
    await loadExample();
    kube.interfere('Eip', 'porter-bgp-eip', undefined, 2);
    kube.interfere('Service', 'porter-bgp-svc', 'default', 1);
    const { writer, registry } = startWriter();
    await eventually('the Eip status after conflicts', () => (status(kube.get('Eip', 'porter-bgp-eip')).usage === 1 ? true : undefined));
    await statusWritten('porter-bgp-svc');
    await writer.idle();
    expect(await metric(registry, 'racklb_status_write_conflicts_total', { kind: 'Eip' })).toBe(2);
    expect(await metric(registry, 'racklb_status_write_conflicts_total', { kind: 'Service' })).toBe(1);
    expect(await metric(registry, 'racklb_status_write_failures_total')).toBe(0);
    expect(kube.requests.filter((r) => r.status === 409)).toHaveLength(3);
    // The interfering writer's annotation survived racklb's write.
    expect(((kube.get('Eip', 'porter-bgp-eip')?.metadata as Json).annotations as Json)['test/interfered']).toBe('1');
    expect(labels(kube.get('Service', 'porter-bgp-svc', 'default'))['eip.porter.kubesphere.io/v1alpha2']).toBe('porter-bgp-eip');
  });

  it('gives up cleanly on an object that vanished (404): no retry, no failure', async () => {
    await loadExample();
    // In the store, but already deleted from the cluster.
    const ghost = kube.apply(service({ name: 'ghost', requestedIp: '172.22.0.2' }));
    await send(fns, 'add', ghost);
    kube.remove('Service', 'ghost', 'default');
    const { writer, registry } = startWriter();
    await eventually('the ghost to be handled', async () => ((await metric(registry, 'racklb_status_writes_total', { kind: 'Service', outcome: 'gone' })) === 1 ? true : undefined));
    await writer.idle();
    await new Promise((r) => setTimeout(r, 300));
    expect(kube.requests.filter((r) => r.path.includes('/services/ghost'))).toEqual([expect.objectContaining({ method: 'GET', status: 404 })]);
    expect(await metric(registry, 'racklb_status_write_failures_total')).toBe(0);
  });

  it('retries a failing API server with backoff, counts the failures, and lands the write when it recovers', async () => {
    await loadExample();
    kube.fail({ path: /\/eips\/porter-bgp-eip\/status$/, status: 500, times: 3 });
    kube.fail({ method: 'PATCH', path: /\/services\/porter-bgp-svc\/status$/, status: 429, times: 1 });
    const { writer, registry } = startWriter();
    await eventually('the Eip status after the failures', () => (status(kube.get('Eip', 'porter-bgp-eip')).usage === 1 ? true : undefined));
    await statusWritten('porter-bgp-svc');
    await writer.idle();
    expect(await metric(registry, 'racklb_status_write_failures_total', { kind: 'Eip', reason: '500' })).toBe(3);
    expect(await metric(registry, 'racklb_status_write_failures_total', { kind: 'Service', reason: '429' })).toBe(1);
    // Backoff: the four attempts on the Eip were spread out, not fired back to back.
    const times = kube.requests.filter((r) => r.path.endsWith('/eips/porter-bgp-eip/status') && r.method === 'GET');
    expect(times.length).toBe(4);
  });

  it('never delays the functions: with the status writer stuck on a hanging API server, their answers are as fast as without it', async () => {
    await loadExample();
    const answerTimes = async (from: number): Promise<number> => {
      const latencies: number[] = [];
      for (let i = from; i < from + 40; i++) {
        const svc = kube.apply(service({ name: `svc-${i}`, requestedIp: '172.22.0.2' }));
        const t0 = performance.now();
        const answer = await send(fns, 'add', svc);
        latencies.push(performance.now() - t0);
        expect(answer.status).toBe(200);
      }
      latencies.sort((a, b) => a - b);
      return latencies[latencies.length - 2] ?? 0; // p97.5 of 40: robust to one GC pause
    };
    const before = await answerTimes(0);

    kube.fail({ path: /./, hang: true, times: Infinity });
    // The real command, in its own process, as deployed.
    const writer = spawnCli(['status-writer', '--kubeconfig', kube.kubeconfig, '--redis', redis.url, '--metrics-port', '0', '--metrics-host', '127.0.0.1'], { env: { RACKLB_LOG_LEVEL: 'info' } });
    const kill = (): void => void writer.proc.kill('SIGKILL');
    process.once('exit', kill);
    cleanups.push(async () => {
      await writer.stop();
      process.off('exit', kill);
    });
    await writer.waitForLine((l) => l.includes('status writer starting'), 15_000);
    await eventually('the writer to be stuck on the API', () => (kube.requests.filter((r) => r.status === -1).length >= 1 ? true : undefined));
    const during = await answerTimes(40);

    // The writer is still waiting on the API (its deadline is 15 s) and has written nothing.
    expect(kube.requests.filter((r) => r.status === -1).length).toBeGreaterThanOrEqual(1);
    expect(kube.get('Service', 'svc-0', 'default')?.status).toEqual({ loadBalancer: {} });
    // Had the functions waited on the API, each answer would take the writer's 15 s deadline. The
    // bound leaves room for a loaded test machine, where the writer's process competes for the CPU.
    expect(during, `answers took ${during.toFixed(1)} ms with the writer stuck, ${before.toFixed(1)} ms before`).toBeLessThan(before + 1000);
    const metrics = await request(`http://127.0.0.1:${await opsPort(writer.lines)}/metrics`).then((r) => r.body.text());
    expect(metrics).toContain('racklb_status_backlog');
  });
});

/** The port `racklb status-writer` printed in its start line (`"metrics":"http://127.0.0.1:N"`). */
async function opsPort(lines: string[]): Promise<number> {
  const line = lines.find((l) => l.includes('status writer starting')) ?? '';
  const m = /"metrics":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(line);
  if (!m) throw new Error(`no metrics address in ${line}`);
  return Number(m[1]);
}

describe('what a Service\'s status write changes (serviceChange)', () => {
  const pools = [parseEip(eip({ name: 'pool-a', address: '198.51.100.0/28' }))];
  const ours: ServiceTarget = { key: 'default/web', namespace: 'default', name: 'web', ip: '198.51.100.1', pool: 'pool-a' };
  const label = { 'eip.porter.kubesphere.io/v1alpha2': 'pool-a' };
  const openElb: ServiceTarget = { ...ours, naming: 'OpenELB' };
  const openElbLabel = { 'eip.openelb.kubesphere.io/v1alpha2': 'pool-a' };
  const cases: { name: string; target: ServiceTarget | undefined; live: { labels: Record<string, string>; ingress: { ip?: string; hostname?: string }[] }; mayRemove: boolean; want: unknown }[] = [
    { name: 'nothing yet: label and ingress', target: ours, live: { labels: {}, ingress: [] }, mayRemove: true, want: { labels: { 'eip.porter.kubesphere.io/v1alpha2': 'pool-a' }, ingress: [{ ip: '198.51.100.1' }] } },
    { name: 'already right: nothing', target: ours, live: { labels: label, ingress: [{ ip: '198.51.100.1' }] }, mayRemove: true, want: { labels: undefined, ingress: undefined } },
    { name: 'moved IP: the old one of ours goes', target: ours, live: { labels: label, ingress: [{ ip: '198.51.100.7' }] }, mayRemove: true, want: { labels: undefined, ingress: [{ ip: '198.51.100.1' }] } },
    { name: 'moved IP, store not complete: the old one stays too', target: ours, live: { labels: label, ingress: [{ ip: '198.51.100.7' }] }, mayRemove: false, want: { labels: undefined, ingress: [{ ip: '198.51.100.1' }, { ip: '198.51.100.7' }] } },
    { name: 'another load balancer\'s entry stays', target: ours, live: { labels: {}, ingress: [{ ip: '203.0.113.9' }] }, mayRemove: true, want: { labels: { 'eip.porter.kubesphere.io/v1alpha2': 'pool-a' }, ingress: [{ ip: '198.51.100.1' }, { ip: '203.0.113.9' }] } },
    { name: 'released: ours and the label go, a hostname stays', target: undefined, live: { labels: label, ingress: [{ ip: '198.51.100.1' }, { hostname: 'lb.example' }] }, mayRemove: true, want: { labels: { 'eip.porter.kubesphere.io/v1alpha2': null }, ingress: [{ hostname: 'lb.example' }] } },
    { name: 'released, store not complete: nothing is taken away', target: undefined, live: { labels: label, ingress: [{ ip: '198.51.100.1' }] }, mayRemove: false, want: { labels: undefined, ingress: undefined } },
    // A Service that opted in with OpenELB's value keeps OpenELB's label; one pool label shows.
    { name: 'OpenELB opt-in: OpenELB\'s label', target: openElb, live: { labels: {}, ingress: [{ ip: '198.51.100.1' }] }, mayRemove: true, want: { labels: { 'eip.openelb.kubesphere.io/v1alpha2': 'pool-a' }, ingress: undefined } },
    { name: 'OpenELB opt-in, OpenELB\'s label right: nothing', target: openElb, live: { labels: openElbLabel, ingress: [{ ip: '198.51.100.1' }] }, mayRemove: true, want: { labels: undefined, ingress: undefined } },
    { name: 'OpenELB opt-in with PorterLB\'s label left: moved to OpenELB\'s', target: openElb, live: { labels: label, ingress: [{ ip: '198.51.100.1' }] }, mayRemove: true, want: { labels: { 'eip.openelb.kubesphere.io/v1alpha2': 'pool-a', 'eip.porter.kubesphere.io/v1alpha2': null }, ingress: undefined } },
    { name: 'PorterLB opt-in with OpenELB\'s stale label left: it goes', target: ours, live: { labels: { ...label, 'eip.openelb.kubesphere.io/v1alpha2': 'old-pool' }, ingress: [{ ip: '198.51.100.1' }] }, mayRemove: true, want: { labels: { 'eip.openelb.kubesphere.io/v1alpha2': null }, ingress: undefined } },
    { name: 'released: both products\' labels go', target: undefined, live: { labels: { ...label, ...openElbLabel }, ingress: [] }, mayRemove: true, want: { labels: { 'eip.porter.kubesphere.io/v1alpha2': null, 'eip.openelb.kubesphere.io/v1alpha2': null }, ingress: undefined } },
    { name: 'never ours: nothing', target: undefined, live: { labels: {}, ingress: [{ ip: '203.0.113.9' }] }, mayRemove: true, want: { labels: undefined, ingress: undefined } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(serviceChange(c.target, c.live, pools, c.mayRemove)).toEqual(c.want);
    });
  }
});
