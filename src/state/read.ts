/**
 * Reads the whole stored state into one document: what `racklb state` prints, and what the
 * inspection tools build on. Routes per rack are derived here with the same core function the
 * speaker uses, so the two can never disagree.
 */
import { effectiveConf } from '../core/peers.js';
import { routesForRack } from '../core/intents.js';
import { familyName, parseIp } from '../core/ip.js';
import { pendingOfFamily } from '../core/ipam.js';
import type { Allocation, BgpPeerRecord, Family, NextHopCandidate, RackBgpConf, ServiceIpIntent } from '../core/types.js';
import { EFFECTIVE_BGPCONF } from '../../functions/on-bgppeer/handler.js';
import { parseServiceIps, UNRACKED } from '../store/keys.js';
import type { Reader, Store } from '../store/store.js';

export interface PeerView {
  name: string;
  address: string;
  asn: number;
}

export interface StateDocument {
  generation: string | null;
  revision: number;
  complete: boolean;
  racks: Record<string, { nodes: string[]; nextHops: Record<string, NextHopCandidate>; bgp: RackBgpConf | null; routes: Record<string, string[]> }>;
  unracked: { nodes: string[]; nextHops: Record<string, NextHopCandidate> };
  /** `ip` and `pool`: the Service's first address; a dual-stack Service also lists every family under `addresses`. */
  services: Record<string, { ip: string | null; pool: string | null; policy: string | null; pending: string | null; addresses?: ServiceAddress[] }>;
  intents: Record<string, ServiceIpIntent>;
  peers: Record<string, PeerView[]>;
  sessions: Record<string, Record<string, unknown>>;
}

/** One family of a dual-stack Service: its address, or why it has none. */
export interface ServiceAddress {
  family: Family;
  ip: string | null;
  pool: string | null;
  pending: string | null;
}

export type OnMalformed = (field: string, key: string) => void;

/** Shape checks for records read back: one that fails is skipped and reported, never fatal. */
export function isIntent(x: unknown): x is ServiceIpIntent {
  const i = x as ServiceIpIntent;
  return typeof i === 'object' && i !== null && typeof i.ip === 'string' && (i.family === 'ipv4' || i.family === 'ipv6') && (i.policy === 'Cluster' || i.policy === 'Local') && Array.isArray(i.nodes);
}

export function isCandidate(x: unknown): x is NextHopCandidate {
  const c = x as NextHopCandidate;
  return typeof c === 'object' && c !== null && typeof c.node === 'string' && typeof c.addresses === 'object' && c.addresses !== null;
}

async function validHash<T>(r: Reader, key: string, valid: (x: unknown) => x is T, onMalformed: OnMalformed): Promise<Map<string, T>> {
  const out = new Map<string, T>();
  for (const [field, value] of await r.hashJson<unknown>(key, onMalformed)) {
    if (valid(value)) out.set(field, value);
    else onMalformed(field, key);
  }
  return out;
}

const ignore: OnMalformed = () => undefined;

/** Every Service IP's route intent. */
export async function readIntents(r: Reader, onMalformed: OnMalformed = ignore): Promise<Map<string, ServiceIpIntent>> {
  return validHash(r, r.keys.intents(), isIntent, onMalformed);
}

/**
 * The next-hop candidates of a rack: its own eligible nodes and those without a rack label. For
 * no rack (a speaker node without the rack label), every eligible node of the cluster, as
 * PorterLB's single speaker served them all.
 */
export async function readCandidates(r: Reader, rack: string | undefined, onMalformed: OnMalformed = ignore): Promise<NextHopCandidate[]> {
  return [...(await readCandidatesByRack(r, rack, onMalformed)).values()].flatMap((m) => [...m.values()]);
}

/** The same candidates by where they are stored: rack (UNRACKED for nodes without one) -> node -> candidate. */
export async function readCandidatesByRack(r: Reader, rack: string | undefined, onMalformed: OnMalformed = ignore): Promise<Map<string, Map<string, NextHopCandidate>>> {
  const racks = rack !== undefined ? [rack, UNRACKED] : [...(await r.redis.smembers(r.keys.racks())), UNRACKED];
  const maps = await Promise.all(racks.map((name) => validHash(r, r.keys.rackNextHops(name), isCandidate, onMalformed)));
  return new Map(racks.map((name, i) => [name, maps[i] as Map<string, NextHopCandidate>]));
}

/**
 * Runs `read` until the store's revision is the same after it as the revision `read` took first (at
 * most `attempts` times). Every transaction that changes the derived state bumps the revision in its
 * EXEC, so a read between two equal revisions is the state at that revision, not a mix of two: a
 * view that shows revision N never shows a change made after it. Under constant change the last read
 * is returned, labelled with the revision it began at (the state is at least that new).
 */
export async function atOneRevision<T extends { revision: number }>(store: Store, read: () => Promise<T>, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const got = await read();
    const after = Number((await store.redis.hget(store.keys.meta(), 'rev')) ?? 0);
    if (after === got.revision || attempt >= attempts) return got;
  }
}

export async function readState(store: Store): Promise<StateDocument> {
  return atOneRevision(store, () => readStateOnce(store));
}

async function readStateOnce(store: Store): Promise<StateDocument> {
  const r = store.reader;
  const k = store.keys;
  const meta = await r.redis.hgetall(k.meta());
  const intents = await readIntents(r);
  const intentList = [...intents.values()];
  const conf = await r.record('BgpConf', EFFECTIVE_BGPCONF);

  const racks: StateDocument['racks'] = {};
  for (const rack of (await r.redis.smembers(k.racks())).sort()) {
    const nextHops = await r.hashJson<NextHopCandidate>(k.rackNextHops(rack));
    const candidates = await readCandidates(r, rack);
    racks[rack] = {
      nodes: (await r.redis.smembers(k.rackNodes(rack))).sort(),
      nextHops: Object.fromEntries([...nextHops].sort()),
      bgp: effectiveConf(conf, rack) ?? null,
      routes: routesForRack(candidates, intentList),
    };
  }
  const unrackedHops = await r.hashJson<NextHopCandidate>(k.rackNextHops(UNRACKED));

  const services: StateDocument['services'] = {};
  const svcIps = await r.redis.hgetall(k.serviceIps());
  const pending = await r.redis.hgetall(k.pending());
  const allocations = await r.hashJson<Allocation>(k.allocations());
  for (const svc of await r.allRecords('Service')) {
    if (!svc.managed && !(svc.key in svcIps)) continue;
    const ips = parseServiceIps(svcIps[svc.key]);
    const ip = ips[0] ?? null;
    services[svc.key] = {
      ip,
      pool: ip ? (allocations.get(ip)?.pool ?? null) : null,
      policy: svc.externalTrafficPolicy,
      pending: pending[svc.key] ?? null,
    };
    if (svc.dualStack) {
      services[svc.key]!.addresses = svc.ipFamilies.map((family) => {
        const mine = ips.find((x) => parseIp(x)?.family === family) ?? null;
        return { family, ip: mine, pool: mine ? (allocations.get(mine)?.pool ?? null) : null, pending: mine ? null : (pendingOfFamily(pending[svc.key], family) ?? null) };
      });
    }
  }

  const peers: StateDocument['peers'] = {};
  const sessions: StateDocument['sessions'] = {};
  for (const node of (await r.redis.smembers(k.speakers())).sort()) {
    const raw = await r.redis.get(k.peers(node));
    let list: BgpPeerRecord[] = [];
    try {
      list = raw ? (JSON.parse(raw) as BgpPeerRecord[]) : [];
    } catch {
      list = [];
    }
    peers[node] = list.map((p) => ({ name: p.name, address: p.neighborAddress, asn: p.peerAs }));
    const s = await r.hashJson<Record<string, unknown>>(k.sessions(node));
    sessions[node] = Object.fromEntries(s);
  }

  return {
    generation: meta.generation ?? null,
    revision: Number(meta.rev ?? 0),
    complete: meta.complete === '1',
    racks,
    unracked: { nodes: (await r.redis.smembers(k.rackNodes(UNRACKED))).sort(), nextHops: Object.fromEntries([...unrackedHops].sort()) },
    services,
    intents: Object.fromEntries([...intents].sort()),
    peers,
    sessions,
  };
}

/** A person's view: one block per rack, then Services, then speakers and their peers. */
export function formatState(doc: StateDocument): string {
  const lines: string[] = [];
  lines.push(`store generation ${doc.generation ?? '(empty)'}, revision ${doc.revision}, ${doc.complete ? 'complete' : 'not marked complete (speakers withdraw nothing)'}`);
  for (const [rack, view] of Object.entries(doc.racks)) {
    lines.push('', `rack ${rack}  (AS ${view.bgp?.as ?? '?'}; nodes: ${view.nodes.join(', ') || 'none'})`);
    const routes = Object.entries(view.routes);
    if (routes.length === 0) lines.push('  no routes');
    for (const [prefix, hops] of routes) lines.push(`  ${prefix.padEnd(22)} -> ${hops.join(', ')}`);
  }
  if (doc.unracked.nodes.length) lines.push('', `nodes without a rack label (next-hop candidates in every rack): ${doc.unracked.nodes.join(', ')}`);
  lines.push('', 'services');
  const services = Object.entries(doc.services);
  if (services.length === 0) lines.push('  none');
  for (const [key, s] of services) {
    const ips = s.addresses ? s.addresses.map((a) => (a.ip ? `${a.ip}${a.pool ? ` (Eip ${a.pool})` : ''}` : `no ${familyName(a.family)}`)).join(', ') : `${s.ip ?? '-'}${s.pool ? ` (Eip ${s.pool})` : ''}`;
    lines.push(`  ${key.padEnd(30)} ${ips}${s.pending ? `  pending: ${s.pending}` : ''}`);
  }
  lines.push('', 'speakers');
  const speakers = Object.entries(doc.peers);
  if (speakers.length === 0) lines.push('  none');
  for (const [node, peers] of speakers) {
    lines.push(`  ${node}: ${peers.length ? peers.map((p) => `${p.name} ${p.address} AS ${p.asn}`).join('; ') : 'no peers'}`);
    for (const [addr, st] of Object.entries(doc.sessions[node] ?? {})) {
      const s = st as { sessionState?: string; uptimeSeconds?: number };
      lines.push(`      session ${addr}: ${s.sessionState ?? '?'}${s.uptimeSeconds ? `, up ${s.uptimeSeconds}s` : ''}`);
    }
  }
  return lines.join('\n');
}
