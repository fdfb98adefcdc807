/**
 * `racklb explain`: why each next hop of a Service IP is or is not announced, rack by rack and node
 * by node, and what a node takes part in. Pure over a Snapshot. Every decision is asked of the
 * module that makes it for real (one source of truth): nextHopCandidate (src/core/rack.ts),
 * nextHopDecision (src/core/intents.ts), speakerServesRack and sessionCarriesRoutes
 * (src/core/announce.ts), the speaker's own subnet rule (speaker/plan.ts nextHopFilter) and
 * allocationOrigin (src/core/ipam.ts). This module only walks them in order and reports.
 */
import { nextHopFilter } from '../../speaker/plan.js';
import { furthestReason, REASON_TEXT, sessionCarriesRoutes, speakerServesRack, type NotAnnouncedReason, type SpeakerSkipReason } from '../core/announce.js';
import { compareIps, hostPrefix, nextHopDecision } from '../core/intents.js';
import { allocationOrigin, pendingOfFamily, type PoolChoiceReason } from '../core/ipam.js';
import { familyName, parseIp } from '../core/ip.js';
import { effectiveConf } from '../core/peers.js';
import { nextHopCandidate } from '../core/rack.js';
import { OPT_IN_TEXT, type BgpPeerRecord, type DualStackPolicy, type Family, type NodeRecord, type ServiceIpIntent, type ServiceRecord } from '../core/types.js';
import type { Snapshot } from '../state/snapshot.js';
import { UNRACKED } from '../store/keys.js';

/** A heartbeat older than this means the speaker stopped reporting; its sessions may be out of date. */
export const STALE_HEARTBEAT_MS = 30_000;

export interface PeerSession {
  peer: string;
  neighborAddress: string;
  asn: number;
  multihop: boolean;
  /** As the speaker last reported it; `unknown` when it reported nothing for this neighbor. */
  sessionState: string;
  up: boolean;
  uptimeSeconds: number | null;
  lastError: string | null;
}

export interface SpeakerExplanation {
  node: string;
  rack: string | null;
  /** The AS the speaker uses (BgpConf, per rack). */
  asn: number | null;
  lastSeen: string | null;
  /** Heartbeat missing or older than STALE_HEARTBEAT_MS. */
  stale: boolean;
  holding: boolean | null;
  /** A problem of the speaker itself, before any next hop is considered. */
  problem: 'speakerNotSeen' | 'noPeer' | null;
  peers: PeerSession[];
  /** Whether the speaker reports its own addresses (needed for the subnet rule). */
  knowsSubnets: boolean;
}

export interface HopExplanation {
  node: string;
  /** The node's address of the Service IP's family, if it has one. */
  address: string | null;
  /** The node carries no rack label: it is a candidate in every rack. */
  unracked: boolean;
  announced: boolean;
  reason: NotAnnouncedReason | null;
  /** The reason as a sentence with the particulars (which subnet, which session...). */
  detail: string;
  /** Where it is announced: one entry per speaker and Established session. */
  via: { speaker: string; peer: string; neighborAddress: string }[];
}

export interface RackExplanation {
  /** The rack label value, or UNRACKED for speakers without a rack label. */
  rack: string;
  label: string;
  speakers: SpeakerExplanation[];
  nextHops: HopExplanation[];
  /** Addresses announced to this rack's leaf: the ECMP set it installs. */
  announced: string[];
}

export interface ServiceExplanation {
  service: string;
  found: boolean;
  managed: boolean;
  ip: string | null;
  prefix: string | null;
  pending: string | null;
  origin: { pool: string; poolAddress: string | null; requested: boolean; by: PoolChoiceReason; sharedWith: string[] } | null;
  intent: { policy: string; family: Family; endpointNodes: string[] } | null;
  racks: RackExplanation[];
  /** What stops the Service before any rack is looked at, as sentences. */
  problems: string[];
  /** Only for a dual-stack Service (racklb's extension). */
  ipFamilyPolicy?: DualStackPolicy;
  /** Only for a dual-stack Service: each family, in spec.ipFamilies order; the fields above repeat its first address. */
  families?: FamilyExplanation[];
}

/** One IP family of a dual-stack Service: its address explained as a single-stack Service's would be, or why it has none. */
export interface FamilyExplanation extends Pick<ServiceExplanation, 'ip' | 'prefix' | 'origin' | 'intent' | 'racks' | 'problems'> {
  family: Family;
  /** Why the family has no address; null when it has one. */
  pending: string | null;
}

interface Group {
  rack: string;
  label: string;
  speakers: NodeRecord[];
  /** Names of the nodes whose next hops this group's speakers announce. */
  candidates: string[];
}

const byName = (a: { name: string }, b: { name: string }): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/**
 * The units a route is announced in: each rack with its own speakers and candidates (its nodes and
 * the nodes without a rack label), plus, when speakers without a rack label exist, their group:
 * they announce every node of the cluster, as PorterLB's single speaker did.
 */
export function announceGroups(s: Snapshot): Group[] {
  const nodes = new Map(s.nodes.map((n) => [n.name, n]));
  const speakers = s.speakers.map((n) => nodes.get(n)).filter((n): n is NodeRecord => n !== undefined && n.speaker);
  const unrackedNodes = s.rackNodes[UNRACKED] ?? [];
  const groups: Group[] = s.racks.map((rack) => ({
    rack,
    label: `rack ${rack}`,
    speakers: speakers.filter((sp) => sp.rack === rack).sort(byName),
    candidates: [...new Set([...(s.rackNodes[rack] ?? []), ...unrackedNodes])].sort(),
  }));
  const unrackedSpeakers = speakers.filter((sp) => sp.rack === undefined).sort(byName);
  if (unrackedSpeakers.length > 0 || groups.length === 0) {
    groups.push({
      rack: UNRACKED,
      label: 'speakers without a rack label (they announce every node)',
      speakers: unrackedSpeakers,
      candidates: [...new Set([...s.racks.flatMap((r) => s.rackNodes[r] ?? []), ...unrackedNodes])].sort(),
    });
  }
  return groups;
}

export function explainSpeaker(s: Snapshot, speaker: NodeRecord): SpeakerExplanation {
  const status = s.speakerStatus[speaker.name];
  const peers = s.peers[speaker.name] ?? [];
  const sessions = s.sessions[speaker.name] ?? {};
  const lastSeen = status?.lastSeen ?? null;
  const age = lastSeen === null ? Infinity : s.readAt - Date.parse(lastSeen);
  return {
    node: speaker.name,
    rack: speaker.rack ?? null,
    asn: effectiveConf(s.bgpConf, speaker.rack)?.as ?? null,
    lastSeen,
    stale: !(age <= STALE_HEARTBEAT_MS),
    holding: status?.holding ?? null,
    problem: lastSeen === null ? 'speakerNotSeen' : peers.length === 0 ? 'noPeer' : null,
    knowsSubnets: status?.addresses !== undefined,
    peers: peers.map((p) => {
      const session = sessions[p.neighborAddress];
      return {
        peer: p.name,
        neighborAddress: p.neighborAddress,
        asn: p.peerAs,
        multihop: p.ebgpMultihop.enabled,
        sessionState: session?.sessionState ?? 'unknown',
        up: sessionCarriesRoutes(session?.sessionState),
        uptimeSeconds: session?.uptimeSeconds ?? null,
        lastError: session?.lastError ?? null,
      };
    }),
  };
}

/** One next hop of one intent in one group: the checks in the order the system makes them. */
function explainHop(s: Snapshot, intent: ServiceIpIntent, group: Group, speakers: SpeakerExplanation[], node: NodeRecord, peersOf: (speaker: string) => BgpPeerRecord[]): HopExplanation {
  const base = { node: node.name, unracked: node.rack === undefined, via: [] as HopExplanation['via'] };
  const address = node.addresses[intent.family] ?? null;
  const no = (reason: NotAnnouncedReason, detail = REASON_TEXT[reason]): HopExplanation => ({ ...base, address, announced: false, reason, detail });
  const eligible = nextHopCandidate(node);
  if (!eligible.eligible) return no(eligible.reason);
  const decision = nextHopDecision(intent, eligible.candidate);
  if (!decision.include) return no(decision.reason);
  if (group.speakers.length === 0) return no('noSpeakerInRack');

  const reasons: SpeakerSkipReason[] = [];
  const details: string[] = [];
  const via: HopExplanation['via'] = [];
  for (const sp of speakers) {
    if (sp.problem !== null) {
      reasons.push(sp.problem);
      details.push(`${sp.node}: ${REASON_TEXT[sp.problem]}`);
      continue;
    }
    const addresses = s.speakerStatus[sp.node]?.addresses;
    // A speaker that does not report its addresses cannot be checked against the subnet rule;
    // it is given the benefit of the doubt and the detail says so.
    if (addresses !== undefined) {
      const filter = nextHopFilter(peersOf(sp.node), addresses);
      if (!filter.accepts(decision.address)) {
        reasons.push('offPeerSubnet');
        details.push(`${sp.node}: ${filter.explain(decision.address)}`);
        continue;
      }
    }
    const up = sp.peers.filter((p) => p.up);
    if (up.length === 0) {
      reasons.push('sessionDown');
      details.push(`${sp.node}: ${sp.peers.map((p) => `session to ${p.peer} (${p.neighborAddress}) is ${p.sessionState}${p.lastError ? `, last error ${p.lastError}` : ''}`).join('; ')}`);
      continue;
    }
    for (const p of up) via.push({ speaker: sp.node, peer: p.peer, neighborAddress: p.neighborAddress });
  }
  if (via.length > 0) {
    const unchecked = speakers.some((sp) => sp.problem === null && !sp.knowsSubnets) ? ' (subnet rule not checked: the speaker does not report its addresses)' : '';
    return { ...base, address: decision.address, announced: true, reason: null, detail: `announced by ${via.map((v) => `${v.speaker} to ${v.peer} (${v.neighborAddress})`).join(', ')}${unchecked}`, via };
  }
  const reason = furthestReason(reasons);
  // The particulars per speaker (which subnet, which session) say more than the reason's sentence.
  return { ...base, address: decision.address, announced: false, reason, detail: details.join('; ') };
}

function explainGroup(s: Snapshot, intent: ServiceIpIntent, group: Group, nodes: Map<string, NodeRecord>, speakerCache: Map<string, SpeakerExplanation>): RackExplanation {
  const speakers = group.speakers.map((sp) => {
    let e = speakerCache.get(sp.name);
    if (!e) {
      e = explainSpeaker(s, sp);
      speakerCache.set(sp.name, e);
    }
    return e;
  });
  const peersOf = (name: string): BgpPeerRecord[] => s.peers[name] ?? [];
  const hops = group.candidates
    .map((n) => nodes.get(n))
    .filter((n): n is NodeRecord => n !== undefined)
    .map((n) => explainHop(s, intent, group, speakers, n, peersOf))
    .sort((a, b) => compareIps(a.address ?? '~', b.address ?? '~') || (a.node < b.node ? -1 : 1));
  const announced = [...new Set(hops.filter((h) => h.announced && h.address).map((h) => h.address as string))].sort(compareIps);
  return { rack: group.rack, label: group.label, speakers, nextHops: hops, announced };
}

export function explainService(s: Snapshot, key: string): ServiceExplanation {
  const svc = s.services.find((x) => x.key === key);
  const out: ServiceExplanation = { service: key, found: svc !== undefined, managed: svc?.managed ?? false, ip: null, prefix: null, pending: null, origin: null, intent: null, racks: [], problems: [] };
  if (!svc) {
    out.problems.push(`no Service ${key} is stored: it was never received, or it was deleted (racklb events --kind Service --name ${key})`);
    return out;
  }
  const ips = s.serviceIps[key] ?? [];
  out.pending = s.pending[key] ?? null;
  if (!svc.managed) out.problems.push(`not racklb's Service: it needs type LoadBalancer and the annotation ${OPT_IN_TEXT}`);
  if (svc.dualStack) return explainDualStack(s, svc, ips, out, svc.dualStack.policy);
  const ip = ips[0] ?? null;
  out.ip = ip;
  if (ip === null) {
    if (svc.managed) out.problems.push(`no IP yet: ${out.pending ?? 'not allocated'}`);
    return out;
  }
  const { problems, ...address } = explainAddress(s, svc, ip, new Map());
  Object.assign(out, address);
  out.problems.push(...problems);
  return out;
}

/** One address of a Service: where it came from, its route intent, and rack by rack its next hops. */
function explainAddress(s: Snapshot, svc: ServiceRecord, ip: string, cache: Map<string, SpeakerExplanation>): Pick<ServiceExplanation, 'prefix' | 'origin' | 'intent' | 'racks' | 'problems'> {
  const out: Pick<ServiceExplanation, 'prefix' | 'origin' | 'intent' | 'racks' | 'problems'> = { prefix: hostPrefix(ip), origin: null, intent: null, racks: [], problems: [] };
  const allocation = s.allocations.find((a) => a.ip === ip);
  if (allocation) {
    const origin = allocationOrigin(svc, allocation, s.eips);
    out.origin = { pool: allocation.pool, poolAddress: s.eips.find((e) => e.name === allocation.pool)?.address ?? null, ...origin };
  }
  const intent = s.intents.find((i) => i.ip === ip);
  if (!intent) {
    out.problems.push(`no route intent for ${ip}: on-service has not derived it (POST /resync to on-service repairs derived state)`);
    return out;
  }
  out.intent = { policy: intent.policy, family: intent.family, endpointNodes: intent.nodes };
  const nodes = new Map(s.nodes.map((n) => [n.name, n]));
  out.racks = announceGroups(s).map((g) => explainGroup(s, intent, g, nodes, cache));
  if (out.racks.every((r) => r.announced.length === 0)) out.problems.push('announced in no rack: see each next hop below');
  return out;
}

/**
 * Each family of a dual-stack Service on its own, in spec.ipFamilies order. The fields of the
 * explanation itself describe its first address, for readers that know one address per Service. A
 * missing family is a problem under RequireDualStack; under PreferDualStack it is what the Service
 * asked for when a family cannot be served, and its entry alone says why.
 */
function explainDualStack(s: Snapshot, svc: ServiceRecord, ips: readonly string[], out: ServiceExplanation, policy: DualStackPolicy): ServiceExplanation {
  const cache = new Map<string, SpeakerExplanation>();
  out.ipFamilyPolicy = policy;
  out.families = svc.ipFamilies.map((family): FamilyExplanation => {
    const ip = ips.find((x) => parseIp(x)?.family === family) ?? null;
    if (ip === null) {
      const pending = pendingOfFamily(out.pending ?? undefined, family) ?? 'not allocated';
      return { family, ip: null, prefix: null, pending, origin: null, intent: null, racks: [], problems: [] };
    }
    return { family, ip, pending: null, ...explainAddress(s, svc, ip, cache) };
  });
  const first = out.families.find((f) => f.ip !== null);
  if (first === undefined) {
    out.problems.push(`no IP yet: ${out.pending ?? 'not allocated'}`);
    return out;
  }
  Object.assign(out, { ip: first.ip, prefix: first.prefix, origin: first.origin, intent: first.intent, racks: first.racks });
  for (const f of out.families) {
    if (f.ip === null && policy === 'RequireDualStack') out.problems.push(`RequireDualStack, but no ${familyName(f.family)} address: ${f.pending}`);
    out.problems.push(...f.problems.map((p) => `${familyName(f.family)}: ${p}`));
  }
  return out;
}

export interface NodeExplanation {
  node: string;
  found: boolean;
  rack: string | null;
  labels: Record<string, string>;
  addresses: Partial<Record<Family, string>>;
  ready: boolean;
  schedulable: boolean;
  /** null when the node may be a next hop, else why not. */
  ineligible: string | null;
  /** The groups whose speakers announce this node: its rack, or every rack without a rack label. */
  racks: { rack: string; label: string; speakers: string[] }[];
  /** When the node itself runs a speaker; `serves` lists the racks whose next hops it announces. */
  speaker: (SpeakerExplanation & { serves: string[] }) | null;
  /** Every Service IP whose route may carry the node, per rack. */
  routes: { prefix: string; services: string[]; policy: string; rack: string; announced: boolean; reason: NotAnnouncedReason | null; detail: string }[];
}

export function explainNode(s: Snapshot, name: string): NodeExplanation {
  const node = s.nodes.find((n) => n.name === name);
  if (!node) {
    return { node: name, found: false, rack: null, labels: {}, addresses: {}, ready: false, schedulable: false, ineligible: null, racks: [], speaker: null, routes: [] };
  }
  const eligible = nextHopCandidate(node);
  const groups = announceGroups(s).filter((g) => g.candidates.includes(name));
  const nodes = new Map(s.nodes.map((n) => [n.name, n]));
  const cache = new Map<string, SpeakerExplanation>();
  const routes: NodeExplanation['routes'] = [];
  for (const intent of [...s.intents].sort((a, b) => compareIps(a.ip, b.ip))) {
    for (const g of groups) {
      const hop = explainGroup(s, intent, { ...g, candidates: [name] }, nodes, cache).nextHops[0];
      if (!hop) continue;
      // Only routes the node could carry: its family, and under Local only with an endpoint.
      routes.push({ prefix: hostPrefix(intent.ip), services: intent.services, policy: intent.policy, rack: g.rack, announced: hop.announced, reason: hop.reason, detail: hop.detail });
    }
  }
  let speaker: NodeExplanation['speaker'] = null;
  if (node.speaker && s.speakers.includes(name)) {
    speaker = { ...explainSpeaker(s, node), serves: s.racks.filter((r) => speakerServesRack(node, r)) };
  }
  return {
    node: name,
    found: true,
    rack: node.rack ?? null,
    labels: node.labels,
    addresses: node.addresses,
    ready: node.ready,
    schedulable: node.schedulable,
    ineligible: eligible.eligible ? null : `${eligible.reason}: ${REASON_TEXT[eligible.reason]}`,
    racks: groups.map((g) => ({ rack: g.rack, label: g.label, speakers: g.speakers.map((sp) => sp.name) })),
    speaker,
    routes,
  };
}
