/**
 * Builds and tears down the lab's network out of network namespaces, one per router and per node,
 * named `rl-<name>`.
 *
 * ```
 *  rl-spine:  lo, rack<i> (veth, spine side of rack i's uplink /31, lower address)
 *  rl-<leaf>: lo, up0 (veth, leaf side of the uplink, higher address),
 *             br0 (bridge = the rack's L2 segment, holds the router address),
 *             node<j> (veth, enslaved to br0, one per node of the rack, in file order)
 *  rl-<node>: lo, eth0 (veth, node IP/prefix of the rack subnet, default route via the router)
 * ```
 * A rack with `subnet6` gets the same in IPv6 beside it: the uplink /127, the router's address on
 * br0, each node's `ip6` and an IPv6 default route. IPv6 addresses skip duplicate address detection
 * (every address is the lab's own), so sessions can start the moment the link is up.
 * Every link is created directly inside its namespaces (`ip -n A link add X type veth peer name Y
 * netns B`), so nothing ever appears in the root namespace and nothing can be routed off the
 * machine. Each link's alias names the namespace at its other end (`rl:<name>`), so
 * `ip -n rl-leaf1 link` shows which node sits behind `node1`.
 */
import { readFile, readdir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { RacklbError } from '../errors.js';
import { NETNS_PREFIX, netnsName } from './paths.js';
import { isAlive, killPid, runCommand, waitFor } from './process.js';
import type { LabNode, RackTopology, Topology } from './topology.js';

/** Interface names inside the lab's namespaces (index-based, so long names never hit IFNAMSIZ). */
export const IFACE = {
  /** Bridge in a leaf namespace: the rack's L2 segment; carries the router address. */
  bridge: 'br0',
  /** Leaf side of the uplink to the spine. */
  uplink: 'up0',
  /** The node's only interface, in its own namespace. */
  nodeEth: 'eth0',
  /** Leaf-side port of node `index` (position in the rack's node list). */
  nodePort: (index: number): string => `node${index}`,
  /** Spine side of the uplink of rack `index` (position in the topology's rack list). */
  spinePort: (index: number): string => `rack${index}`,
} as const;

/** Alias put on every link the lab creates: `rl:<name of the namespace at the other end>`. */
const ALIAS_PREFIX = 'rl:';

const PARALLEL = 8;

/** Where `ip netns add` puts its namespace files. */
const NETNS_RUN_DIR = '/run/netns';

/** Rejects with RacklbError('RACKLB_LAB') unless running as root. */
export function requireRoot(what = 'the lab'): void {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    throw new RacklbError('RACKLB_LAB', `${what} needs root (network namespaces, BIRD, gobgpd on port 179); run it as root`);
  }
}

/** Names of the network namespaces whose name starts with `rl-`, sorted. */
export async function listLabNamespaces(): Promise<string[]> {
  const { stdout } = await runCommand('ip', ['netns', 'list']);
  // Lines look like "rl-leaf1 (id: 3)" or just "rl-leaf1".
  return stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name.startsWith(NETNS_PREFIX))
    .sort();
}

/**
 * Builds the network of topology `t`. Fails without touching anything when one of its namespaces
 * already exists; on a failure half-way, removes the namespaces it made and rethrows.
 */
export async function buildNetwork(t: Topology): Promise<void> {
  requireRoot('racklb lab');
  const routers = [t.spine.name, ...t.racks.map((r) => r.name)];
  const nodes = t.racks.flatMap((r) => r.nodes.map((n) => n.name));
  const all = [...routers, ...nodes].map(netnsName);

  const existing = new Set(await listLabNamespaces());
  const clash = all.filter((ns) => existing.has(ns));
  if (clash.length > 0) {
    throw new RacklbError('RACKLB_LAB', `network namespace${clash.length > 1 ? 's' : ''} ${clash.join(', ')} already exist${clash.length > 1 ? '' : 's'}; run \`racklb lab down\` first`);
  }

  try {
    // 1. Namespaces, in one ip process.
    await runCommand('ip', ['-batch', '-'], { input: all.map((ns) => `netns add ${ns}\n`).join('') });

    // 2. Sysctls, before any interface exists so that new interfaces take conf.default. IPv4 conf
    //    values are inherited from the root namespace: routers get forwarding on and rp_filter off
    //    (ECMP); nodes need a call only when the root namespace forwards (they must not).
    const rootForwards = (await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8').catch(() => '0')).trim() !== '0';
    //    IPv6 conf values start from the kernel's defaults in a new namespace: routers forward, and
    //    no interface runs duplicate address detection (link-local addresses included).
    const ipv6 = t.racks.some((r) => r.ipv6 !== undefined);
    const noDad = ipv6 ? ['net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0'] : [];
    const sysctls = all.flatMap((ns) => {
      if (routers.some((r) => netnsName(r) === ns)) {
        // ECMP hashes on the 5-tuple, as data-centre switches do: connections from one client
        // spread over every next hop (the default hashes addresses only, so one client sticks to one node).
        const hash = ['net.ipv4.fib_multipath_hash_policy=1', ...(ipv6 ? ['net.ipv6.fib_multipath_hash_policy=1'] : [])];
        return [[ns, 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', ...hash, ...(ipv6 ? ['net.ipv6.conf.all.forwarding=1'] : []), ...noDad]];
      }
      const settings = [...(rootForwards ? ['net.ipv4.ip_forward=0'] : []), ...noDad];
      return settings.length > 0 ? [[ns, ...settings]] : [];
    });
    await parallel(sysctls, PARALLEL, async ([ns, ...settings]) => {
      await runCommand('ip', ['netns', 'exec', ns!, 'sysctl', '-q', '-w', ...settings]);
    });

    // 3. Spine: one veth per rack, the leaf end created straight in the leaf's namespace.
    await ipBatch(netnsName(t.spine.name), spineBatch(t));
    // 4. Leaves: uplink address, bridge, one port per node (node end created in the node's namespace).
    await parallel(t.racks, PARALLEL, (rack) => ipBatch(netnsName(rack.name), leafBatch(t, rack)));
    // 5. Nodes: address, default route via the leaf.
    const nodeJobs = t.racks.flatMap((rack) => rack.nodes.map((node) => ({ rack, node })));
    await parallel(nodeJobs, PARALLEL, ({ rack, node }) => ipBatch(netnsName(node.name), nodeBatch(rack, node)));
  } catch (err) {
    // None of these existed before: whatever of them exists now is ours to remove.
    const now = new Set(await listLabNamespaces().catch(() => [] as string[]));
    await removeNamespaces(all.filter((ns) => now.has(ns))).catch(() => undefined);
    throw err;
  }
}

function spineBatch(t: Topology): string[] {
  const lines = ['link set lo up'];
  t.racks.forEach((rack, i) => {
    const port = IFACE.spinePort(i);
    lines.push(
      `link add ${port} type veth peer name ${IFACE.uplink} netns ${netnsName(rack.name)}`,
      `link set ${port} alias ${ALIAS_PREFIX}${rack.name}`,
      `addr add ${rack.uplink.spine}/31 dev ${port}`,
      ...(rack.ipv6 ? [`addr add ${rack.ipv6.uplink.spine}/127 dev ${port} nodad`] : []),
      `link set ${port} up`,
    );
  });
  return lines;
}

function leafBatch(t: Topology, rack: RackTopology): string[] {
  const prefixLen = rack.subnet.split('/')[1]!;
  const lines = [
    'link set lo up',
    `link set ${IFACE.uplink} alias ${ALIAS_PREFIX}${t.spine.name}`,
    `addr add ${rack.uplink.leaf}/31 dev ${IFACE.uplink}`,
    ...(rack.ipv6 ? [`addr add ${rack.ipv6.uplink.leaf}/127 dev ${IFACE.uplink} nodad`] : []),
    `link set ${IFACE.uplink} up`,
    // No multicast snooping: without an MLD querier in the lab it has nothing to learn from, and
    // IPv6 neighbour discovery is multicast.
    `link add ${IFACE.bridge} type bridge forward_delay 0 stp_state 0 mcast_snooping 0`,
    `link set ${IFACE.bridge} alias ${ALIAS_PREFIX}rack-${rack.name}`,
    `addr add ${rack.router}/${prefixLen} dev ${IFACE.bridge}`,
    ...(rack.ipv6 ? [`addr add ${rack.ipv6.router}/${rack.ipv6.subnet.split('/')[1]!} dev ${IFACE.bridge} nodad`] : []),
    `link set ${IFACE.bridge} up`,
  ];
  rack.nodes.forEach((node, j) => {
    const port = IFACE.nodePort(j);
    lines.push(
      `link add ${port} type veth peer name ${IFACE.nodeEth} netns ${netnsName(node.name)}`,
      `link set ${port} alias ${ALIAS_PREFIX}${node.name}`,
      `link set ${port} master ${IFACE.bridge}`,
      `link set ${port} up`,
    );
  });
  return lines;
}

function nodeBatch(rack: RackTopology, node: LabNode): string[] {
  const prefixLen = rack.subnet.split('/')[1]!;
  const v6 = rack.ipv6 !== undefined && node.ip6 !== undefined ? rack.ipv6 : undefined;
  return [
    'link set lo up',
    `link set ${IFACE.nodeEth} alias ${ALIAS_PREFIX}${rack.name}`,
    `addr add ${node.ip}/${prefixLen} dev ${IFACE.nodeEth}`,
    ...(v6 ? [`addr add ${node.ip6!}/${v6.subnet.split('/')[1]!} dev ${IFACE.nodeEth} nodad`] : []),
    `link set ${IFACE.nodeEth} up`,
    `route add default via ${rack.router} dev ${IFACE.nodeEth}`,
    ...(v6 ? [`route add ::/0 via ${v6.router} dev ${IFACE.nodeEth}`] : []),
  ];
}

async function ipBatch(netns: string, lines: string[]): Promise<void> {
  await runCommand('ip', ['-n', netns, '-batch', '-'], { input: `${lines.join('\n')}\n` });
}

/**
 * Removes every `rl-` namespace (after stopping every process inside it: SIGTERM, SIGKILL after
 * 3 s) and any link the lab made that is left in the root namespace (there should be none: the
 * lab never creates links there). Safe to run twice and after a crash. Resolves with what it
 * removed: namespace names, and `link <name>` for root-namespace links.
 */
export async function destroyNetwork(): Promise<{ removed: string[] }> {
  requireRoot('racklb lab down');
  const namespaces = await listLabNamespaces();
  await removeNamespaces(namespaces);
  const removed = [...namespaces];

  // Defensive: links with the lab's alias in the root namespace.
  const { stdout } = await runCommand('ip', ['-j', 'link', 'show']);
  const links = parseJsonArray(stdout) as { ifname?: string; ifalias?: string }[];
  for (const link of links) {
    if (typeof link.ifname === 'string' && typeof link.ifalias === 'string' && link.ifalias.startsWith(ALIAS_PREFIX)) {
      await runCommand('ip', ['link', 'del', link.ifname]).catch((err: unknown) => {
        if (!/Cannot find device/.test(String(err))) throw err;
      });
      removed.push(`link ${link.ifname}`);
    }
  }
  return { removed };
}

async function removeNamespaces(namespaces: string[]): Promise<void> {
  if (namespaces.length === 0) return;
  // Processes first: a namespace whose file is removed lives on, invisibly, as long as a process
  // is inside it.
  const pids = await pidsInNamespaces(namespaces);
  await Promise.all(pids.map((pid) => killPid(pid, 'SIGTERM', 3_000)));
  const survivors = pids.filter(isAlive);
  if (survivors.length > 0) {
    throw new RacklbError('RACKLB_LAB', `processes ${survivors.join(', ')} in the lab's namespaces survived SIGKILL`);
  }

  await runCommand('ip', ['-force', '-batch', '-'], { input: namespaces.map((ns) => `netns del ${ns}\n`).join('') }).catch((err: unknown) => {
    // -force goes on after a failed line; a namespace removed meanwhile is fine, the check below decides.
    if (!/No such file or directory/.test(String(err))) throw err;
  });
  await waitFor(
    `namespaces ${namespaces.length > 5 ? `${namespaces.slice(0, 5).join(', ')}, ...` : namespaces.join(', ')} to disappear`,
    async () => {
      const now = new Set(await listLabNamespaces());
      return namespaces.every((ns) => !now.has(ns));
    },
    5_000,
    50,
  );
}

/** Pids of the processes inside a namespace (like `ip netns pids`); empty when it is gone. */
export async function namespacePids(netns: string): Promise<number[]> {
  return pidsInNamespaces([netns]);
}

/** Pids of the processes inside any of these namespaces, in one pass over /proc. */
async function pidsInNamespaces(namespaces: string[]): Promise<number[]> {
  const inodes = new Set<string>();
  for (const ns of namespaces) {
    try {
      inodes.add(`net:[${(await stat(join(NETNS_RUN_DIR, ns))).ino}]`);
    } catch {
      /* gone */
    }
  }
  if (inodes.size === 0) return [];
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (inodes.has(await readlink(`/proc/${entry}/ns/net`))) pids.push(Number(entry));
    } catch {
      /* exited meanwhile, or a kernel thread */
    }
  }
  return pids;
}

function parseJsonArray(text: string): unknown[] {
  if (text.trim() === '') return [];
  const value: unknown = JSON.parse(text);
  return Array.isArray(value) ? value : [];
}

async function parallel<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const errors: unknown[] = [];
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (err) {
        errors.push(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (errors.length > 0) throw errors[0];
}
