/**
 * A synthetic cluster for the benchmarks that need no routers (throughput, cost of a change): racks
 * of nodes with two speakers each, one BgpPeer per rack, one default Eip, and Services that took
 * their IPs from it. Objects come from the test fixtures, so they are what the API server sends.
 *
 * Seeding 100,000 Services through the functions would measure the seeding; `seed` writes, with
 * pipelined commands, exactly the keys and values the handlers write for the same objects
 * (`verifySeed` checks that against the real handlers on a small cluster before any figure is taken).
 */
import type { Redis } from 'ioredis';
import { parseBgpConf, parseBgpPeer, parseEip, parseNode, parseService } from '../../src/core/objects.js';
import { assignPeers } from '../../src/core/peers.js';
import { nextHopCandidate } from '../../src/core/rack.js';
import { serviceIpIntent } from '../../src/core/intents.js';
import { KINDS, type Allocation, type KubeRecord } from '../../src/core/types.js';
import { formatServiceIps } from '../../src/store/keys.js';
import { ALLOCATION_INDEX_COMPLETE, nextEpochToken, type StoredObject, type Store } from '../../src/store/store.js';
import { bgpConf, bgpPeer, eip, node, service } from '../../test/helpers/fixtures.js';

export interface ClusterShape {
  racks: number;
  nodesPerRack: number;
  services: number;
}

export const SPEAKERS_PER_RACK = 2;
/** Large enough for 100,000 Services; 198.18.0.0/15 is the benchmarking range (RFC 2544). */
export const POOL = '198.18.0.0/15';
export const POOL_NAME = 'bench-pool';

export function rackName(r: number): string {
  return `rack-${String(r).padStart(3, '0')}`;
}

export function nodeName(r: number, j: number): string {
  return `node-${String(r).padStart(3, '0')}-${String(j).padStart(3, '0')}`;
}

export function serviceName(i: number): string {
  return `svc-${String(i).padStart(6, '0')}`;
}

function nodeIp(r: number, j: number): string {
  // 172.16.0.0/12 holds 4,096 /24s: one per rack, hosts from .10 (the router is .1). Nothing is routed.
  return `172.${16 + (r >> 8)}.${r & 255}.${10 + j}`;
}

export function routerIp(r: number): string {
  return `172.${16 + (r >> 8)}.${r & 255}.1`;
}

export function ipOfIndex(i: number): string {
  const base = (198 << 24) + (18 << 16);
  const n = base + i;
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface NodeVariant {
  rack?: number;
  ready?: boolean;
  resourceVersion?: string;
}

export function nodeObject(r: number, j: number, v: NodeVariant = {}): Record<string, unknown> {
  return node({
    name: nodeName(r, j),
    ip: nodeIp(r, j),
    rack: rackName(v.rack ?? r),
    speaker: j < SPEAKERS_PER_RACK,
    ready: v.ready ?? true,
    resourceVersion: v.resourceVersion ?? '1',
  });
}

export function serviceObject(i: number, v: { local?: boolean; resourceVersion?: string } = {}): Record<string, unknown> {
  return service({ name: serviceName(i), namespace: 'bench', externalTrafficPolicy: v.local ? 'Local' : 'Cluster', resourceVersion: v.resourceVersion ?? '1' });
}

export function bgpPeerObject(r: number, v: { holdTime?: number; resourceVersion?: string } = {}): Record<string, unknown> {
  return bgpPeer({
    name: `peer-${rackName(r)}`,
    peerAs: 65001 + r,
    neighborAddress: routerIp(r),
    rack: rackName(r),
    resourceVersion: v.resourceVersion ?? '1',
    spec: { timers: { config: { holdTime: v.holdTime ?? 90, keepaliveInterval: Math.floor((v.holdTime ?? 90) / 3) } } },
  });
}

export function eipObject(): Record<string, unknown> {
  return eip({ name: POOL_NAME, address: POOL, isDefault: true });
}

export function confObject(): Record<string, unknown> {
  return bgpConf({ as: 65100 });
}

/** Every object of the cluster in the order a fresh cluster's events would arrive. */
export function clusterObjects(shape: ClusterShape): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [confObject(), eipObject()];
  for (let r = 0; r < shape.racks; r++) out.push(bgpPeerObject(r));
  for (let r = 0; r < shape.racks; r++) for (let j = 0; j < shape.nodesPerRack; j++) out.push(nodeObject(r, j));
  for (let i = 0; i < shape.services; i++) out.push(serviceObject(i));
  return out;
}

const BATCH = 2000;

/** Writes the state the three functions would have built from `clusterObjects(shape)`, into an empty store. */
export async function seed(store: Store, shape: ClusterShape): Promise<void> {
  const k = store.keys;
  const redis: Redis = store.redis;
  let pipe = redis.pipeline();
  let queued = 0;
  const flush = async (force = false): Promise<void> => {
    if (queued === 0 || (!force && queued < BATCH)) return;
    const results = await pipe.exec();
    for (const [err] of results ?? []) if (err) throw err;
    pipe = redis.pipeline();
    queued = 0;
  };
  const put = async (record: KubeRecord): Promise<void> => {
    const stored: StoredObject = { deleted: false, record };
    pipe.set(k.object(record.kind, record.key), JSON.stringify(stored));
    pipe.sadd(k.index(record.kind), record.key);
    pipe.set(k.epoch(record.kind), nextEpochToken());
    queued += 3;
    await flush();
  };

  await put(parseBgpConf(confObject()));
  const pool = parseEip(eipObject());
  await put(pool);
  const peers = [];
  for (let r = 0; r < shape.racks; r++) {
    const p = parseBgpPeer(bgpPeerObject(r));
    peers.push(p);
    await put(p);
  }
  peers.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (let r = 0; r < shape.racks; r++) {
    for (let j = 0; j < shape.nodesPerRack; j++) {
      const n = parseNode(nodeObject(r, j));
      await put(n);
      const rack = n.rack as string;
      pipe.sadd(k.rackNodes(rack), n.name);
      pipe.sadd(k.racks(), rack);
      const c = nextHopCandidate(n);
      if (c.eligible) pipe.hset(k.rackNextHops(rack), n.name, JSON.stringify(c.candidate));
      if (n.speaker) {
        pipe.sadd(k.speakers(), n.name);
        pipe.set(k.peers(n.name), JSON.stringify(assignPeers(n, peers)));
      }
      queued += 5;
    }
  }
  for (let i = 0; i < shape.services; i++) {
    const s = parseService(serviceObject(i));
    await put(s);
    const ip = ipOfIndex(i);
    const allocation: Allocation = { ip, pool: pool.name, services: [s.key] };
    pipe.hset(k.allocations(), ip, JSON.stringify(allocation));
    pipe.hset(k.serviceIps(), s.key, formatServiceIps([ip]) ?? ip);
    pipe.hset(k.intents(), ip, JSON.stringify(serviceIpIntent(ip, [s], [])));
    pipe.zadd(k.allocationIndex(), 198 * 2 ** 24 + 18 * 2 ** 16 + i, ip);
    queued += 4;
    await flush();
  }
  pipe.zadd(k.allocationIndex(), -1, ALLOCATION_INDEX_COMPLETE);
  pipe.hset(k.meta(), 'generation', 'bench-seed', 'rev', '0', 'complete', '1');
  queued++;
  await flush(true);
}

/** Keys the handlers write that the seed leaves out on purpose: bookkeeping, not state. */
function comparable(key: string, store: Store): boolean {
  const k = store.keys;
  return key !== k.journal() && key !== k.changes() && key !== k.meta();
}

/** Every comparable key with its value in a canonical form (hashes and sets sorted). */
export async function dumpState(store: Store): Promise<Map<string, string>> {
  const redis = store.redis;
  const keys = (await redis.keys(`{${store.keys.prefix}}:*`)).filter((key) => comparable(key, store)).sort();
  const out = new Map<string, string>();
  const epochs = new Set(KINDS.map((kind) => store.keys.epoch(kind)));
  for (const key of keys) {
    const type = await redis.type(key);
    let value: string;
    // An epoch is a fresh token per write (nextEpochToken): only its presence can match.
    if (epochs.has(key)) value = type === 'string' ? '(epoch token)' : `(${type})`;
    else if (type === 'string') value = (await redis.get(key)) ?? '';
    else if (type === 'hash') value = JSON.stringify(Object.entries(await redis.hgetall(key)).sort());
    else if (type === 'set') value = JSON.stringify((await redis.smembers(key)).sort());
    else if (type === 'zset') value = JSON.stringify(await redis.zrange(key, 0, -1, 'WITHSCORES'));
    else value = `(${type})`;
    out.set(key, value);
  }
  return out;
}

/** The first differences between two dumps, for a message. */
export function diffStates(a: Map<string, string>, b: Map<string, string>, limit = 5): string[] {
  const out: string[] = [];
  for (const key of new Set([...a.keys(), ...b.keys()])) {
    if (a.get(key) !== b.get(key)) out.push(`${key}: seeded ${(a.get(key) ?? '(missing)').slice(0, 200)} / handlers ${(b.get(key) ?? '(missing)').slice(0, 200)}`);
    if (out.length >= limit) break;
  }
  return out;
}
