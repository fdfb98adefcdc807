/**
 * Interoperability (issue 8): PorterLB's multi-router guide, as test/e2e/lab-guide.test.ts runs it,
 * with FRR (Debian's zebra and bgpd) as router daemon: once with every router on FRR, once with a
 * mix (FRR spine, one BIRD leaf and one FRR leaf), the topology choosing `daemon: frr` per router.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LabApiServer, parseManifests } from '../../src/lab/apiserver.js';
import { frrShow } from '../../src/lab/frr.js';
import { failOnRejections, labDown, labUp, readLabState, syncSpeakers, LAB_REDIS_URL } from '../../src/lab/lab.js';
import { listLabNamespaces } from '../../src/lab/netns.js';
import { waitFor } from '../../src/lab/process.js';
import { readRoutes } from '../../src/lab/routes.js';
import { parseTopology } from '../../src/lab/topology.js';
import { readState } from '../../src/state/read.js';
import { Store } from '../../src/store/store.js';
import { isRoot, waitForRoute } from '../helpers/lab.js';

const SVC = '198.51.100.10/32';
const LEAF1_UPLINK = '203.0.113.1';
const LEAF2_UPLINK = '203.0.113.3';

function topologyYaml(daemons: { spine: string; leaf1: string; leaf2: string }): string {
  return `spine: { name: spine, asn: 65000, daemon: ${daemons.spine} }
racks:
  - name: leaf1
    asn: 65001
    daemon: ${daemons.leaf1}
    subnet: 192.0.2.0/26
    router: 192.0.2.1
    uplink: 203.0.113.0/31
    nodes:
      - { name: master1, ip: 192.0.2.3 }
      - { name: worker-p001, ip: 192.0.2.4 }
  - name: leaf2
    asn: 65002
    daemon: ${daemons.leaf2}
    subnet: 192.0.2.64/26
    router: 192.0.2.65
    uplink: 203.0.113.2/31
    nodes:
      - { name: worker-p002, ip: 192.0.2.66 }
`;
}

/** Processes of FRR's daemons still running from this lab's run directory. */
function frrProcesses(): string[] {
  const out: string[] = [];
  for (const entry of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (/\/usr\/lib\/frr\/(zebra|bgpd)/.test(cmd) && cmd.includes(process.env.RACKLB_LAB_RUN_DIR ?? '/run/racklb-lab')) out.push(`${entry}: ${cmd}`);
    } catch {
      /* exited */
    }
  }
  return out;
}

const cases = [
  { name: 'every router on FRR', daemons: { spine: 'frr', leaf1: 'frr', leaf2: 'frr' } },
  { name: 'a mix: FRR spine, BIRD leaf1, FRR leaf2', daemons: { spine: 'frr', leaf1: 'bird', leaf2: 'frr' } },
];

describe.skipIf(!isRoot()).each(cases)('PorterLB multi-router guide with $name', ({ daemons }) => {
  let api: LabApiServer;

  // In-process rather than through the CLI (test/e2e/lab-guide.test.ts covers the CLI): the same
  // steps, a fraction of the time.
  const label = async (node: string, ...labels: string[]): Promise<void> => {
    failOnRejections([await api.labelNode(node, labels)]);
    await syncSpeakers(readLabState());
  };
  const applyFile = async (file: string): Promise<void> => {
    failOnRejections(await api.apply(parseManifests(readFileSync(file, 'utf8'), file)));
    await syncSpeakers(readLabState());
  };

  beforeAll(async () => {
    await labDown();
    const lines: string[] = [];
    const state = await labUp(parseTopology(topologyYaml(daemons)), (line) => lines.push(line));
    api = new LabApiServer(state.functions);
    expect(lines.join('\n')).toContain(`spine (${daemons.spine === 'frr' ? 'FRR' : 'BIRD'}), leaf1 (${daemons.leaf1 === 'frr' ? 'FRR' : 'BIRD'}), leaf2 (FRR)`);
  }, 120_000);

  afterAll(async () => {
    await labDown();
  }, 120_000);

  it('before: one speaker under leaf1, so the spine reaches the Service only through leaf1', async () => {
    await label('master1', 'lb.kubesphere.io/v1alpha1=porter');
    await applyFile('examples/lab/before.yaml');
    await waitForRoute('spine', SVC, [LEAF1_UPLINK]);
    await waitForRoute('leaf1', SVC, ['192.0.2.3', '192.0.2.4']);
    expect(await readRoutes('spine', 'ipv4')).toEqual({ [SVC]: [LEAF1_UPLINK] });
    expect(await readRoutes('leaf1', 'ipv4')).toEqual({ [SVC]: ['192.0.2.3', '192.0.2.4'] });
    expect(await readRoutes('leaf2', 'ipv4')).toEqual({});
  }, 90_000);

  it('after: speakers in both racks and BgpPeers per rack spread the Service over every node', async () => {
    await label('worker-p002', 'lb.kubesphere.io/v1alpha1=porter');
    await label('master1', 'porter.kubesphere.io/rack=leaf1');
    await label('worker-p002', 'porter.kubesphere.io/rack=leaf2');
    await applyFile('examples/lab/after.yaml');
    await waitForRoute('spine', SVC, [LEAF1_UPLINK, LEAF2_UPLINK]);
    await waitForRoute('leaf2', SVC, ['192.0.2.66']);
    expect(await readRoutes('spine', 'ipv4')).toEqual({ [SVC]: [LEAF1_UPLINK, LEAF2_UPLINK] });
    expect(await readRoutes('leaf1', 'ipv4')).toEqual({ [SVC]: ['192.0.2.3', '192.0.2.4'] });
    expect(await readRoutes('leaf2', 'ipv4')).toEqual({ [SVC]: ['192.0.2.66'] });
    const store = Store.open(LAB_REDIS_URL, { failFast: true });
    try {
      await store.connect();
      await waitFor('the speakers to report their sessions', async () => {
        const doc = await readState(store);
        const state = (node: string, addr: string): unknown => (doc.sessions[node]?.[addr] as { sessionState?: string } | undefined)?.sessionState;
        return state('master1', '192.0.2.1') === 'established' && state('worker-p002', '192.0.2.65') === 'established';
      }, 10_000, 200);
    } finally {
      await store.close();
    }
    // leaf2 is FRR: its own view agrees.
    expect(await frrShow('leaf2', 'show ip bgp 198.51.100.10/32')).toMatch(/192\.0\.2\.66/);
  }, 90_000);

  it('removing the placement label stops that speaker and its routes leave the leaf', async () => {
    await label('worker-p002', 'lb.kubesphere.io/v1alpha1-');
    await waitForRoute('leaf2', SVC, []);
    await waitForRoute('spine', SVC, [LEAF1_UPLINK]);
    await label('worker-p002', 'lb.kubesphere.io/v1alpha1=porter');
    await waitForRoute('spine', SVC, [LEAF1_UPLINK, LEAF2_UPLINK]);
  }, 90_000);

  it('lab down stops every FRR daemon and removes the namespaces', async () => {
    expect(frrProcesses().length).toBe(2 * Object.values(daemons).filter((d) => d === 'frr').length);
    await labDown();
    expect(frrProcesses()).toEqual([]);
    expect(await listLabNamespaces()).toEqual([]);
  }, 60_000);
});
