/**
 * Everything the inspection tools (state views, explain, inspect) look at, read from Redis in one
 * go into plain data. The views and explanations are then pure functions of a snapshot, so they
 * can be tested on data and the web view and the command line cannot disagree.
 */
import type { LocalAddress } from '../../speaker/plan.js';
import type { Allocation, BgpConfRecord, BgpPeerRecord, EipRecord, NextHopCandidate, NodeRecord, ServiceIpIntent, ServiceRecord } from '../core/types.js';
import { EFFECTIVE_BGPCONF } from '../../functions/on-bgppeer/handler.js';
import { parseServiceIps, UNRACKED } from '../store/keys.js';
import type { Store } from '../store/store.js';
import { atOneRevision } from './read.js';

/** One BGP session as the speaker reports it (speaker/speaker.ts, reportStatus). */
export interface SessionStatus {
  peer: string | null;
  neighborAddress: string;
  sessionState: string;
  adminState?: string;
  uptimeSeconds?: number;
  prefixesSent?: number;
  prefixesReceived?: number;
  lastError?: string | null;
  updatedAt?: string;
}

/** A speaker's heartbeat (speaker/speaker.ts, reportStatus). */
export interface SpeakerStatus {
  lastSeen: string | undefined;
  gobgpd: string | undefined;
  paths: number | undefined;
  holding: boolean | undefined;
  /** The speaker's own addresses, for the subnet rule; undefined from a speaker that does not report them. */
  addresses: LocalAddress[] | undefined;
}

export interface Snapshot {
  /** When the snapshot was read (epoch ms), to judge how fresh heartbeats are. */
  readAt: number;
  generation: string | null;
  revision: number;
  complete: boolean;
  nodes: NodeRecord[];
  services: ServiceRecord[];
  eips: EipRecord[];
  bgpPeers: BgpPeerRecord[];
  /** The BgpConf speakers follow (named `default`). */
  bgpConf: BgpConfRecord | undefined;
  /** Racks with at least one node, sorted. */
  racks: string[];
  /** rack (or UNRACKED) -> node names. */
  rackNodes: Record<string, string[]>;
  /** rack (or UNRACKED) -> node -> candidate: the nodes that may carry traffic now. */
  nextHops: Record<string, Record<string, NextHopCandidate>>;
  speakers: string[];
  /** speaker node -> the BgpPeers assigned to it. */
  peers: Record<string, BgpPeerRecord[]>;
  /** speaker node -> neighbor address -> session. */
  sessions: Record<string, Record<string, SessionStatus>>;
  speakerStatus: Record<string, SpeakerStatus>;
  intents: ServiceIpIntent[];
  allocations: Allocation[];
  /** Service key -> its addresses, in spec.ipFamilies order (parseServiceIps). */
  serviceIps: Record<string, string[]>;
  /** Service key -> why it has no IP yet. */
  pending: Record<string, string>;
}

function parseJson<T>(text: string | null | undefined): T | undefined {
  if (text === null || text === undefined) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined;
  }
}

function speakerStatusOf(raw: Record<string, string>): SpeakerStatus {
  const addresses = parseJson<LocalAddress[]>(raw.addresses);
  return {
    lastSeen: raw.lastSeen,
    gobgpd: raw.gobgpd,
    paths: raw.paths === undefined ? undefined : Number(raw.paths),
    holding: raw.holding === undefined ? undefined : raw.holding === '1',
    addresses: Array.isArray(addresses) ? addresses : undefined,
  };
}

export async function readSnapshot(store: Store): Promise<Snapshot> {
  return atOneRevision(store, () => readSnapshotOnce(store));
}

async function readSnapshotOnce(store: Store): Promise<Snapshot> {
  const r = store.reader;
  const k = store.keys;
  const readAt = Date.now();
  const meta = await r.redis.hgetall(k.meta());
  const racks = (await r.redis.smembers(k.racks())).sort();
  const rackNodes: Snapshot['rackNodes'] = {};
  const nextHops: Snapshot['nextHops'] = {};
  for (const rack of [...racks, UNRACKED]) {
    rackNodes[rack] = (await r.redis.smembers(k.rackNodes(rack))).sort();
    nextHops[rack] = Object.fromEntries([...(await r.hashJson<NextHopCandidate>(k.rackNextHops(rack)))].sort());
  }
  const speakers = (await r.redis.smembers(k.speakers())).sort();
  const peers: Snapshot['peers'] = {};
  const sessions: Snapshot['sessions'] = {};
  const speakerStatus: Snapshot['speakerStatus'] = {};
  for (const node of speakers) {
    const list = parseJson<BgpPeerRecord[]>(await r.redis.get(k.peers(node)));
    peers[node] = Array.isArray(list) ? list : [];
    sessions[node] = Object.fromEntries(await r.hashJson<SessionStatus>(k.sessions(node)));
    speakerStatus[node] = speakerStatusOf(await r.redis.hgetall(k.speakerStatus(node)));
  }
  return {
    readAt,
    generation: meta.generation ?? null,
    revision: Number(meta.rev ?? 0),
    complete: meta.complete === '1',
    nodes: await r.allRecords('Node'),
    services: await r.allRecords('Service'),
    eips: await r.allRecords('Eip'),
    bgpPeers: await r.allRecords('BgpPeer'),
    bgpConf: await r.record('BgpConf', EFFECTIVE_BGPCONF),
    racks,
    rackNodes,
    nextHops,
    speakers,
    peers,
    sessions,
    speakerStatus,
    intents: [...(await r.hashJson<ServiceIpIntent>(k.intents())).values()],
    allocations: [...(await r.hashJson<Allocation>(k.allocations())).values()],
    serviceIps: Object.fromEntries(Object.entries(await r.redis.hgetall(k.serviceIps())).map(([key, value]) => [key, parseServiceIps(value)])),
    pending: await r.redis.hgetall(k.pending()),
  };
}
