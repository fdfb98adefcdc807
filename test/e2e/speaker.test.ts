/**
 * The speaker against real routers: three racks, a speaker in each, BIRD leaves and spine whose
 * kernel tables the tests read. Covers what the speaker must do (follow relabels, readiness,
 * endpoints, peer selection) and what must never happen (dropping routes on a speaker restart,
 * on Redis going away or coming back empty, on a gobgpd restart with graceful restart).
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LabApiServer } from '../../src/lab/apiserver.js';
import { failOnRejections, labDown, labUp, readLabState, restartProcess, markLabComplete, startLabRedis, stopLabRedis, syncSpeakers, LAB_REDIS_URL, SPEAKER_METRICS_PORT } from '../../src/lab/lab.js';
import { labDir, netnsName } from '../../src/lab/paths.js';
import { runCommand } from '../../src/lab/process.js';
import { parseTopology } from '../../src/lab/topology.js';
import { Store } from '../../src/store/store.js';
import { bgpConf, bgpPeer, eip, endpointSlice, node, service } from '../helpers/fixtures.js';
import { isRoot, sampleRoute, waitForRoute } from '../helpers/lab.js';

const A = '198.51.100.1/32';
const B = '198.51.100.2/32';
const UP = { leaf1: '203.0.113.1', leaf2: '203.0.113.3', leaf3: '203.0.113.5' };
const topology = parseTopology(readFileSync(new URL('./three-racks.yaml', import.meta.url), 'utf8'));
const ips: Record<string, string> = Object.fromEntries(topology.racks.flatMap((r) => r.nodes.map((n) => [n.name, n.ip])));
const rackOf: Record<string, string> = Object.fromEntries(topology.racks.flatMap((r) => r.nodes.map((n) => [n.name, r.name])));

let api: LabApiServer;

function labNode(name: string, opts: { ready?: boolean; rack?: string | null } = {}): Record<string, unknown> {
  const rack = opts.rack === null ? undefined : (opts.rack ?? rackOf[name]);
  return node({ name, ip: ips[name], rack, speaker: name.endsWith('a'), ready: opts.ready ?? true });
}

function peer(rack: string, asn: number, address: string, extra: Record<string, unknown> = {}, selectRack = rack): Record<string, unknown> {
  return bgpPeer({ name: `peer-${rack}`, peerAs: asn, neighborAddress: address, rack: selectRack, spec: { timers: { config: { connectRetry: 1, holdTime: 9, keepaliveInterval: 3 } }, ...extra } });
}

async function apply(...objects: Record<string, unknown>[]): Promise<void> {
  failOnRejections(await api.apply(objects));
  await syncSpeakers(readLabState());
}

describe.skipIf(!isRoot())('speaker against real routers (three racks)', () => {
  beforeAll(async () => {
    await labDown();
    const state = await labUp(topology);
    api = new LabApiServer(state.functions);
    await apply(...Object.keys(ips).map((n) => labNode(n)));
    await apply(
      bgpConf({ as: 65100, listenPort: 179 }),
      peer('leaf1', 65001, '192.0.2.1'),
      peer('leaf2', 65002, '192.0.2.65'),
      peer('leaf3', 65003, '192.0.2.129'),
      eip({ name: 'pool', address: '198.51.100.0/28' }),
      service({ name: 'a', requestedIp: '198.51.100.1' }),
      service({ name: 'b', requestedIp: '198.51.100.2', externalTrafficPolicy: 'Local' }),
      endpointSlice({ service: 'b', endpoints: [{ nodeName: 'n2b' }] }),
    );
  }, 120_000);

  afterAll(async () => {
    await labDown();
  }, 60_000);

  it('announces each Service IP with exactly the rack\'s next hops, one path per next hop', async () => {
    await waitForRoute('leaf1', A, [ips.n1a!, ips.n1b!]);
    await waitForRoute('leaf2', A, [ips.n2a!, ips.n2b!]);
    await waitForRoute('leaf3', A, [ips.n3a!, ips.n3b!]);
    await waitForRoute('spine', A, [UP.leaf1, UP.leaf2, UP.leaf3]);
  }, 60_000);

  it('announces an externalTrafficPolicy Local Service only from nodes with ready endpoints, and follows them', async () => {
    await waitForRoute('leaf2', B, [ips.n2b!]);
    await waitForRoute('spine', B, [UP.leaf2]);
    await waitForRoute('leaf1', B, []);
    await apply(endpointSlice({ service: 'b', endpoints: [{ nodeName: 'n3a' }, { nodeName: 'n3b' }, { nodeName: 'n2b', ready: false }] }));
    await waitForRoute('leaf3', B, [ips.n3a!, ips.n3b!]);
    await waitForRoute('leaf2', B, []);
    await waitForRoute('spine', B, [UP.leaf3]);
  }, 60_000);

  it('takes a NotReady node out of its leaf and puts it back when Ready', async () => {
    await apply(labNode('n1b', { ready: false }));
    await waitForRoute('leaf1', A, [ips.n1a!]);
    await apply(labNode('n1b', { ready: true }));
    await waitForRoute('leaf1', A, [ips.n1a!, ips.n1b!]);
  }, 60_000);

  it('follows a node relabelled out of its rack', async () => {
    await apply(labNode('n3b', { rack: 'leaf1' }));
    // n3b now belongs to leaf1's rack, but leaf1's speaker cannot hand leaf1 a next hop off its subnet.
    await waitForRoute('leaf3', A, [ips.n3a!]);
    await waitForRoute('leaf1', A, [ips.n1a!, ips.n1b!]);
    await apply(labNode('n3b'));
    await waitForRoute('leaf3', A, [ips.n3a!, ips.n3b!]);
  }, 60_000);

  it('closes a session when the BgpPeer\'s nodeSelector stops matching, and opens it when it matches again', async () => {
    await apply(peer('leaf3', 65003, '192.0.2.129', {}, 'nowhere'));
    await waitForRoute('leaf3', A, []);
    await waitForRoute('spine', A, [UP.leaf1, UP.leaf2]);
    await apply(peer('leaf3', 65003, '192.0.2.129'));
    await waitForRoute('leaf3', A, [ips.n3a!, ips.n3b!]);
    await waitForRoute('spine', A, [UP.leaf1, UP.leaf2, UP.leaf3]);
  }, 60_000);

  it('keeps every route at the leaf while the speaker is killed with SIGKILL and started again', async () => {
    const sampler = sampleRoute('leaf1', A, [ips.n1a!, ips.n1b!], 50);
    await restartProcess('n1a', 'speaker');
    await new Promise((r) => setTimeout(r, 4000));
    const { samples, bad } = await sampler.stop();
    expect(samples).toBeGreaterThan(20);
    expect(bad).toEqual([]);
    // A change after the restart proves the new speaker took over.
    await apply(labNode('n1b', { ready: false }));
    await waitForRoute('leaf1', A, [ips.n1a!]);
    await apply(labNode('n1b', { ready: true }));
    await waitForRoute('leaf1', A, [ips.n1a!, ips.n1b!]);
  }, 60_000);

  it('keeps routes while Redis is down, and while it is back empty until the state is complete again', async () => {
    const sampler = sampleRoute('leaf2', A, [ips.n2a!, ips.n2b!], 50);
    await stopLabRedis();
    await new Promise((r) => setTimeout(r, 2000));
    await startLabRedis({ empty: true });
    await new Promise((r) => setTimeout(r, 3000));
    // The lab relists: every object arrives again, then it vouches that the store is complete.
    failOnRejections(await api.resendAll());
    await new Promise((r) => setTimeout(r, 1000));
    const { samples, bad } = await sampler.stop();
    expect(samples).toBeGreaterThan(30);
    expect(bad).toEqual([]);
    await markLabComplete();
    // Trusted again: a withdrawal goes through.
    await apply(labNode('n2b', { ready: false }));
    await waitForRoute('leaf2', A, [ips.n2a!]);
    await apply(labNode('n2b', { ready: true }));
    await waitForRoute('leaf2', A, [ips.n2a!, ips.n2b!]);
  }, 90_000);

  it('recovers from gobgpd being killed, without help', async () => {
    await restartProcess('n2a', 'gobgpd');
    await waitForRoute('leaf2', A, [ips.n2a!, ips.n2b!], 30_000);
    await waitForRoute('spine', A, [UP.leaf1, UP.leaf2, UP.leaf3], 30_000);
  }, 60_000);

  it('with graceful restart, the leaf keeps forwarding while gobgpd restarts', async () => {
    await apply(peer('leaf1', 65001, '192.0.2.1', { gracefulRestart: { enabled: true, restartTime: 60 } }));
    await waitForRoute('leaf1', A, [ips.n1a!, ips.n1b!]);
    // The update reset the session; let it settle with the GR capability negotiated.
    await new Promise((r) => setTimeout(r, 3000));
    await waitForRoute('leaf1', A, [ips.n1a!, ips.n1b!]);
    const sampler = sampleRoute('leaf1', A, [ips.n1a!, ips.n1b!], 50);
    await restartProcess('n1a', 'gobgpd');
    await new Promise((r) => setTimeout(r, 8000));
    const { samples, bad } = await sampler.stop();
    expect(samples).toBeGreaterThan(40);
    expect(bad).toEqual([]);
  }, 60_000);

  it('skips a malformed record in Redis and keeps every other route', async () => {
    const store = Store.open(LAB_REDIS_URL, { failFast: true });
    try {
      await store.connect();
      await store.transact([], async () => ({
        result: undefined,
        write: (w) => {
          w.multi.hset(store.keys.intents(), '198.51.100.9', '{"not":"an intent"');
          w.multi.hset(store.keys.rackNextHops('leaf1'), 'ghost', '{"node":42}');
          w.notify({ scope: 'all', topic: 'intent', subject: '198.51.100.9' });
          w.notify({ scope: { rack: 'leaf1' }, topic: 'nexthops', subject: 'ghost' });
        },
      }));
    } finally {
      await store.close();
    }
    const sampler = sampleRoute('leaf1', A, [ips.n1a!, ips.n1b!], 50);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await sampler.stop()).bad).toEqual([]);
    // Still following changes.
    await apply(labNode('n1b', { ready: false }));
    await waitForRoute('leaf1', A, [ips.n1a!]);
    await apply(labNode('n1b', { ready: true }));
    await waitForRoute('leaf1', A, [ips.n1a!, ips.n1b!]);
    expect(readFileSync(`${labDir('n1a')}/speaker.log`, 'utf8')).toContain('malformed record in Redis');
  }, 60_000);

  it('serves Prometheus metrics: sessions up, paths announced and its own memory', async () => {
    const { stdout } = await runCommand('ip', ['netns', 'exec', netnsName('n1a'), process.execPath, '-e', `fetch('http://127.0.0.1:${SPEAKER_METRICS_PORT}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))`]);
    expect(stdout).toMatch(/^racklb_speaker_sessions_up 1$/m);
    expect(stdout).toMatch(/^racklb_speaker_paths_announced [1-9]\d*$/m);
    // The process's own memory, as an operator watching the speaker's memory target reads it.
    expect(stdout).toMatch(/^process_resident_memory_bytes [1-9]\d*$/m);
    expect(stdout).toMatch(/^nodejs_heap_size_used_bytes [1-9]\d*$/m);
    expect(stdout).toContain('racklb_speaker_reconcile_seconds_bucket');
  }, 30_000);

  it('withdraws a deleted Service everywhere', async () => {
    failOnRejections(await api.delete([service({ name: 'a' })]));
    for (const router of ['leaf1', 'leaf2', 'leaf3', 'spine']) await waitForRoute(router, A, []);
  }, 60_000);
});
