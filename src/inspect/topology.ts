/**
 * What `racklb inspect` draws, as plain data (served under /api/ too): routers, racks, nodes,
 * speakers and their sessions; and, for one Service IP, the ECMP paths from the spine through
 * each leaf to the nodes. Built from a Snapshot with explain's own functions, so the page and
 * `racklb explain` always tell the same story.
 */
import { compareIps } from '../core/intents.js';
import { nextHopCandidate } from '../core/rack.js';
import { announceGroups, explainService, explainSpeaker, type SpeakerExplanation } from '../explain/explain.js';
import type { Snapshot } from '../state/snapshot.js';
import { UNRACKED } from '../store/keys.js';

export interface TopologyRouter {
  /** The BgpPeer names that point at this router, and its address. */
  names: string[];
  address: string;
  asn: number;
}

export interface TopologyNode {
  node: string;
  addresses: string[];
  ready: boolean;
  schedulable: boolean;
  /** `yes`, or why the node is not a next hop (a reason word from the core). */
  nextHop: string;
  speaker: boolean;
  /** No rack label: a candidate in every rack. */
  unracked: boolean;
}

export interface TopologyRack {
  rack: string;
  label: string;
  routers: TopologyRouter[];
  /** The nodes that belong here: the rack's own, or for UNRACKED those without a rack label. */
  nodes: TopologyNode[];
  speakers: SpeakerExplanation[];
}

export interface Topology {
  revision: number;
  complete: boolean;
  generation: string | null;
  readAt: string;
  racks: TopologyRack[];
  /** One entry per Service address (a dual-stack Service has one per family), or one pending entry. */
  services: { service: string; ip: string | null; pending: string | null }[];
}

export function buildTopology(s: Snapshot): Topology {
  const nodes = new Map(s.nodes.map((n) => [n.name, n]));
  const groups = announceGroups(s);
  const nodeView = (name: string): TopologyNode | undefined => {
    const n = nodes.get(name);
    if (!n) return undefined;
    const c = nextHopCandidate(n);
    return { node: n.name, addresses: Object.values(n.addresses).filter((a): a is string => a !== undefined), ready: n.ready, schedulable: n.schedulable, nextHop: c.eligible ? 'yes' : c.reason, speaker: n.speaker && s.speakers.includes(n.name), unracked: n.rack === undefined };
  };
  const racks: TopologyRack[] = groups.map((g) => {
    const speakers = g.speakers.map((sp) => explainSpeaker(s, sp));
    const routers = new Map<string, TopologyRouter>();
    for (const sp of speakers) {
      for (const p of sp.peers) {
        const r = routers.get(p.neighborAddress) ?? { names: [], address: p.neighborAddress, asn: p.asn };
        if (!r.names.includes(p.peer)) r.names.push(p.peer);
        routers.set(p.neighborAddress, r);
      }
    }
    const own = g.rack === UNRACKED ? (s.rackNodes[UNRACKED] ?? []) : (s.rackNodes[g.rack] ?? []);
    return {
      rack: g.rack,
      label: g.rack === UNRACKED ? 'no rack label' : g.rack,
      routers: [...routers.values()].sort((a, b) => compareIps(a.address, b.address)),
      nodes: own.map(nodeView).filter((n): n is TopologyNode => n !== undefined),
      speakers,
    };
  });
  // Nodes without a rack label are drawn once, in their own column, even when no speaker of theirs exists.
  if (!racks.some((r) => r.rack === UNRACKED) && (s.rackNodes[UNRACKED] ?? []).length > 0) {
    racks.push({ rack: UNRACKED, label: 'no rack label', routers: [], nodes: (s.rackNodes[UNRACKED] ?? []).map(nodeView).filter((n): n is TopologyNode => n !== undefined), speakers: [] });
  }
  const services = s.services
    .filter((svc) => svc.managed || svc.key in s.serviceIps)
    .flatMap((svc): Topology['services'] => {
      const ips = s.serviceIps[svc.key] ?? [];
      const pending = s.pending[svc.key] ?? null;
      return ips.length > 0 ? ips.map((ip) => ({ service: svc.key, ip, pending })) : [{ service: svc.key, ip: null, pending }];
    });
  return { revision: s.revision, complete: s.complete, generation: s.generation, readAt: new Date(s.readAt).toISOString(), racks, services };
}

export interface PathHop {
  node: string;
  address: string | null;
  announced: boolean;
  reason: string | null;
  detail: string;
  /** The routers (neighbor addresses) the next hop is announced to. */
  routers: string[];
}

export interface Paths {
  ip: string;
  prefix: string | null;
  services: string[];
  /** Per rack: what its leaf receives for this IP. An empty `announced` means no path through it. */
  racks: { rack: string; label: string; announced: string[]; hops: PathHop[] }[];
}

/** The ECMP paths of one Service IP; undefined when no Service holds it. */
export function buildPaths(s: Snapshot, ip: string): Paths | undefined {
  const services = Object.entries(s.serviceIps)
    .filter(([, v]) => v.includes(ip))
    .map(([k]) => k)
    .sort();
  const first = services[0];
  if (first === undefined) return undefined;
  const service = explainService(s, first);
  // A dual-stack Service explains each address under its family.
  const e = service.families?.find((f) => f.ip === ip) ?? service;
  return {
    ip,
    prefix: e.prefix,
    services,
    racks: e.racks.map((r) => ({
      rack: r.rack,
      label: r.label,
      announced: r.announced,
      hops: r.nextHops.map((h) => ({ node: h.node, address: h.address, announced: h.announced, reason: h.reason, detail: h.detail, routers: [...new Set(h.via.map((v) => v.neighborAddress))] })),
    })),
  };
}
