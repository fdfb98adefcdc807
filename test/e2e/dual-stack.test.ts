/**
 * IPv6 and dual-stack in the lab (issue 8): examples/lab/dual-stack-topology.yaml gives every rack
 * an IPv6 segment beside its IPv4 one (leaf1 and the spine on BIRD, leaf2 on FRR), and
 * examples/lab/dual-stack.yaml adds one IPv6 BgpPeer per leaf over IPv6 and an IPv6 Eip. IPv6
 * Service IPs must reach the spine through every leaf, with the rack's nodes' IPv6 addresses as
 * next hops on each leaf, over IPv6 sessions, and traffic must follow: TCP connections from the
 * spine reach every node of both racks. A dual-stack Service is announced in both families.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_REDIS_URL } from '../../src/lab/lab.js';
import { birdShow } from '../../src/lab/bird.js';
import { netnsName } from '../../src/lab/paths.js';
import { runCommand } from '../../src/lab/process.js';
import { isRoot, labRoutes, racklb, waitForRoute } from '../helpers/lab.js';

const V4 = '198.51.100.10/32';
const V6 = '2001:db8:100::/128';
// The dual-stack Service web-dual: the next free address of each family's pool.
const DUAL4 = '198.51.100.11/32';
const DUAL6 = '2001:db8:100::1/128';
const SPINE_V4 = ['203.0.113.1', '203.0.113.3'];
// Uplink /127s taken in rack order from the IPv6 uplink pool: the leaf has the higher address.
const SPINE_V6 = ['2001:db8:ffff::1', '2001:db8:ffff::3'];
const LEAF1_V6 = ['2001:db8:0:1::3', '2001:db8:0:1::4'];
const LEAF2_V6 = ['2001:db8:0:2::66'];

describe.skipIf(!isRoot())('IPv6 and dual-stack in the lab', () => {
  beforeAll(async () => {
    await racklb('lab', 'down');
    await racklb('lab', 'up', '--topology', 'examples/lab/dual-stack-topology.yaml');
    for (const node of ['master1', 'worker-p002']) await racklb('lab', 'label', 'node', node, 'lb.kubesphere.io/v1alpha1=porter');
    await racklb('lab', 'label', 'node', 'master1', 'porter.kubesphere.io/rack=leaf1');
    await racklb('lab', 'label', 'node', 'worker-p002', 'porter.kubesphere.io/rack=leaf2');
    await racklb('lab', 'apply', '-f', 'examples/lab/before.yaml');
    await racklb('lab', 'apply', '-f', 'examples/lab/after.yaml');
    await racklb('lab', 'apply', '-f', 'examples/lab/dual-stack.yaml');
  }, 120_000);

  afterAll(async () => {
    await racklb('lab', 'down');
  }, 120_000);

  it('an IPv6 Service reaches the spine through both leaves, each leaf through all its nodes, beside the IPv4 one', async () => {
    await waitForRoute('spine', V6, SPINE_V6);
    await waitForRoute('leaf1', V6, LEAF1_V6);
    await waitForRoute('leaf2', V6, LEAF2_V6);
    await waitForRoute('spine', V4, SPINE_V4);
    await waitForRoute('spine', DUAL6, SPINE_V6);
    await waitForRoute('spine', DUAL4, SPINE_V4);
    expect(await labRoutes('spine')).toEqual({ [V4]: SPINE_V4, [DUAL4]: SPINE_V4, [V6]: SPINE_V6, [DUAL6]: SPINE_V6 });
    expect(await labRoutes('leaf1')).toEqual({ [V4]: ['192.0.2.3', '192.0.2.4'], [DUAL4]: ['192.0.2.3', '192.0.2.4'], [V6]: LEAF1_V6, [DUAL6]: LEAF1_V6 });
    expect(await labRoutes('leaf2')).toEqual({ [V4]: ['192.0.2.66'], [DUAL4]: ['192.0.2.66'], [V6]: LEAF2_V6, [DUAL6]: LEAF2_V6 });
  }, 90_000);

  it('a dual-stack Service holds one address per family, in racklb state and racklb explain', async () => {
    const state = JSON.parse(await racklb('state', '--json', '--redis', LAB_REDIS_URL)) as { services: Record<string, { ip: string | null; addresses?: { family: string; ip: string | null; pool: string | null }[] }> };
    expect(state.services['default/web-dual']?.ip).toBe('198.51.100.11');
    expect(state.services['default/web-dual']?.addresses).toEqual([
      { family: 'ipv4', ip: '198.51.100.11', pool: 'porter-bgp-eip', pending: null },
      { family: 'ipv6', ip: '2001:db8:100::1', pool: 'eip-sample-pool-v6', pending: null },
    ]);
    const explain = await racklb('explain', 'service', 'default/web-dual', '--redis', LAB_REDIS_URL);
    expect(explain).toContain('198.51.100.11');
    expect(explain).toContain('2001:db8:100::1');
  }, 30_000);

  it('IPv6 routes travel over IPv6 sessions, which the speakers report as established', async () => {
    // On BIRD's leaf the IPv6 route comes from a session of the IPv6 template (node6_* or
    // speaker_v6_*): the IPv4 sessions have no IPv6 channel at all.
    const route = await birdShow('leaf1', ['show', 'route', 'for', '2001:db8:100::', 'all']);
    expect(route).toMatch(/\[(node6_master1|speaker_v6_\d+) /);
    expect(route).not.toMatch(/\[(node_master1|speaker\d+) /);
    // On FRR's leaf, the route's path came from the speaker's IPv6 address.
    const frr = await runCommand('ip', ['netns', 'exec', netnsName('leaf2'), 'ip', '-6', 'route', 'show', '2001:db8:100::']);
    expect(frr.stdout).toContain('via 2001:db8:0:2::66');
    const state = JSON.parse(await racklb('state', '--json', '--redis', LAB_REDIS_URL)) as { sessions: Record<string, Record<string, { sessionState: string }>> };
    expect(state.sessions.master1?.['2001:db8:0:1::1']?.sessionState).toBe('established');
    expect(state.sessions.master1?.['192.0.2.1']?.sessionState).toBe('established');
    expect(state.sessions['worker-p002']?.['2001:db8:0:2::1']?.sessionState).toBe('established');
  }, 30_000);

  it('traffic follows the tables: the spine spreads connections over every node of both racks, each leaf over its own, in both families', async () => {
    const traffic = async (from: string, ip: string, n: number): Promise<Record<string, number>> => JSON.parse(await racklb('lab', 'traffic', from, ip, '--connections', String(n), '--json')) as Record<string, number>;
    for (const ip of ['198.51.100.10', '2001:db8:100::']) {
      // 60 connections, hashed on the 5-tuple: a node left out by chance alone is below 1e-7.
      const fromSpine = await traffic('spine', ip, 60);
      expect(Object.keys(fromSpine).sort(), `${ip} from the spine: ${JSON.stringify(fromSpine)}`).toEqual(['master1', 'worker-p001', 'worker-p002']);
      const fromLeaf1 = await traffic('leaf1', ip, 60);
      expect(Object.keys(fromLeaf1).sort(), `${ip} from leaf1: ${JSON.stringify(fromLeaf1)}`).toEqual(['master1', 'worker-p001']);
      expect(await traffic('leaf2', ip, 10)).toEqual({ 'worker-p002': 10 });
    }
    // The dual-stack Service, both of its addresses, from the spine.
    for (const ip of ['198.51.100.11', '2001:db8:100::1']) {
      const fromSpine = await traffic('spine', ip, 60);
      expect(Object.keys(fromSpine).sort(), `${ip} from the spine: ${JSON.stringify(fromSpine)}`).toEqual(['master1', 'worker-p001', 'worker-p002']);
    }
  }, 60_000);

  it('relabelling a node into the other rack moves its IPv6 next hop out of leaf1, as for IPv4', async () => {
    await racklb('lab', 'label', 'node', 'worker-p001', 'porter.kubesphere.io/rack=leaf2');
    await waitForRoute('leaf1', V6, ['2001:db8:0:1::3']);
    await waitForRoute('leaf1', V4, ['192.0.2.3']);
    // leaf2's speaker keeps only next hops on its own subnet: worker-p001 is not on it.
    expect((await labRoutes('leaf2'))[V6]).toEqual(LEAF2_V6);
    await racklb('lab', 'label', 'node', 'worker-p001', 'porter.kubesphere.io/rack-');
    await waitForRoute('leaf1', V6, LEAF1_V6);
  }, 60_000);

  it('deleting the IPv6 and dual-stack Services withdraws them everywhere, both families, and leaves the IPv4 one alone', async () => {
    await racklb('lab', 'delete', '-f', 'examples/lab/dual-stack.yaml');
    for (const router of ['spine', 'leaf1', 'leaf2']) {
      for (const prefix of [V6, DUAL4, DUAL6]) await waitForRoute(router, prefix, []);
    }
    expect(await labRoutes('spine')).toEqual({ [V4]: SPINE_V4 });
  }, 60_000);
});
