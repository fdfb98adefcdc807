/**
 * on-node-label: Node add/update/delete -> the node's record, its rack membership, whether it is a
 * next hop now, and (for speaker nodes) which BgpPeers it peers with. Touches only the node's old
 * and new rack, never the cluster's Services: route intents are stored factored (Service IPs once,
 * next hops per rack), so a relabel costs the same at 10 or 100,000 Services.
 */
import { identify, parseNode } from '../../src/core/objects.js';
import { assignPeers } from '../../src/core/peers.js';
import { nextHopCandidate } from '../../src/core/rack.js';
import type { NodeRecord, Outcome } from '../../src/core/types.js';
import { decideWrite } from '../../src/core/versions.js';
import type { KubeEvent } from '../../src/events/codec.js';
import { incomingVersion, recordOf, requireKind, type FunctionDefinition, type FunctionDeps } from '../../src/serve/handler.js';
import { UNRACKED } from '../../src/store/keys.js';
import { storedVersion, type ChangeScope } from '../../src/store/store.js';

export const definition: FunctionDefinition = { name: 'on-node-label', kinds: ['Node'], handle };

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

export async function handle(event: KubeEvent, { store, journal }: FunctionDeps): Promise<Outcome> {
  const id = identify(event.object);
  requireKind(definition, id.kind);
  const deleting = event.action === 'delete';
  const record = deleting ? undefined : recordOf(event, 'Node', parseNode);
  const k = store.keys;

  return store.transact<Outcome>([k.object('Node', id.key), k.epoch('BgpPeer')], async (r) => {
    // Reads that need nothing from each other go out together: a NotReady reaches the store one
    // round trip sooner. Unused on a stale event, and harmless then.
    const storedPeersRead = r.redis.get(k.peers(id.name));
    storedPeersRead.catch(() => undefined);
    const bgpPeersRead = record?.speaker ? r.allRecords('BgpPeer') : undefined;
    bgpPeersRead?.catch(() => undefined);
    const stored = await r.object('Node', id.key);
    const decision = decideWrite(storedVersion(stored), incomingVersion(event, id));
    if (!decision.apply) return { result: { outcome: 'stale', detail: decision.reason } };
    const prev = stored && !stored.deleted && stored.record.kind === 'Node' ? stored.record : undefined;

    const oldLocation = locationOf(prev);
    const newLocation = locationOf(record);
    let oldRackEmptied = false;
    if (oldLocation !== undefined && oldLocation !== newLocation) {
      await r.redis.watch(k.rackNodes(oldLocation));
      const members = await r.redis.smembers(k.rackNodes(oldLocation));
      oldRackEmptied = members.length === 1 && members[0] === id.name;
    }
    const peers = record?.speaker && bgpPeersRead ? assignPeers(record, await bgpPeersRead) : undefined;
    const peersJson = peers ? JSON.stringify(peers) : undefined;
    const storedPeersJson = (await storedPeersRead) ?? undefined;

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
      result: { outcome: 'applied', detail },
      write: (w) => {
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
  }, { journal });
}
