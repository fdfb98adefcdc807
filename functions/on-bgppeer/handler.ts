/**
 * on-bgppeer: BgpPeer and BgpConf events -> which speaker nodes peer with which router, and the
 * BGP settings speakers apply. A BgpPeer change recomputes the peer lists of the speaker nodes it
 * selects before or after the change (a resync: of every speaker node), writing and notifying only
 * the nodes whose list changed.
 */
import { identify, parseBgpConf, parseBgpPeer } from '../../src/core/objects.js';
import { assignPeers, speakersTouchedBy } from '../../src/core/peers.js';
import type { BgpPeerRecord, Outcome } from '../../src/core/types.js';
import { decideWrite } from '../../src/core/versions.js';
import type { KubeEvent } from '../../src/events/codec.js';
import { incomingVersion, recordOf, requireKind, type FunctionDefinition, type FunctionDeps } from '../../src/serve/handler.js';
import { storedVersion } from '../../src/store/store.js';

export const definition: FunctionDefinition = { name: 'on-bgppeer', kinds: ['BgpPeer', 'BgpConf'], handle };

/** PorterLB reads the BgpConf named `default`; racklb keeps that contract. */
export const EFFECTIVE_BGPCONF = 'default';

export async function handle(event: KubeEvent, deps: FunctionDeps): Promise<Outcome> {
  const id = identify(event.object);
  const kind = requireKind(definition, id.kind);
  return kind === 'BgpPeer' ? handlePeer(event, deps, id) : handleConf(event, deps, id);
}

type Identity = ReturnType<typeof identify>;

async function handlePeer(event: KubeEvent, { store, journal }: FunctionDeps, id: Identity): Promise<Outcome> {
  const deleting = event.action === 'delete';
  const record = deleting ? undefined : recordOf(event, 'BgpPeer', parseBgpPeer);
  const k = store.keys;
  // A resync recomputes every speaker's list, mending any that drifted; an event recomputes only
  // the lists of the speakers the peer selects before or after it (speakersTouchedBy).
  const everySpeaker = event.record !== undefined;
  // Only the peer's own key goes to transact: two updates of one BgpPeer in flight conflict on it,
  // and transact then makes the transactions on its keys take turns. The keys watched below stay
  // out of that list, or one such conflict would make every BgpPeer event take turns.
  return store.transact<Outcome>([k.object('BgpPeer', id.key)], async (r) => {
    // The speakers, their labels and addresses change with Node writes, which all bump this epoch.
    const nodesWatched = r.redis.watch(k.epoch('Node'));
    nodesWatched.catch(() => undefined);
    const [stored, speakerNames, peerNames] = await Promise.all([r.object('BgpPeer', id.key), r.redis.smembers(k.speakers()), r.redis.smembers(k.index('BgpPeer'))]);
    await nodesWatched;
    const decision = decideWrite(storedVersion(stored), incomingVersion(event, id));
    if (!decision.apply) return { result: { outcome: 'stale', detail: decision.reason } };
    const prev = stored && !stored.deleted && stored.record.kind === 'BgpPeer' ? stored.record : undefined;

    const speakers = await r.records('Node', speakerNames.sort());
    const touched = everySpeaker ? speakers : speakersTouchedBy(prev, record, speakers);
    // A change of another peer that alters one of these lists rewrites it: watching them before
    // the peers are read catches it. Updates of peers that select other speakers go side by side.
    const listsWatched = touched.length > 0 ? r.redis.watch(...touched.map((n) => k.peers(n.name))) : undefined;
    listsWatched?.catch(() => undefined);
    const [others, current] = touched.length > 0 ? await Promise.all([r.records('BgpPeer', peerNames.filter((p) => p !== id.key)), r.redis.mget(touched.map((n) => k.peers(n.name)))]) : [[], []];
    await listsWatched;
    const peers: BgpPeerRecord[] = record ? [...others, record] : others;
    const updates: { node: string; json: string }[] = [];
    const matched: string[] = [];
    touched.forEach((node, i) => {
      const assigned = assignPeers(node, peers);
      if (assigned.some((p) => p.key === id.key)) matched.push(node.name);
      const json = JSON.stringify(assigned);
      if (json !== current[i]) updates.push({ node: node.name, json });
    });
    const detail = record
      ? `BgpPeer ${id.name} (${record.neighborAddress} AS ${record.peerAs}) applies to ${matched.length ? `speaker node(s) ${matched.join(', ')}` : 'no speaker node yet'}`
      : `BgpPeer ${id.name} deleted`;
    return {
      result: { outcome: 'applied', detail },
      write: (w) => {
        if (record) w.putObject(record);
        else w.tombstone('BgpPeer', id.key, id.uid, id.resourceVersion);
        for (const u of updates) {
          w.multi.set(k.peers(u.node), u.json);
          w.notify({ scope: { node: u.node }, topic: 'peers', subject: id.name });
        }
      },
    };
  }, { journal });
}

async function handleConf(event: KubeEvent, { store, journal }: FunctionDeps, id: Identity): Promise<Outcome> {
  const deleting = event.action === 'delete';
  const record = deleting ? undefined : recordOf(event, 'BgpConf', parseBgpConf);
  const k = store.keys;
  return store.transact<Outcome>([k.object('BgpConf', id.key)], async (r) => {
    const stored = await r.object('BgpConf', id.key);
    const decision = decideWrite(storedVersion(stored), incomingVersion(event, id));
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
