/**
 * BGP sessions with a TCP-MD5 password, end to end in the lab (issue 8, security): each leaf
 * requires a password of its rack's speakers (topology `password`; leaf1 runs BIRD, leaf2 FRR),
 * each BgpPeer carries one (`authPassword`). The right password establishes and routes flow; a wrong one never establishes,
 * however long we watch, and nothing reaches that leaf; correcting the BgpPeer brings it up. The
 * passwords never show in a log file, the journal, `racklb state`, `racklb events` or a command line.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LabApiServer } from '../../src/lab/apiserver.js';
import { birdShow } from '../../src/lab/bird.js';
import { frrShow } from '../../src/lab/frr.js';
import { failOnRejections, labDown, labUp, processPid, readLabState, syncSpeakers, LAB_REDIS_URL } from '../../src/lab/lab.js';
import { LAB_RUN_DIR } from '../../src/lab/paths.js';
import { parseTopology } from '../../src/lab/topology.js';
import { readState } from '../../src/state/read.js';
import { Store } from '../../src/store/store.js';
import { bgpConf, bgpPeer, eip, node, service } from '../helpers/fixtures.js';
import { isRoot, racklb, waitForRoute } from '../helpers/lab.js';

const P1 = `leaf1-md5-${process.pid}-a7Q`;
const P2 = `leaf2-md5-${process.pid}-z3K`;
const WRONG = `not-leaf2-md5-${process.pid}`;
const SVC = '198.51.100.7/32';

const topology = parseTopology(`
spine: { name: spine, asn: 65000 }
racks:
  - { name: leaf1, asn: 65001, subnet: 192.0.2.0/26, router: 192.0.2.1, password: "${P1}", nodes: [ { name: m1, ip: 192.0.2.10 } ] }
  - { name: leaf2, asn: 65002, daemon: frr, subnet: 192.0.2.64/26, router: 192.0.2.65, password: "${P2}", nodes: [ { name: m2, ip: 192.0.2.74 } ] }
`);

let api: LabApiServer;

function peer(rack: string, asn: number, address: string, password: string): Record<string, unknown> {
  return bgpPeer({
    name: `peer-${rack}`,
    peerAs: asn,
    neighborAddress: address,
    rack,
    spec: { conf: { peerAs: asn, neighborAddress: address, authPassword: password }, timers: { config: { connectRetry: 1, holdTime: 9, keepaliveInterval: 3 } } },
  });
}

async function apply(...objects: Record<string, unknown>[]): Promise<void> {
  failOnRejections(await api.apply(objects));
  await syncSpeakers(readLabState());
}

/** The leaf's own view of the sessions with the rack's speakers (leaf1 runs BIRD, leaf2 FRR). */
async function leafEstablished(leaf: string): Promise<boolean> {
  if (leaf === 'leaf2') {
    const summary = JSON.parse(await frrShow(leaf, 'show bgp summary json')) as { ipv4Unicast?: { peers?: Record<string, { state?: string }> } };
    return Object.entries(summary.ipv4Unicast?.peers ?? {}).some(([addr, p]) => addr.startsWith('192.0.2.') && p.state === 'Established');
  }
  const out = await birdShow(leaf, ['show', 'protocols']);
  return out.split('\n').some((l) => /^(node_|speaker)/.test(l) && /Established/.test(l));
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

describe.skipIf(!isRoot())('BGP with TCP-MD5 passwords in the lab', () => {
  beforeAll(async () => {
    await labDown();
    const state = await labUp(topology);
    api = new LabApiServer(state.functions);
    await apply(
      node({ name: 'm1', ip: '192.0.2.10', rack: 'leaf1', speaker: true }),
      node({ name: 'm2', ip: '192.0.2.74', rack: 'leaf2', speaker: true }),
      bgpConf({ as: 65100, listenPort: 179 }),
      peer('leaf1', 65001, '192.0.2.1', P1),
      peer('leaf2', 65002, '192.0.2.65', WRONG),
      eip({ name: 'pool', address: '198.51.100.0/28' }),
      service({ name: 'web', requestedIp: '198.51.100.7' }),
    );
  }, 120_000);

  afterAll(async () => {
    await labDown();
  }, 60_000);

  it('the right password establishes the session and the route reaches the spine', async () => {
    await waitForRoute('leaf1', SVC, ['192.0.2.10']);
    await waitForRoute('spine', SVC, ['203.0.113.1']);
    expect(await leafEstablished('leaf1')).toBe(true);
  }, 60_000);

  it('a wrong password never establishes: no session, no route, for as long as we watch', async () => {
    // Both sides retry every second (connect-retry 1 s): ten seconds is many attempts.
    const deadline = Date.now() + 10_000;
    let checks = 0;
    const store = Store.open(LAB_REDIS_URL, { failFast: true });
    try {
      await store.connect();
      while (Date.now() < deadline) {
        expect(await leafEstablished('leaf2')).toBe(false);
        // The speaker's own report of its session (what `racklb state` shows).
        const doc = await readState(store);
        expect((doc.sessions.m2?.['192.0.2.65'] as { sessionState?: string } | undefined)?.sessionState ?? 'none').not.toBe('established');
        checks++;
        await new Promise((r) => setTimeout(r, 250));
      }
    } finally {
      await store.close();
    }
    expect(checks).toBeGreaterThan(10);
    await waitForRoute('leaf2', SVC, [], 1000);
    await waitForRoute('spine', SVC, ['203.0.113.1'], 1000);
  }, 60_000);

  it('correcting the BgpPeer\'s password brings the session and the route up', async () => {
    await apply(peer('leaf2', 65002, '192.0.2.65', P2));
    await waitForRoute('leaf2', SVC, ['192.0.2.74']);
    await waitForRoute('spine', SVC, ['203.0.113.1', '203.0.113.3']);
    expect(await leafEstablished('leaf2')).toBe(true);
  }, 60_000);

  it('no password appears in a log file, the journal, racklb state or events, or a command line', async () => {
    const places: Record<string, string> = {};
    for (const f of filesUnder(LAB_RUN_DIR).filter((p) => p.endsWith('.log'))) places[f] = readFileSync(f, 'utf8');
    const store = Store.open(LAB_REDIS_URL, { failFast: true });
    try {
      await store.connect();
      places.journal = JSON.stringify(await store.redis.xrange(store.keys.journal(), '-', '+'));
    } finally {
      await store.close();
    }
    expect(places.journal).toContain('peer-leaf2');
    places.state = await racklb('state', '--redis', LAB_REDIS_URL);
    places['state --json'] = await racklb('state', '--json', '--redis', LAB_REDIS_URL);
    places.events = await racklb('events', '--json', '--limit', '0', '--redis', LAB_REDIS_URL);
    const pids = [await processPid('m1', 'gobgpd'), await processPid('m2', 'gobgpd'), await processPid('m1', 'speaker'), await processPid('m2', 'speaker')];
    for (const entry of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
      try {
        const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ');
        if (cmd.includes(LAB_RUN_DIR) || pids.includes(Number(entry))) places[`cmdline ${entry}`] = cmd;
      } catch {
        /* exited */
      }
    }
    expect(Object.keys(places).filter((k) => k.endsWith('.log')).length).toBeGreaterThanOrEqual(9);
    const leaks = Object.entries(places).flatMap(([where, text]) => [P1, P2, WRONG].filter((p) => text.includes(p)).map((p) => `${where}: ${p}`));
    expect(leaks).toEqual([]);
    // The needle works: the passwords are where they must be, in the leaves' configs.
    expect(readFileSync(join(LAB_RUN_DIR, 'leaf1', 'bird.conf'), 'utf8')).toContain(P1);
    expect(readFileSync(join(LAB_RUN_DIR, 'leaf2', 'bgpd.conf'), 'utf8')).toContain(P2);
  }, 60_000);
});
