/**
 * `npm run lab`: PorterLB's multi-router guide, before and after, on real routers.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LABELS } from '../core/types.js';
import { LabApiServer, parseManifests } from './apiserver.js';
import { failOnRejections, labDown, labIsUp, labUp, repoRoot, syncSpeakers, type LabState, type Say } from './lab.js';
import { readRoutes } from './routes.js';
import { waitFor } from './process.js';
import { defaultTopology, type Topology } from './topology.js';
import { connectionsFrom, formatCounts, RESPONDER_PORT, serveOnNodes } from './traffic.js';

export const DEMO_IP = '198.51.100.10';
export const DEMO_PREFIX = `${DEMO_IP}/32`;
const TRAFFIC_CONNECTIONS = 60;

/** Names for the addresses a person sees in a router's table. */
export function addressNames(t: Topology): Map<string, string> {
  const names = new Map<string, string>();
  for (const rack of t.racks) {
    names.set(rack.router, rack.name);
    names.set(rack.uplink.leaf, rack.name);
    names.set(rack.uplink.spine, t.spine.name);
    for (const n of rack.nodes) names.set(n.ip, n.name);
  }
  return names;
}

export async function routerTable(t: Topology, prefix: string): Promise<string> {
  const names = addressNames(t);
  const routers = [t.spine.name, ...t.racks.map((r) => r.name)];
  const lines: string[] = [];
  for (const router of routers) {
    const hops = (await readRoutes(router, 'ipv4'))[prefix] ?? [];
    const shown = hops.length ? hops.map((h) => `${names.get(h) ?? '?'} (${h})`).join(', ') : 'no route';
    lines.push(`    ${router.padEnd(8)} ${prefix} -> ${shown}`);
  }
  return lines.join('\n');
}

async function waitForHops(router: string, prefix: string, expected: string[], timeoutMs = 60_000): Promise<void> {
  const want = [...expected].sort().join(',');
  await waitFor(`${router} to route ${prefix} via ${expected.join(', ')}`, async () => ((await readRoutes(router, 'ipv4'))[prefix] ?? []).slice().sort().join(',') === want, timeoutMs, 100);
}

function manifests(name: string): Record<string, unknown>[] {
  const path = join(repoRoot(), 'examples', 'lab', name);
  return parseManifests(readFileSync(path, 'utf8'), path);
}

export async function runDemo(say: Say): Promise<LabState> {
  if (labIsUp()) {
    say('a lab is up already: taking it down first');
    await labDown();
  }
  const t = defaultTopology();
  const state = await labUp(t, say);
  const api = new LabApiServer(state.functions);
  const leaf1 = t.racks[0]!;
  const leaf2 = t.racks[1]!;
  const uplink = (rack: typeof leaf1): string => rack.uplink.leaf;

  say('');
  say('== Before: PorterLB as installed by default =============================================');
  say('   One speaker, on master1 under leaf1, peering with leaf1 (BgpPeer without nodeSelector).');
  failOnRejections([await api.labelNode('master1', [`${LABELS.speaker}=porter`])]);
  await syncSpeakers(state, (l) => say(`   ${l}`));
  failOnRejections(await api.apply(manifests('before.yaml')));
  await waitForHops(leaf1.name, DEMO_PREFIX, leaf1.nodes.map((n) => n.ip));
  await waitForHops(t.spine.name, DEMO_PREFIX, [uplink(leaf1)]);
  say(await routerTable(t, DEMO_PREFIX));
  await serveOnNodes(t, DEMO_IP);
  say(`   ${TRAFFIC_CONNECTIONS} TCP connections from the spine to ${DEMO_IP}:${RESPONDER_PORT} (every node holds the IP, as kube-proxy would), answered by:`);
  say(`    ${formatCounts(await connectionsFrom(t.spine.name, DEMO_IP, TRAFFIC_CONNECTIONS))}`);
  say('   The spine reaches the Service only through leaf1: worker-p002 carries none of its traffic.');

  say('');
  say('== After: the guide\'s configuration ======================================================');
  say('   kubectl label --overwrite nodes master1 worker-p002 lb.kubesphere.io/v1alpha1=porter');
  failOnRejections([await api.labelNode('worker-p002', [`${LABELS.speaker}=porter`])]);
  await syncSpeakers(state, (l) => say(`   ${l}`));
  say('   kubectl label --overwrite nodes master1 porter.kubesphere.io/rack=leaf1');
  say('   kubectl label --overwrite nodes worker-p002 porter.kubesphere.io/rack=leaf2');
  failOnRejections([await api.labelNode('master1', [`${LABELS.rack[0]}=leaf1`])]);
  failOnRejections([await api.labelNode('worker-p002', [`${LABELS.rack[0]}=leaf2`])]);
  say('   BgpPeers with spec.nodeSelector.matchLabels porter.kubesphere.io/rack: leaf1 / leaf2');
  failOnRejections(await api.apply(manifests('after.yaml')));
  await waitForHops(leaf2.name, DEMO_PREFIX, leaf2.nodes.map((n) => n.ip));
  await waitForHops(t.spine.name, DEMO_PREFIX, [uplink(leaf1), uplink(leaf2)]);
  await waitForHops(leaf1.name, DEMO_PREFIX, leaf1.nodes.map((n) => n.ip));
  say(await routerTable(t, DEMO_PREFIX));
  say(`   ${TRAFFIC_CONNECTIONS} TCP connections from the spine to ${DEMO_IP}:${RESPONDER_PORT}, answered by:`);
  say(`    ${formatCounts(await connectionsFrom(t.spine.name, DEMO_IP, TRAFFIC_CONNECTIONS))}`);
  say('   The spine spreads the Service over leaf1 and leaf2; leaf1 over master1 and worker-p001;');
  say('   leaf2 sends it to worker-p002. All three nodes carry traffic.');

  say('');
  say('The lab stays up. Explore it:');
  say('  npx racklb lab routes spine              # any router: spine, leaf1, leaf2 (--json for tools)');
  say('  ip -n rl-leaf1 route                     # the kernel tables themselves');
  say(`  npx racklb lab traffic spine ${DEMO_IP}   # which node answers connections, from any router`);
  say(`  npx racklb state --redis ${state.redis}`);
  say('  npx racklb lab label node worker-p001 porter.kubesphere.io/rack=leaf2');
  say('  npx racklb lab restart master1 speaker   # routes stay in place');
  say('  npx racklb lab apply -f FILE / lab delete -f FILE');
  say('Tear it down with: npx racklb lab down');
  return state;
}
