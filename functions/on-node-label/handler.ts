/**
 * on-node-label: Node add/update/delete -> the node's record, its rack membership, whether it is a
 * next hop now, and (for speaker nodes) which BgpPeers it peers with. Touches only the node's old
 * and new rack, never the cluster's Services: route intents are stored factored (Service IPs once,
 * next hops per rack), so a relabel costs the same at 10 or 100,000 Services.
 */
import { identify, parseNode } from '../../src/core/objects.js';
import { assignPeers } from '../../src/core/peers.js';
import { nextHopCandidate } from '../../src/core/rack.js';
import type { BgpPeerRecord, NodeRecord, Outcome } from '../../src/core/types.js';
import type { KubeEvent } from '../../src/events/codec.js';
import { recordOf, requireKind, type FunctionDefinition, type FunctionDeps } from '../../src/serve/handler.js';
import { UNRACKED } from '../../src/store/keys.js';
import { groupCommitPerStore, sortByVersion, type QueuedEvent } from '../../src/serve/batch.js';
import type { Settled } from '../../src/store/group-commit.js';
import type { ChangeScope, Reader, TxPlan, TxWriter } from '../../src/store/store.js';

export const definition: FunctionDefinition = { name: 'on-node-label', kinds: ['Node'], handle, batches: (store) => [nodeBatchesOf(store)] };

function scopeOf(location: string): ChangeScope {
  // Nodes without a rack label are candidates in every rack.
  return location === UNRACKED ? 'all' : { rack: location };
}

function locationOf(node: NodeRecord | undefined): string | undefined {
  return node === undefined ? undefined : (node.rack ?? UNRACKED);
}

function candidateJson(node: NodeRecord | undefined): string | undefined {
  if (!node) return undefined;
  const c = nextHopCandidate(node);
  return c.eligible ? JSON.stringify(c.candidate) : undefined;
}

type NodeEvent = QueuedEvent<'Node'>;

/** One batch of Node events per store at a time (see GroupCommit). */
export const nodeBatchesOf = groupCommitPerStore<NodeEvent>((store, round) => ({
  watch: [store.keys.epoch('BgpPeer'), ...round.map((it) => store.keys.object('Node', it.id.key))],
  body: (r) => planNodes(r, round),
}));

/**
 * Node events that arrive while others are decided go together as one transaction: a NotReady
 * storm (a rack losing power) is one round trip for many nodes instead of one each.
 */
export async function handle(event: KubeEvent, { store, journal }: FunctionDeps): Promise<Outcome> {
  const id = identify(event.object);
  requireKind(definition, id.kind);
  const record = event.action === 'delete' ? undefined : recordOf(event, 'Node', parseNode);
  return nodeBatchesOf(store).submit({ key: id.key, event, id, record, journal });
}

/** Decides a round of Node events (no node twice) as one after the other would, in order. */
async function planNodes(r: Reader, items: readonly NodeEvent[]): Promise<TxPlan<Settled<Outcome>[]>> {
  const k = r.keys;
  // Reads that need nothing from each other go out together: a NotReady reaches the store one
  // round trip sooner. Unused on a stale event, and harmless then.
  const storedPeersRead = r.redis.mget(items.map((it) => k.peers(it.id.name)));
  storedPeersRead.catch(() => undefined);
  const bgpPeersRead = items.some((it) => it.record?.speaker) ? r.allRecordsCached('BgpPeer') : undefined;
  bgpPeersRead?.catch(() => undefined);
  const objects = await r.redis.mget(items.map((it) => k.object('Node', it.id.key)));

  const { settled, applied } = sortByVersion(r, 'Node', items, objects);
  if (applied.length === 0) return { result: settled as Settled<Outcome>[] };

  // The racks nodes leave: whether one empties depends on the nodes that left or joined it before
  // in this round, so their members are read once and followed in memory.
  const left = [...new Set(applied.flatMap(({ i, prev }) => {
    const from = locationOf(prev);
    return from !== undefined && from !== locationOf((items[i] as NodeEvent).record) ? [from] : [];
  }))];
  const members = new Map<string, Set<string>>();
  if (left.length > 0) {
    const watched = r.redis.watch(...left.map((rack) => k.rackNodes(rack)));
    watched.catch(() => undefined);
    const read = await Promise.all(left.map((rack) => r.redis.smembers(k.rackNodes(rack))));
    await watched;
    left.forEach((rack, j) => members.set(rack, new Set(read[j])));
  }
  const bgpPeers = bgpPeersRead ? await bgpPeersRead : [];
  const storedPeers = await storedPeersRead;

  const writes: ((w: TxWriter) => void)[] = [];
  for (const { i, prev } of applied) {
    const it = items[i] as NodeEvent;
    const oldLocation = locationOf(prev);
    const newLocation = locationOf(it.record);
    let oldRackEmptied = false;
    if (oldLocation !== undefined && oldLocation !== newLocation) {
      const m = members.get(oldLocation) ?? new Set<string>();
      oldRackEmptied = m.size === 1 && m.has(it.id.name);
      m.delete(it.id.name);
    }
    if (newLocation !== undefined) members.get(newLocation)?.add(it.id.name);
    const decided = decideNode(it, prev, storedPeers[i] ?? undefined, bgpPeers, oldRackEmptied);
    settled[i] = { ok: true, value: decided.outcome };
    writes.push(decided.write);
  }
  return {
    result: settled as Settled<Outcome>[],
    write: (w) => {
      for (const write of writes) write(w);
    },
  };
}

/** One node's decision and writes, given what the store holds for it. */
function decideNode(it: NodeEvent, prev: NodeRecord | undefined, storedPeersJson: string | undefined, bgpPeers: readonly BgpPeerRecord[], oldRackEmptied: boolean): { outcome: Outcome; write: (w: TxWriter) => void } {
  const { id, record, event } = it;
  const oldLocation = locationOf(prev);
  const newLocation = locationOf(record);
  const peers = record?.speaker ? assignPeers(record, bgpPeers) : undefined;
  const peersJson = peers ? JSON.stringify(peers) : undefined;

  const oldCandidate = candidateJson(prev);
  const newCandidate = candidateJson(record);
  const eligibility = record ? nextHopCandidate(record) : undefined;
  const detail = !record
    ? `node ${id.name} deleted`
    : `node ${id.name} in ${record.rack ? `rack ${record.rack}` : 'no rack (a candidate in every rack)'}; ${eligibility?.eligible ? 'next hop' : `not a next hop: ${eligibility && !eligibility.eligible ? eligibility.reason : ''}`}${record.speaker ? `; speaker with ${peers?.length ?? 0} peer(s)` : ''}`;

  // A node's memberships (rack, racks, next hop, speakers) are written here alone, always with the
  // node, so they match the stored node: an event leaves out the writes that would change nothing
  // (a Ready flip queued twelve commands, five of them such). A resync writes them all, mending
  // any that drifted.
  const settled = prev !== undefined && event.record === undefined;
  const moved = !settled || oldLocation !== newLocation;

  return {
    outcome: { outcome: 'applied', detail },
    write: (w) => {
      const k = w.keys;
      if (record) w.putObject(record, settled);
      else w.tombstone('Node', id.key, id.uid, id.resourceVersion);

      if (oldLocation !== undefined && oldLocation !== newLocation) {
        w.multi.srem(k.rackNodes(oldLocation), id.name);
        w.multi.hdel(k.rackNextHops(oldLocation), id.name);
        if (oldRackEmptied && oldLocation !== UNRACKED) w.multi.srem(k.racks(), oldLocation);
        if (oldCandidate) w.notify({ scope: scopeOf(oldLocation), topic: 'nexthops', subject: id.name });
      }
      if (newLocation !== undefined) {
        if (moved) {
          w.multi.sadd(k.rackNodes(newLocation), id.name);
          if (newLocation !== UNRACKED) w.multi.sadd(k.racks(), newLocation);
        }
        if (moved || newCandidate !== oldCandidate) {
          if (newCandidate) w.multi.hset(k.rackNextHops(newLocation), id.name, newCandidate);
          else w.multi.hdel(k.rackNextHops(newLocation), id.name);
        }
        if (newCandidate !== oldCandidate || newLocation !== oldLocation) w.notify({ scope: scopeOf(newLocation), topic: 'nexthops', subject: id.name });
      }

      // The peer list is there exactly when the node is a speaker (both written here together).
      if (!settled || peersJson !== storedPeersJson) {
        if (peersJson !== undefined) {
          w.multi.sadd(k.speakers(), id.name);
          w.multi.set(k.peers(id.name), peersJson);
        } else {
          w.multi.srem(k.speakers(), id.name);
          w.multi.del(k.peers(id.name));
        }
      }
      if (peersJson !== storedPeersJson) w.notify({ scope: { node: id.name }, topic: 'peers', subject: id.name });
      // The speaker on this node follows its own rack and addresses.
      if (prev?.rack !== record?.rack || JSON.stringify(prev?.addresses) !== JSON.stringify(record?.addresses) || prev?.speaker !== record?.speaker) {
        w.notify({ scope: { node: id.name }, topic: 'node', subject: id.name });
      }
    },
  };
}
