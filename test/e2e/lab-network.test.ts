/**
 * The lab's network proves ECMP on its own: default topology in namespaces, BIRD on spine, leaf1 and
 * leaf2, gobgpd (driven by the gobgp CLI, not by racklb) in rl-master1 and rl-worker-p002
 * announcing 198.51.100.10/32 with ADD-PATH; the kernel tables of the routers must show the
 * next hops of every node of each rack on the leaves and both leaves on the spine.
 * Needs root; skipped (with that said in the test name) otherwise.
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { birdFiles, birdShow, leafBirdConfig, spineBirdConfig, startRouter } from '../../src/lab/bird.js';
import { buildNetwork, destroyNetwork, listLabNamespaces } from '../../src/lab/netns.js';
import { labDir, netnsName } from '../../src/lab/paths.js';
import { isAlive, readPidFile, runCommand, spawnInNetns, waitFor, writeFileMkdir } from '../../src/lab/process.js';
import { formatRoutes, readRoutes } from '../../src/lab/routes.js';
import { defaultTopology, type Topology } from '../../src/lab/topology.js';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const SERVICE = '198.51.100.10/32';
const API_PORT = 50051;
const SPEAKER_AS = 65100;

interface Speaker {
  node: string;
  routerId: string;
  leaf: string;
  leafAs: number;
}

function gobgpdToml(s: Speaker): string {
  return `[global.config]
  as = ${SPEAKER_AS}
  router-id = "${s.routerId}"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "${s.leaf}"
    peer-as = ${s.leafAs}
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 9
    keepalive-interval = 3
  [neighbors.add-paths.config]
    send-max = 8
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
`;
}

const pids = new Set<number>();

function startGobgpd(s: Speaker, extraArgs: string[] = []): number {
  const dir = labDir(s.node);
  const child = spawnInNetns(netnsName(s.node), 'gobgpd', ['-f', join(dir, 'gobgpd.toml'), '--api-hosts', `127.0.0.1:${API_PORT}`, '--pprof-disable', '-p', ...extraArgs], {
    logFile: join(dir, 'gobgpd.log'),
    pidFile: join(dir, 'gobgpd.pid'),
  });
  pids.add(child.pid!);
  return child.pid!;
}

/** The gobgp CLI inside the node's namespace (its API listens on the namespace's own loopback). */
async function gobgp(node: string, args: string[]): Promise<string> {
  const { stdout } = await runCommand('ip', ['netns', 'exec', netnsName(node), 'gobgp', '-p', String(API_PORT), ...args], { timeoutMs: 10_000 });
  return stdout;
}

async function established(router: string, protocols: string[]): Promise<boolean> {
  const out = await birdShow(router, ['show', 'protocols']);
  return protocols.every((p) => new RegExp(`^${p}\\s+BGP\\s.*\\sEstablished`, 'm').test(out));
}

/** Waits until the router's table for SERVICE equals `want` (undefined: no route). */
async function waitRoute(router: string, want: string[] | undefined, timeoutMs = 10_000): Promise<number> {
  const t0 = performance.now();
  let last: Record<string, string[]> = {};
  await waitFor(
    `${router} to route ${SERVICE} via ${want === undefined ? '(nothing)' : want.join(', ')}`,
    async () => {
      last = await readRoutes(router);
      return JSON.stringify(last[SERVICE]) === JSON.stringify(want);
    },
    timeoutMs,
    20,
  ).catch((err: Error) => {
    throw new Error(`${err.message}\nlast table of ${router}:\n${formatRoutes(last)}`);
  });
  return performance.now() - t0;
}

const log = (msg: string): void => console.log(`[lab-network] ${msg}`);

if (!isRoot) console.warn('[lab-network] skipped: building network namespaces and running BIRD and gobgpd needs root');

describe.skipIf(!isRoot)('lab network: BIRD leaves and spine do ECMP (needs root; skipped when not root)', () => {
  let t: Topology;
  const speakers: Speaker[] = [
    { node: 'master1', routerId: '192.0.2.3', leaf: '192.0.2.1', leafAs: 65001 },
    { node: 'worker-p002', routerId: '192.0.2.66', leaf: '192.0.2.65', leafAs: 65002 },
  ];
  let built = false;
  let monitor: ChildProcess | undefined;

  beforeAll(async () => {
    const before = await listLabNamespaces();
    if (before.length > 0) {
      throw new Error(`lab namespaces already exist (${before.join(', ')}): another lab is running here; run \`racklb lab down\` if it is stale`);
    }
    t = defaultTopology();
    let t0 = performance.now();
    built = true;
    await buildNetwork(t);
    log(`network built in ${(performance.now() - t0).toFixed(0)} ms`);

    t0 = performance.now();
    await Promise.all([
      startRouter(t.spine.name, spineBirdConfig(t)),
      ...t.racks.map((rack) => startRouter(rack.name, leafBirdConfig(t, rack))),
    ]);
    for (const name of [t.spine.name, ...t.racks.map((r) => r.name)]) {
      const pid = await readPidFile(birdFiles(name).pidFile);
      if (pid !== undefined) pids.add(pid);
    }
    log(`BIRD started on 3 routers in ${(performance.now() - t0).toFixed(0)} ms`);
    await waitFor('the spine to establish both leaf sessions', () => established('spine', ['to_leaf1', 'to_leaf2']), 15_000, 50);
    log(`spine sessions Established ${(performance.now() - t0).toFixed(0)} ms after BIRD start`);

    t0 = performance.now();
    for (const s of speakers) {
      await writeFileMkdir(join(labDir(s.node), 'gobgpd.toml'), gobgpdToml(s));
      startGobgpd(s);
    }
    await Promise.all([
      waitFor('leaf1 to establish a session with master1', () => established('leaf1', ['node_master1']), 15_000, 50),
      waitFor('leaf2 to establish a session with worker-p002', () => established('leaf2', ['node_worker_p002']), 15_000, 50),
    ]);
    log(`speaker sessions Established ${(performance.now() - t0).toFixed(0)} ms after gobgpd start`);
  });

  afterAll(async () => {
    monitor?.kill('SIGKILL');
    if (!built) return;
    const { removed } = await destroyNetwork();
    log(`removed ${removed.join(', ')}`);
    expect(await listLabNamespaces()).toEqual([]);
    expect([...pids].filter(isAlive)).toEqual([]);
    // Safe to run twice.
    expect((await destroyNetwork()).removed).toEqual([]);
  });

  it('builds the namespaces, links and addresses of the default topology', async () => {
    expect(await listLabNamespaces()).toEqual(['leaf1', 'leaf2', 'master1', 'spine', 'worker-p001', 'worker-p002'].map(netnsName));
    // Nothing of the lab in the root namespace.
    const { stdout } = await runCommand('ip', ['-j', 'link', 'show']);
    expect((JSON.parse(stdout) as { ifalias?: string }[]).filter((l) => l.ifalias?.startsWith('rl:'))).toEqual([]);
    const { stdout: eth0 } = await runCommand('ip', ['-j', '-n', netnsName('worker-p001'), '-4', 'addr', 'show', 'eth0']);
    expect(eth0).toContain('"local":"192.0.2.4","prefixlen":26');
    expect(await readRoutes('worker-p001')).toEqual({ '0.0.0.0/0': ['192.0.2.1'] });
    expect(await readRoutes('spine', 'ipv6')).toEqual({});
    const { stdout: fwd } = await runCommand('ip', ['netns', 'exec', netnsName('leaf1'), 'sysctl', '-n', 'net.ipv4.ip_forward']);
    expect(fwd.trim()).toBe('1');
  });

  it('installs ECMP routes on the leaves and the spine, and shrinks them on withdrawal', async () => {
    let t0 = performance.now();
    await gobgp('master1', ['global', 'rib', '-a', 'ipv4', 'add', SERVICE, 'nexthop', '192.0.2.3', 'identifier', '1']);
    await gobgp('master1', ['global', 'rib', '-a', 'ipv4', 'add', SERVICE, 'nexthop', '192.0.2.4', 'identifier', '2']);
    await gobgp('worker-p002', ['global', 'rib', '-a', 'ipv4', 'add', SERVICE, 'nexthop', '192.0.2.66', 'identifier', '1']);
    const cliMs = performance.now() - t0;
    await waitRoute('leaf1', ['192.0.2.3', '192.0.2.4']);
    await waitRoute('leaf2', ['192.0.2.66']);
    await waitRoute('spine', ['203.0.113.1', '203.0.113.3']);
    log(`routes in leaf1, leaf2 and spine tables ${(performance.now() - t0).toFixed(0)} ms after the first gobgp add (${cliMs.toFixed(0)} ms of it in 3 CLI calls)`);

    // The whole tables, exactly: nothing but the Service route carries a next hop.
    expect(await readRoutes('leaf1')).toEqual({ [SERVICE]: ['192.0.2.3', '192.0.2.4'] });
    expect(await readRoutes('leaf2')).toEqual({ [SERVICE]: ['192.0.2.66'] });
    expect(await readRoutes('spine')).toEqual({ [SERVICE]: ['203.0.113.1', '203.0.113.3'] });
    log(`spine:\n${formatRoutes(await readRoutes('spine'))}leaf1:\n${formatRoutes(await readRoutes('leaf1'))}`);

    // Withdraw the path via 192.0.2.4 (identifier 2): leaf1 keeps only master1; the spine is unchanged.
    t0 = performance.now();
    await gobgp('master1', ['global', 'rib', '-a', 'ipv4', 'del', SERVICE, 'identifier', '2']);
    await waitRoute('leaf1', ['192.0.2.3']);
    log(`withdrawal in leaf1's table ${(performance.now() - t0).toFixed(0)} ms after gobgp del`);
    expect(await readRoutes('spine')).toEqual({ [SERVICE]: ['203.0.113.1', '203.0.113.3'] });

    // Withdraw leaf2's only path: the spine shrinks to leaf1.
    t0 = performance.now();
    await gobgp('worker-p002', ['global', 'rib', '-a', 'ipv4', 'del', SERVICE, 'identifier', '1']);
    await waitRoute('leaf2', undefined);
    await waitRoute('spine', ['203.0.113.1']);
    log(`withdrawal in leaf2's and spine's tables ${(performance.now() - t0).toFixed(0)} ms after gobgp del`);
  });
});
