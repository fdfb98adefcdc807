/**
 * What racklb's state says the Kubernetes objects' status should be, in PorterLB's shapes, so
 * dashboards and scripts written for PorterLB keep working. Pure: the status writer reads the store,
 * calls these, and compares with what the API holds.
 *
 * PorterLB's shapes (kubesphere/porterlb api/v1alpha2, before the rename to OpenELB):
 * - Service: `status.loadBalancer.ingress: [{ip}]` and the label `eip.porter.kubesphere.io/v1alpha2: <Eip>`
 *   (OpenELB's `eip.openelb.kubesphere.io/v1alpha2` on a Service that opted in with `openelb`);
 *   a dual-stack Service (racklb's extension) lists one entry per address, in spec.ipFamilies order.
 * - Eip: `status: {occupied, usage, poolSize, used: {ip: "ns/svc;ns/svc2"}, firstIP, lastIP, ready, v4}`.
 * - BgpPeer: `status.nodesPeerStatus.<node>: {peerState: GoBGP PeerState as JSON, timersState: {uptime}}`.
 * - BgpConf: `status.nodesConfStatus.<node>: {routerId, as}`.
 */
import { effectiveConf } from '../core/peers.js';
import { ipInPool } from '../core/ipam.js';
import { keyFor, LABELS, type Allocation, type BgpConfRecord, type BgpPeerRecord, type EipRecord, type NodeRecord, type ServiceRecord } from '../core/types.js';
import { globalConfig } from '../../speaker/plan.js';

/** One row of the speaker's sessions hash (speaker/speaker.ts reportStatus). */
export interface SessionView {
  peer?: string | null;
  neighborAddress?: string;
  sessionState?: string;
  adminState?: string;
  uptimeSeconds?: number;
  updatedAt?: string;
  /** GoBGP's message counters, when the speaker reports them. */
  messages?: { received?: Record<string, number | string>; sent?: Record<string, number | string> };
}

export interface StoreView {
  complete: boolean;
  services: ServiceRecord[];
  /** Service key -> its addresses, in spec.ipFamilies order (parseServiceIps). */
  serviceIps: Record<string, string[]>;
  allocations: Map<string, Allocation>;
  eips: EipRecord[];
  bgpPeers: BgpPeerRecord[];
  bgpConfs: BgpConfRecord[];
  /** Speaker nodes, with the BgpPeers assigned to each and the sessions it reports. */
  speakers: { node: NodeRecord; peers: BgpPeerRecord[]; sessions: Map<string, SessionView> }[];
}

// ---- Service ------------------------------------------------------------------------------------

/**
 * What racklb wants on a Service: its IP and pool, or nothing (pending, or no longer managed). A
 * dual-stack Service with two addresses also has `ips`, every address in order (`ip` is the first);
 * the label, which holds one Eip name, names the first address's pool.
 */
export type ServiceTarget =
  | { key: string; namespace: string; name: string; ip: string; pool: string; ips?: string[]; naming?: 'OpenELB' }
  | { key: string; namespace: string; name: string; ip: undefined; pool: undefined };

export function serviceTargets(view: StoreView): ServiceTarget[] {
  const out: ServiceTarget[] = [];
  for (const s of view.services) {
    const ips = s.managed ? (view.serviceIps[s.key] ?? []).filter((ip) => view.allocations.has(ip)) : [];
    const ip = ips[0];
    const pool = ip === undefined ? undefined : view.allocations.get(ip)?.pool;
    if (ip !== undefined && pool !== undefined) {
      out.push({ key: s.key, namespace: s.namespace, name: s.name, ip, pool, ...(ips.length > 1 ? { ips } : {}), ...(s.naming ? { naming: s.naming } : {}) });
    }
    else if (s.managed) out.push({ key: s.key, namespace: s.namespace, name: s.name, ip: undefined, pool: undefined });
  }
  return out;
}

export interface LiveService {
  labels: Record<string, string>;
  ingress: { ip?: string; hostname?: string }[];
}

export interface ServiceChange {
  /** Label patch: a pool label key to the pool name, or to null to remove it; undefined to leave them. */
  labels: Record<string, string | null> | undefined;
  /** The new ingress list, or undefined to leave it. */
  ingress: LiveService['ingress'] | undefined;
}

/**
 * The writes that bring a live Service to the target. `mayRemove` is false while the store is not
 * complete: clearing an ingress makes kube-proxy drop the Service IP's rules on every node, so
 * racklb never takes one away on the word of a store that may have lost the allocation (the same
 * guard the speaker applies to withdrawals; docs/operations.md). Removal of ingress entries is
 * limited to IPs inside racklb's Eip pools, so another load balancer's entries are left alone.
 * The pool label goes under the key of the product whose opt-in value the Service carries; the
 * other product's pool label, left from before, goes, so that one pool label shows.
 */
export function serviceChange(target: ServiceTarget | undefined, live: LiveService, pools: readonly EipRecord[], mayRemove: boolean): ServiceChange {
  const liveIps = live.ingress.map((i) => i.ip).filter((ip): ip is string => typeof ip === 'string');
  const ours = (ip: string): boolean => pools.some((p) => ipInPool(ip, p));
  if (target?.ip !== undefined) {
    const own = keyFor(LABELS.pool, target.naming);
    const patch: Record<string, string | null> = {};
    if (live.labels[own] !== target.pool) patch[own] = target.pool;
    for (const key of LABELS.pool) if (key !== own && Object.hasOwn(live.labels, key)) patch[key] = null;
    const labels = Object.keys(patch).length > 0 ? patch : undefined;
    const ips = target.ips ?? [target.ip];
    const same = live.ingress.length === ips.length && liveIps.length === ips.length && ips.every((ip, i) => liveIps[i] === ip);
    if (same) return { labels, ingress: undefined };
    // Entries of another load balancer stay; racklb's own stale ones go only when it may remove.
    const kept = live.ingress.filter((i) => typeof i.ip === 'string' && !ips.includes(i.ip) && !(mayRemove && ours(i.ip))).map((i) => ({ ip: i.ip as string }));
    return { labels, ingress: [...ips.map((ip) => ({ ip })), ...kept] };
  }
  if (!mayRemove) return { labels: undefined, ingress: undefined };
  // Pending, opted out or no longer a LoadBalancer: take back only what racklb gave.
  const present = LABELS.pool.filter((key) => Object.hasOwn(live.labels, key));
  const labels = present.length === 0 ? undefined : Object.fromEntries(present.map((key) => [key, null]));
  const remaining = live.ingress.filter((i) => !(typeof i.ip === 'string' && ours(i.ip)));
  const ingress = remaining.length === live.ingress.length ? undefined : remaining;
  return { labels, ingress };
}

// ---- Eip ----------------------------------------------------------------------------------------

export interface EipStatus {
  occupied: boolean;
  usage: number;
  poolSize: number;
  used: Record<string, string>;
  firstIP: string;
  lastIP: string;
  ready: boolean;
  v4: boolean;
}

export function eipStatus(eip: EipRecord, allocations: Map<string, Allocation>): EipStatus {
  const used: Record<string, string> = {};
  for (const a of [...allocations.values()].sort((x, y) => (x.ip < y.ip ? -1 : 1))) {
    // PorterLB's format: the Services sharing an IP, joined by ';'.
    if (a.pool === eip.name && a.services.length > 0) used[a.ip] = [...a.services].sort().join(';');
  }
  // JSON integers beyond 2^53 lose precision; an IPv6 pool that large is reported at that bound.
  const size = BigInt(eip.size);
  const poolSize = size > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(size);
  const usage = Object.keys(used).length;
  return { occupied: usage >= poolSize, usage, poolSize, used, firstIP: eip.firstIp, lastIP: eip.lastIp, ready: !eip.disable, v4: eip.family === 'ipv4' };
}

// ---- BgpPeer ------------------------------------------------------------------------------------

export interface NodePeerStatus {
  peerState: {
    neighborAddress: string;
    peerAs: number;
    localAs?: number;
    description?: string;
    sessionState: string;
    adminState: string;
    messages?: { received?: Record<string, string>; sent?: Record<string, string> };
  };
  timersState: { uptime?: string };
}

export interface BgpPeerStatus {
  nodesPeerStatus: Record<string, NodePeerStatus>;
}

/** GoBGP's enum names, as PorterLB's jsonpb marshalling wrote them. */
function upper(value: string | undefined, fallback: string): string {
  return (value ?? fallback).toUpperCase();
}

function messageCounters(m: Record<string, number | string> | undefined): Record<string, string> | undefined {
  if (!m) return undefined;
  // jsonpb writes uint64 counters as strings; PorterLB's CRD declares them so.
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, String(v)]));
}

/** When the session came up, from its uptime: stable between reports, unlike the uptime itself. */
function establishedAt(s: SessionView): string | undefined {
  if (!s.uptimeSeconds || s.uptimeSeconds <= 0 || !s.updatedAt) return undefined;
  const at = Date.parse(s.updatedAt);
  if (Number.isNaN(at)) return undefined;
  return new Date(Math.floor(at / 1000) * 1000 - s.uptimeSeconds * 1000).toISOString().replace('.000Z', 'Z');
}

export function bgpPeerStatus(peer: BgpPeerRecord, view: StoreView): BgpPeerStatus {
  const nodesPeerStatus: Record<string, NodePeerStatus> = {};
  for (const sp of view.speakers) {
    if (!sp.peers.some((p) => p.key === peer.key)) continue;
    const s = sp.sessions.get(peer.neighborAddress);
    const uptime = s && s.sessionState === 'established' ? establishedAt(s) : undefined;
    const messages = s?.messages ? { received: messageCounters(s.messages.received), sent: messageCounters(s.messages.sent) } : undefined;
    nodesPeerStatus[sp.node.name] = {
      peerState: {
        neighborAddress: peer.neighborAddress,
        peerAs: peer.peerAs,
        ...(peer.localAs !== undefined ? { localAs: peer.localAs } : {}),
        ...(peer.description !== undefined ? { description: peer.description } : {}),
        // UNKNOWN until the speaker has reported the session: GoBGP's zero value.
        sessionState: s ? upper(s.sessionState, 'unknown') : 'UNKNOWN',
        adminState: upper(s?.adminState, 'up'),
        ...(messages ? { messages } : {}),
      },
      timersState: uptime ? { uptime } : {},
    };
  }
  return { nodesPeerStatus };
}

// ---- BgpConf ------------------------------------------------------------------------------------

export interface BgpConfStatus {
  nodesConfStatus: Record<string, { routerId: string; as: number }>;
}

/** Per speaker node, the router ID and AS its speaker runs with (asPerRack and routerId rules included). */
export function bgpConfStatus(conf: BgpConfRecord, view: StoreView): BgpConfStatus {
  const nodesConfStatus: BgpConfStatus['nodesConfStatus'] = {};
  for (const sp of view.speakers) {
    const rackConf = effectiveConf(conf, sp.node.rack);
    if (!rackConf) continue;
    const g = globalConfig(sp.node, rackConf);
    nodesConfStatus[sp.node.name] = { routerId: 'error' in g ? '' : g.routerId, as: rackConf.as };
  }
  return { nodesConfStatus };
}

// ---- comparing with what the API holds ---------------------------------------------------------

/**
 * Go's omitempty drops false, 0, "" and empty maps, so PorterLB's own writes lack them; compare
 * with those treated as absent, or racklb would rewrite every status PorterLB left behind.
 */
export function normalize(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalize);
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) {
      const v = normalize((value as Record<string, unknown>)[k]);
      if (v === undefined || v === false || v === 0 || v === '' || (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0)) continue;
      out[k] = v;
    }
    return out;
  }
  return value;
}

/** Two uptimes a second or two apart are the same session: the speaker reports seconds, floored. */
function sameUptimes(a: unknown, b: unknown): boolean {
  const nodesA = ((a as BgpPeerStatus | undefined)?.nodesPeerStatus ?? {}) as Record<string, NodePeerStatus>;
  const nodesB = ((b as BgpPeerStatus | undefined)?.nodesPeerStatus ?? {}) as Record<string, NodePeerStatus>;
  for (const node of Object.keys(nodesA)) {
    const x = nodesA[node]?.timersState?.uptime;
    const y = nodesB[node]?.timersState?.uptime;
    if (x === y) continue;
    if (x === undefined || y === undefined) return false;
    if (Math.abs(Date.parse(x) - Date.parse(y)) > 2000) return false;
  }
  return true;
}

function withoutUptimes(s: unknown): unknown {
  const copy = structuredClone((s ?? {}) as BgpPeerStatus);
  for (const n of Object.values(copy.nodesPeerStatus ?? {})) {
    if (n?.timersState?.uptime) n.timersState.uptime = 'x';
  }
  return copy;
}

export function sameStatus(kind: 'Eip' | 'BgpPeer' | 'BgpConf', desired: unknown, live: unknown): boolean {
  if (kind === 'BgpPeer') {
    return JSON.stringify(normalize(withoutUptimes(desired))) === JSON.stringify(normalize(withoutUptimes(live))) && sameUptimes(desired, live);
  }
  return JSON.stringify(normalize(desired)) === JSON.stringify(normalize(live));
}
