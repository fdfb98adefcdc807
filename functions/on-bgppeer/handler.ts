/**
 * on-bgppeer: BgpPeer and BgpConf events -> which speaker nodes peer with which router, and the
 * BGP settings speakers apply. A BgpPeer change recomputes the peer lists of the speaker nodes it
 * selects before or after the change (a resync: of every speaker node), writing and notifying only
 * the nodes whose list changed.
 */
import { identify, parseBgpConf, parseBgpPeer } from '../../src/core/objects.js';
import { assignPeers, speakersTouchedBy } from '../../src/core/peers.js';
import type { Outcome } from '../../src/core/types.js';
import { decideWrite } from '../../src/core/versions.js';
import type { KubeEvent } from '../../src/events/codec.js';
import { incomingVersion, recordOf, requireKind, type FunctionDefinition, type FunctionDeps } from '../../src/serve/handler.js';
import { groupCommitPerStore, sortByVersion, type QueuedEvent } from '../../src/serve/batch.js';
import type { Settled } from '../../src/store/group-commit.js';
import { storedVersion, type Reader, type TxPlan } from '../../src/store/store.js';

export const definition: FunctionDefinition = { name: 'on-bgppeer', kinds: ['BgpPeer', 'BgpConf'], handle, batches: (store) => [peerBatchesOf(store)] };

/** PorterLB reads the BgpConf named `default`; racklb keeps that contract. */
export const EFFECTIVE_BGPCONF = 'default';

export async function handle(event: KubeEvent, deps: FunctionDeps): Promise<Outcome> {
  const id = identify(event.object);
  const kind = requireKind(definition, id.kind);
  return kind === 'BgpPeer' ? handlePeer(event, deps, id) : handleConf(event, deps, id);
}

type Identity = ReturnType<typeof identify>;

type PeerEvent = QueuedEvent<'BgpPeer'>;

/**
 * One batch of BgpPeer events per store at a time (see GroupCommit). Only the peers' own keys up
 * front; the keys watched in planPeers stay out of transact's list, or one conflict on them would
 * make every BgpPeer transaction take turns.
 */
export const peerBatchesOf = groupCommitPerStore<PeerEvent>((store, round) => ({
  watch: round.map((it) => store.keys.object('BgpPeer', it.id.key)),
  body: (r) => planPeers(r, round),
}));

/**
 * BgpPeer events that arrive while others are decided go together: every one reads each speaker's
 * labels and every BgpPeer (a nodeSelector may match any node), which a batch reads once.
 */
async function handlePeer(event: KubeEvent, { store, journal }: FunctionDeps, id: Identity): Promise<Outcome> {
  const record = event.action === 'delete' ? undefined : recordOf(event, 'BgpPeer', parseBgpPeer);
  return peerBatchesOf(store).submit({ key: id.key, event, id, record, journal });
}

/** Decides a round of BgpPeer events (no peer twice) as one after the other would, in order. */
async function planPeers(r: Reader, items: readonly PeerEvent[]): Promise<TxPlan<Settled<Outcome>[]>> {
  const k = r.keys;
  // The speakers, their labels and addresses change with Node writes, which all bump this epoch:
  // watched before it is read, so the speakers come from memory while no Node was written. The
  // index of BgpPeers too: a BgpPeer another replica adds after it was read would otherwise be left
  // out of every list this batch rewrites (it changes only with adds and deletes).
  const nodesWatched = r.redis.watch(k.epoch('Node'), k.index('BgpPeer'));
  nodesWatched.catch(() => undefined);
  const [objects, speakers, peerNames] = await Promise.all([r.redis.mget(items.map((it) => k.object('BgpPeer', it.id.key))), r.speakersCached(), r.redis.smembers(k.index('BgpPeer'))]);
  await nodesWatched;

  // Through the text memo: the same texts come back in recordsCached below, and are not parsed twice.
  const { settled, applied } = sortByVersion(r, 'BgpPeer', items, objects, { memo: true });
  if (applied.length === 0) return { result: settled as Settled<Outcome>[] };
  const listed = new Set(applied.filter((a) => a.prev !== undefined).map((a) => a.i));

  // A resync recomputes every speaker's list, mending any that drifted; an event recomputes only
  // the lists of the speakers the peer selects before or after it (speakersTouchedBy), the only
  // lists it can change.
  const touchedBy = applied.map(({ i, prev }) => {
    const it = items[i] as PeerEvent;
    return it.event.record !== undefined ? speakers : speakersTouchedBy(prev, it.record, speakers);
  });
  const touched = [...new Set(touchedBy.flat().map((n) => n.name))];
  // A change of another peer that alters one of these lists rewrites it: watching them before the
  // peers are read catches it. Updates of peers that select other speakers go side by side.
  const listsWatched = touched.length > 0 ? r.redis.watch(...touched.map((n) => k.peers(n))) : undefined;
  listsWatched?.catch(() => undefined);
  const [stored, current] = touched.length > 0 ? await Promise.all([r.recordsCached('BgpPeer', peerNames), r.redis.mget(touched.map((n) => k.peers(n)))]) : [[], []];
  await listsWatched;

  // The peers and lists as each event leaves them, one after the other.
  const peers = new Map(stored.map((p) => [p.key, p]));
  const lists = new Map(touched.map((n, j) => [n, current[j] ?? null]));
  const updates: { node: string; json: string; subject: string }[] = [];
  applied.forEach(({ i }, j) => {
    const it = items[i] as PeerEvent;
    if (it.record) peers.set(it.id.key, it.record);
    else peers.delete(it.id.key);
    const all = [...peers.values()];
    const matched: string[] = [];
    for (const node of touchedBy[j] ?? []) {
      const assigned = assignPeers(node, all);
      if (assigned.some((p) => p.key === it.id.key)) matched.push(node.name);
      const json = JSON.stringify(assigned);
      if (json !== lists.get(node.name)) {
        lists.set(node.name, json);
        updates.push({ node: node.name, json, subject: it.id.name });
      }
    }
    const detail = it.record
      ? `BgpPeer ${it.id.name} (${it.record.neighborAddress} AS ${it.record.peerAs}) applies to ${matched.length ? `speaker node(s) ${matched.join(', ')}` : 'no speaker node yet'}`
      : `BgpPeer ${it.id.name} deleted`;
    settled[i] = { ok: true, value: { outcome: 'applied', detail } };
  });
  return {
    result: settled as Settled<Outcome>[],
    write: (w) => {
      for (const { i } of applied) {
        const it = items[i] as PeerEvent;
        if (it.record) w.putObject(it.record, listed.has(i));
        else w.tombstone('BgpPeer', it.id.key, it.id.uid, it.id.resourceVersion);
      }
      for (const u of updates) {
        w.multi.set(k.peers(u.node), u.json);
        w.notify({ scope: { node: u.node }, topic: 'peers', subject: u.subject });
      }
    },
  };
}

async function handleConf(event: KubeEvent, { store, journal }: FunctionDeps, id: Identity): Promise<Outcome> {
  const deleting = event.action === 'delete';
  const record = deleting ? undefined : recordOf(event, 'BgpConf', parseBgpConf);
  const k = store.keys;
  return store.transact<Outcome>([k.object('BgpConf', id.key)], async (r) => {
    const stored = await r.object('BgpConf', id.key);
    const decision = decideWrite(storedVersion(stored), incomingVersion(event, id, record, stored));
    if (!decision.apply) return { result: { outcome: 'stale', detail: decision.reason } };
    const effective = id.name === EFFECTIVE_BGPCONF;
    const detail = !effective
      ? `BgpConf ${id.name} stored but not used: speakers follow the BgpConf named "${EFFECTIVE_BGPCONF}", as PorterLB does`
      : record
        ? `BgpConf ${id.name}: AS ${record.as}${Object.keys(record.asPerRack).length ? `, per rack ${JSON.stringify(record.asPerRack)}` : ''}, listen port ${record.listenPort}`
        : `BgpConf ${id.name} deleted: speakers keep their sessions until a BgpConf returns`;
    return {
      result: { outcome: 'applied', detail },
      write: (w) => {
        if (record) w.putObject(record);
        else w.tombstone('BgpConf', id.key, id.uid, id.resourceVersion);
        if (effective) w.notify({ scope: 'all', topic: 'conf', subject: id.name });
      },
    };
  }, { journal });
}
