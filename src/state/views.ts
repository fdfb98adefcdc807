/**
 * `racklb state racks|nodes|services|peers|speakers`: one row per thing, as a table for people and
 * as JSON (the same rows). Pure over a Snapshot; eligibility and announcement come from the core
 * and from explain, never re-derived here.
 */
import { routesForRack } from '../core/intents.js';
import { effectiveConf } from '../core/peers.js';
import { nextHopCandidate } from '../core/rack.js';
import { familyName } from '../core/ip.js';
import type { Family, LabelSelector } from '../core/types.js';
import { explainService, type ServiceExplanation } from '../explain/explain.js';
import { UNRACKED } from '../store/keys.js';
import type { Snapshot } from './snapshot.js';

export const VIEWS = ['racks', 'nodes', 'services', 'peers', 'speakers'] as const;
export type ViewName = (typeof VIEWS)[number];

export interface RackRow {
  rack: string;
  asn: number | null;
  nodes: string[];
  /** Nodes of the rack that may carry traffic now. */
  nextHops: string[];
  speakers: string[];
  /** The routers the rack's speakers peer with. */
  peers: string[];
  routes: number;
}

export interface NodeRow {
  node: string;
  rack: string | null;
  ipv4: string | null;
  ipv6: string | null;
  ready: boolean;
  schedulable: boolean;
  speaker: boolean;
  /** `yes`, or the reason word it is not a next hop. */
  nextHop: string;
}

/** One per Service; a dual-stack Service has one per family, in spec.ipFamilies order. */
export interface ServiceRow {
  service: string;
  /** Only on a dual-stack Service's rows. */
  family?: Family;
  ip: string | null;
  pool: string | null;
  policy: string;
  /** requested, allocated or kept from its status, and whether shared. */
  origin: string | null;
  /** Racks whose leaf receives the route (with at least one next hop). */
  announcedIn: string[];
  pending: string | null;
}

export interface PeerRow {
  peer: string;
  neighborAddress: string;
  asn: number;
  multihop: boolean;
  nodeSelector: string;
  /** speaker node -> session state. */
  speakers: Record<string, string>;
}

export interface SpeakerRow {
  speaker: string;
  rack: string | null;
  asn: number | null;
  peer: string | null;
  neighborAddress: string | null;
  peerAs: number | null;
  sessionState: string;
  uptimeSeconds: number | null;
  prefixesSent: number | null;
  prefixesReceived: number | null;
  lastError: string | null;
  lastSeen: string | null;
  holding: boolean | null;
}

export function selectorText(sel: LabelSelector | undefined): string {
  if (!sel) return '(every speaker)';
  const parts = [
    ...Object.entries(sel.matchLabels).map(([k, v]) => `${k}=${v}`),
    ...sel.matchExpressions.map((e) => (e.operator === 'Exists' || e.operator === 'DoesNotExist' ? `${e.operator === 'DoesNotExist' ? '!' : ''}${e.key}` : `${e.key} ${e.operator === 'In' ? 'in' : 'notin'} (${e.values.join(',')})`)),
  ];
  return parts.join(', ') || '(every speaker)';
}

export function rackRows(s: Snapshot): RackRow[] {
  const nodes = new Map(s.nodes.map((n) => [n.name, n]));
  const unrackedHops = Object.values(s.nextHops[UNRACKED] ?? {});
  const row = (rack: string): RackRow => {
    const speakers = s.speakers.filter((n) => (nodes.get(n)?.rack ?? UNRACKED) === rack);
    const own = Object.values(s.nextHops[rack] ?? {});
    const candidates = rack === UNRACKED ? own : [...own, ...unrackedHops];
    return {
      rack,
      asn: effectiveConf(s.bgpConf, rack === UNRACKED ? undefined : rack)?.as ?? null,
      nodes: s.rackNodes[rack] ?? [],
      nextHops: own.map((c) => c.node).sort(),
      speakers,
      peers: [...new Set(speakers.flatMap((n) => (s.peers[n] ?? []).map((p) => `${p.name} ${p.neighborAddress}`)))].sort(),
      routes: Object.keys(routesForRack(candidates, s.intents)).length,
    };
  };
  const rows = s.racks.map(row);
  if ((s.rackNodes[UNRACKED] ?? []).length > 0) rows.push(row(UNRACKED));
  return rows;
}

export function nodeRows(s: Snapshot): NodeRow[] {
  return s.nodes.map((n) => {
    const c = nextHopCandidate(n);
    return {
      node: n.name,
      rack: n.rack ?? null,
      ipv4: n.addresses.ipv4 ?? null,
      ipv6: n.addresses.ipv6 ?? null,
      ready: n.ready,
      schedulable: n.schedulable,
      speaker: n.speaker,
      nextHop: c.eligible ? 'yes' : c.reason,
    };
  });
}

export function serviceRows(s: Snapshot): ServiceRow[] {
  return s.services
    .filter((svc) => svc.managed || svc.key in s.serviceIps)
    .flatMap((svc) => {
      const e = explainService(s, svc.key);
      const row = (a: Pick<ServiceExplanation, 'ip' | 'origin' | 'racks' | 'pending'>): ServiceRow => ({
        service: svc.key,
        ip: a.ip,
        pool: a.origin?.pool ?? null,
        policy: svc.externalTrafficPolicy,
        origin: a.origin ? `${a.origin.requested ? 'requested' : a.origin.by === 'keptFromStatus' ? 'kept from its status' : 'allocated'}${a.origin.sharedWith.length ? `, shared with ${a.origin.sharedWith.join(' ')}` : ''}` : null,
        announcedIn: a.racks.filter((r) => r.announced.length > 0).map((r) => r.rack),
        pending: a.pending,
      });
      return e.families ? e.families.map((f) => ({ ...row(f), family: f.family })) : [row(e)];
    });
}

export function peerRows(s: Snapshot): PeerRow[] {
  return s.bgpPeers.map((p) => {
    const speakers: Record<string, string> = {};
    for (const node of s.speakers) {
      if (!(s.peers[node] ?? []).some((a) => a.key === p.key)) continue;
      speakers[node] = s.sessions[node]?.[p.neighborAddress]?.sessionState ?? 'unknown';
    }
    return { peer: p.name, neighborAddress: p.neighborAddress, asn: p.peerAs, multihop: p.ebgpMultihop.enabled, nodeSelector: selectorText(p.nodeSelector), speakers };
  });
}

export function speakerRows(s: Snapshot): SpeakerRow[] {
  const nodes = new Map(s.nodes.map((n) => [n.name, n]));
  const rows: SpeakerRow[] = [];
  for (const name of s.speakers) {
    const node = nodes.get(name);
    const status = s.speakerStatus[name];
    const base = { speaker: name, rack: node?.rack ?? null, asn: effectiveConf(s.bgpConf, node?.rack)?.as ?? null, lastSeen: status?.lastSeen ?? null, holding: status?.holding ?? null };
    const peers = s.peers[name] ?? [];
    const sessions = s.sessions[name] ?? {};
    if (peers.length === 0) {
      rows.push({ ...base, peer: null, neighborAddress: null, peerAs: null, sessionState: 'no peer', uptimeSeconds: null, prefixesSent: null, prefixesReceived: null, lastError: null });
      continue;
    }
    for (const p of peers) {
      const st = sessions[p.neighborAddress];
      rows.push({
        ...base,
        peer: p.name,
        neighborAddress: p.neighborAddress,
        peerAs: p.peerAs,
        sessionState: st?.sessionState ?? 'unknown',
        uptimeSeconds: st?.uptimeSeconds ?? null,
        prefixesSent: st?.prefixesSent ?? null,
        prefixesReceived: st?.prefixesReceived ?? null,
        lastError: st?.lastError ?? null,
      });
    }
  }
  return rows;
}

export function viewRows(view: ViewName, s: Snapshot): object[] {
  switch (view) {
    case 'racks':
      return rackRows(s);
    case 'nodes':
      return nodeRows(s);
    case 'services':
      return serviceRows(s);
    case 'peers':
      return peerRows(s);
    case 'speakers':
      return speakerRows(s);
  }
}

const dash = (v: string | number | null | undefined): string => (v === null || v === undefined || v === '' ? '-' : String(v));
const list = (v: readonly string[]): string => (v.length ? v.join(', ') : '-');
const age = (iso: string | null, now: number): string => {
  if (!iso) return 'never';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  return `${s}s ago`;
};

/** The view as a table: headers and cells. */
export function viewTable(view: ViewName, s: Snapshot): { headers: string[]; rows: string[][] } {
  switch (view) {
    case 'racks':
      return {
        headers: ['RACK', 'AS', 'NODES', 'NEXT HOPS', 'SPEAKERS', 'PEERS', 'ROUTES'],
        rows: rackRows(s).map((r) => [r.rack === UNRACKED ? '- (no rack label)' : r.rack, dash(r.asn), list(r.nodes), list(r.nextHops), list(r.speakers), list(r.peers), String(r.routes)]),
      };
    case 'nodes':
      return {
        headers: ['NODE', 'RACK', 'IPV4', 'IPV6', 'READY', 'SCHEDULABLE', 'SPEAKER', 'NEXT HOP'],
        rows: nodeRows(s).map((n) => [n.node, dash(n.rack), dash(n.ipv4), dash(n.ipv6), n.ready ? 'yes' : 'no', n.schedulable ? 'yes' : 'no', n.speaker ? 'yes' : 'no', n.nextHop]),
      };
    case 'services':
      return {
        headers: ['SERVICE', 'IP', 'EIP', 'POLICY', 'ORIGIN', 'ANNOUNCED IN'],
        rows: serviceRows(s).map((r) => [r.family ? `${r.service} (${familyName(r.family)})` : r.service, dash(r.ip), dash(r.pool), r.policy, dash(r.origin), r.ip ? list(r.announcedIn.map((x) => (x === UNRACKED ? '(unracked speakers)' : x))) : `pending: ${r.pending ?? '?'}`]),
      };
    case 'peers':
      return {
        headers: ['BGPPEER', 'NEIGHBOR', 'AS', 'MULTIHOP', 'NODE SELECTOR', 'SPEAKERS (SESSION)'],
        rows: peerRows(s).map((p) => [p.peer, p.neighborAddress, String(p.asn), p.multihop ? 'yes' : 'no', p.nodeSelector, list(Object.entries(p.speakers).map(([n, st]) => `${n} (${st})`))]),
      };
    case 'speakers':
      return {
        headers: ['SPEAKER', 'RACK', 'AS', 'PEER', 'NEIGHBOR', 'PEER AS', 'SESSION', 'UPTIME', 'SENT/RECV', 'LAST SEEN', 'HOLDING', 'LAST ERROR'],
        rows: speakerRows(s).map((r) => [
          r.speaker,
          dash(r.rack),
          dash(r.asn),
          dash(r.peer),
          dash(r.neighborAddress),
          dash(r.peerAs),
          r.sessionState,
          r.uptimeSeconds === null ? '-' : `${r.uptimeSeconds}s`,
          r.prefixesSent === null ? '-' : `${r.prefixesSent}/${r.prefixesReceived ?? 0}`,
          age(r.lastSeen, s.readAt),
          r.holding === null ? '-' : r.holding ? 'yes' : 'no',
          dash(r.lastError),
        ]),
      };
  }
}
