/**
 * The speaker's decisions, as pure functions: what gobgpd should hold (global config, peers,
 * paths) given the desired state read from Redis, and the difference from what it holds now.
 */
import ipaddr from 'ipaddr.js';
import { hostPrefix, nextHopsFor } from '../src/core/intents.js';
import { requireIp } from '../src/core/ip.js';
import type { BgpPeerRecord, Family, NextHopCandidate, NodeRecord, RackBgpConf, ServiceIpIntent } from '../src/core/types.js';
import type { GobgpGlobalConfig, GobgpPath, GobgpPeerConfig, GobgpPeerStatus } from '../src/gobgp/client.js';

/** One of the speaker's own addresses with its prefix length, as the OS reports it. */
export interface LocalAddress {
  address: string;
  prefixLength: number;
  family: Family;
}

/**
 * ADD-PATH send-max toward every peer. Changing it renegotiates capabilities (a session reset),
 * so it is not tracked exactly: it is the largest next-hop set rounded up to a power of two, and
 * never below 64. It is never capped: a rack of 300 nodes gets 512.
 */
export function addPathSendMax(largestNextHopSet: number): number {
  let n = 64;
  while (n < largestNextHopSet) n *= 2;
  return n;
}

/**
 * The ADD-PATH identifier of a path, derived from its next hop so that it is the same on every
 * speaker, across restarts, and in `racklb explain`: the IPv4 address as an integer; for IPv6 a
 * 32-bit FNV-1a hash of the address (non-zero). Parsed by `requireIp`, which keeps what it parsed:
 * every route change asks this for each of its next hops, always the same few addresses.
 */
export function pathIdentifier(nextHop: string): number {
  const { family, value } = requireIp(nextHop, 'nextHop');
  if (family === 'ipv4') return value === 0n ? 1 : Number(value);
  let h = 0x811c9dc5;
  for (let shift = 120n; shift >= 0n; shift -= 8n) {
    h ^= Number((value >> shift) & 0xffn);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h === 0 ? 1 : h;
}

export function pathKey(p: { prefix: string; identifier: number }): string {
  return `${p.prefix}#${p.identifier}`;
}

export function globalConfig(node: NodeRecord, conf: RackBgpConf): GobgpGlobalConfig | { error: string } {
  const routerId = conf.routerId ?? node.addresses.ipv4;
  if (!routerId) return { error: `node ${node.name} has no IPv4 InternalIP to use as router ID; pin one with BgpConf spec.routerId` };
  return {
    asn: conf.as,
    routerId,
    listenPort: conf.listenPort,
    listenAddresses: conf.listenAddresses,
    ...(conf.gracefulRestart ? { gracefulRestart: conf.gracefulRestart } : {}),
  };
}

export function peerConfig(peer: BgpPeerRecord, sendMax: number): GobgpPeerConfig {
  return {
    neighborAddress: peer.neighborAddress,
    peerAs: peer.peerAs,
    ...(peer.localAs !== undefined ? { localAs: peer.localAs } : {}),
    ...(peer.authPassword !== undefined ? { authPassword: peer.authPassword } : {}),
    ...(peer.description !== undefined ? { description: peer.description } : {}),
    ebgpMultihop: { ...peer.ebgpMultihop },
    timers: {
      ...(peer.timers.connectRetry !== undefined ? { connectRetry: peer.timers.connectRetry } : {}),
      ...(peer.timers.holdTime !== undefined ? { holdTime: peer.timers.holdTime } : {}),
      ...(peer.timers.keepaliveInterval !== undefined ? { keepaliveInterval: peer.timers.keepaliveInterval } : {}),
    },
    transport: { passiveMode: peer.transport.passiveMode, ...(peer.transport.remotePort !== undefined ? { remotePort: peer.transport.remotePort } : {}) },
    ...(peer.gracefulRestart ? { gracefulRestart: peer.gracefulRestart } : {}),
    families: [...peer.families],
    addPathsSendMax: sendMax,
  };
}

/** The subnet of the speaker's own address that holds `neighbor`: its directly connected link. */
type Subnet = [ipaddr.IPv4 | ipaddr.IPv6, number];

function inSubnet(addr: ipaddr.IPv4 | ipaddr.IPv6, net: Subnet): boolean {
  return addr.kind() === net[0].kind() && (addr as ipaddr.IPv4).match(net as [ipaddr.IPv4, number]);
}

export function subnetToward(neighbor: string, locals: readonly LocalAddress[]): Subnet | undefined {
  const n = ipaddr.process(neighbor);
  for (const l of locals) {
    const a = ipaddr.process(l.address);
    if (a.kind() !== n.kind()) continue;
    const cidr = `${a.toString()}/${l.prefixLength}`;
    const network: Subnet = [a.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(cidr) : ipaddr.IPv6.networkAddressFromCIDR(cidr), l.prefixLength];
    if (inSubnet(n, network)) return network;
  }
  return undefined;
}

/** Bounds a filter's verdict cache; a rack's next hops never come near it. */
const VERDICTS_MAX = 4096;

export type SkippedNextHop = { peer: string; nextHop: string; node: string; reason: string };

/**
 * Which next hops may be announced at all. gobgpd sends its global table to every peer, so the
 * filter is per speaker: a next hop is kept when some peer can use it (a multihop peer takes any,
 * a directly connected one only next hops on the speaker's own subnet toward it). With several
 * directly connected peers on different subnets, each receives the union; see docs/operations.md.
 */
export function nextHopFilter(peers: readonly BgpPeerRecord[], locals: readonly LocalAddress[]): { accepts(nextHop: string): boolean; explain(nextHop: string): string } {
  const subnets: { peer: string; net: Subnet | undefined }[] = peers
    .filter((p) => !p.ebgpMultihop.enabled)
    .map((p) => ({ peer: p.name, net: subnetToward(p.neighborAddress, locals) }));
  const anyMultihop = peers.some((p) => p.ebgpMultihop.enabled);
  // Every route change asks about each of its next hops, and a rack has only a few dozen: each is
  // parsed and matched once per filter (a new filter comes with new peers or addresses).
  const verdicts = new Map<string, boolean>();
  return {
    accepts(nextHop: string): boolean {
      if (anyMultihop) return true;
      let ok = verdicts.get(nextHop);
      if (ok === undefined) {
        const addr = ipaddr.process(nextHop);
        ok = subnets.some((s) => s.net !== undefined && inSubnet(addr, s.net));
        if (verdicts.size >= VERDICTS_MAX) verdicts.clear();
        verdicts.set(nextHop, ok);
      }
      return ok;
    },
    explain(nextHop: string): string {
      const parts = subnets.map((s) => (s.net ? `not in ${s.net[0].toString()}/${s.net[1]}, the speaker's subnet toward peer ${s.peer}` : `peer ${s.peer} is on no subnet of this speaker`));
      return `${nextHop} is a third-party next hop no directly connected peer can reach: ${parts.join('; ') || 'no peers'}`;
    },
  };
}

/** Paths for one Service IP: one per next hop, with the next hop's stable identifier. */
export function pathsForIntent(intent: ServiceIpIntent, candidates: readonly NextHopCandidate[], accepts: (nextHop: string) => boolean, onSkip?: (nextHop: string, node: string) => void): GobgpPath[] {
  const prefix = hostPrefix(intent.ip);
  const out: GobgpPath[] = [];
  for (const hop of nextHopsFor(intent, candidates)) {
    if (!accepts(hop.address)) {
      onSkip?.(hop.address, hop.node);
      continue;
    }
    out.push({ prefix, family: intent.family, nextHop: hop.address, identifier: pathIdentifier(hop.address) });
  }
  return out;
}

export interface PathPlan {
  add: GobgpPath[];
  withdraw: GobgpPath[];
}

/**
 * Paths by key (`pathKey`) with an index by prefix, so that a reconcile after a change of a few
 * Service IPs can plan those prefixes alone instead of every path the speaker holds.
 */
export class PathTable extends Map<string, GobgpPath> {
  private readonly byPrefix = new Map<string, Set<string>>();

  override set(key: string, path: GobgpPath): this {
    const old = super.get(key);
    if (old !== undefined && old.prefix !== path.prefix) this.unindex(key, old.prefix);
    super.set(key, path);
    // Map's constructor calls set before this class's fields exist; PathTable is built empty.
    let keys = this.byPrefix.get(path.prefix);
    if (keys === undefined) {
      keys = new Set();
      this.byPrefix.set(path.prefix, keys);
    }
    keys.add(key);
    return this;
  }

  override delete(key: string): boolean {
    const old = super.get(key);
    if (old === undefined) return false;
    super.delete(key);
    this.unindex(key, old.prefix);
    return true;
  }

  override clear(): void {
    super.clear();
    this.byPrefix.clear();
  }

  /** The paths of these prefixes only. */
  ofPrefixes(prefixes: Iterable<string>): Map<string, GobgpPath> {
    const out = new Map<string, GobgpPath>();
    for (const prefix of prefixes) for (const key of this.byPrefix.get(prefix) ?? []) out.set(key, super.get(key) as GobgpPath);
    return out;
  }

  private unindex(key: string, prefix: string): void {
    const keys = this.byPrefix.get(prefix);
    keys?.delete(key);
    if (keys?.size === 0) this.byPrefix.delete(prefix);
  }
}

/** Adds are paths missing or with another next hop under the same key; withdrawals the rest. */
export function planPaths(desired: ReadonlyMap<string, GobgpPath>, advertised: ReadonlyMap<string, GobgpPath>): PathPlan {
  const add: GobgpPath[] = [];
  const withdraw: GobgpPath[] = [];
  for (const [key, path] of desired) {
    const have = advertised.get(key);
    if (!have || have.nextHop !== path.nextHop) add.push(path);
  }
  for (const [key, path] of advertised) if (!desired.has(key)) withdraw.push(path);
  return { add, withdraw };
}

export interface PeerPlan {
  add: GobgpPeerConfig[];
  update: GobgpPeerConfig[];
  remove: string[];
}

/**
 * gobgpd resets a session on every UpdatePeer, even an identical one, and reads peers back with
 * defaults filled in (timers, local AS, listen addresses). So a peer is compared with the config
 * the speaker last applied; a peer adopted from a gobgpd the speaker did not configure itself
 * (after a speaker restart) is compared only on what reads back faithfully, so adopting it never
 * resets the session.
 */
export function planPeers(desired: readonly GobgpPeerConfig[], current: readonly GobgpPeerStatus[], applied: ReadonlyMap<string, GobgpPeerConfig>): PeerPlan {
  const have = new Map(current.map((p) => [p.neighborAddress, p]));
  const want = new Map(desired.map((p) => [p.neighborAddress, p]));
  const plan: PeerPlan = { add: [], update: [], remove: [] };
  for (const [addr, cfg] of want) {
    const cur = have.get(addr);
    if (!cur) {
      plan.add.push(cfg);
      continue;
    }
    const last = applied.get(addr);
    const same = last ? JSON.stringify(canonicalPeer(last)) === JSON.stringify(canonicalPeer(cfg)) : sameOnReadback(cfg, cur.config);
    if (!same) plan.update.push(cfg);
  }
  for (const addr of have.keys()) if (!want.has(addr)) plan.remove.push(addr);
  return plan;
}

function canonicalPeer(c: GobgpPeerConfig): unknown {
  return { ...c, families: [...c.families].sort() };
}

/** Fields gobgpd reads back as set; a field the BgpPeer leaves unset is not compared (gobgpd fills in its default). */
function sameOnReadback(want: GobgpPeerConfig, read: GobgpPeerConfig): boolean {
  const setAndDiffers = (w: number | undefined, r: number | undefined): boolean => w !== undefined && w !== r;
  if (want.peerAs !== read.peerAs || want.transport.passiveMode !== read.transport.passiveMode) return false;
  if (want.ebgpMultihop.enabled !== read.ebgpMultihop.enabled || (want.ebgpMultihop.enabled && want.ebgpMultihop.multihopTtl !== read.ebgpMultihop.multihopTtl)) return false;
  if ([...want.families].sort().join() !== [...read.families].sort().join() || want.addPathsSendMax !== read.addPathsSendMax) return false;
  if ((want.gracefulRestart?.enabled ?? false) !== (read.gracefulRestart?.enabled ?? false)) return false;
  if (want.gracefulRestart?.enabled && want.gracefulRestart.restartTime !== read.gracefulRestart?.restartTime) return false;
  if (setAndDiffers(want.localAs, read.localAs) || setAndDiffers(want.transport.remotePort, read.transport.remotePort)) return false;
  return !(setAndDiffers(want.timers.holdTime, read.timers.holdTime) || setAndDiffers(want.timers.keepaliveInterval, read.timers.keepaliveInterval) || setAndDiffers(want.timers.connectRetry, read.timers.connectRetry));
}

/**
 * gobgpd reads an empty listen address list back as its defaults (0.0.0.0 and ::), so an empty
 * desired list matches those. A false difference here would restart BGP and drop every route.
 */
export function sameGlobal(want: GobgpGlobalConfig, have: GobgpGlobalConfig): boolean {
  const addresses = (list: readonly string[]): string => (list.length === 0 ? ['0.0.0.0', '::'] : [...list]).sort().join();
  return want.asn === have.asn && want.routerId === have.routerId && want.listenPort === have.listenPort && addresses(want.listenAddresses) === addresses(have.listenAddresses);
}
