/**
 * What every function that decides its events in batches shares (src/store/group-commit.ts): the
 * event as it waits in a batch, one group commit per store, and the version check that sorts a
 * round's events into applied, stale and failed, as `decideWrite` does for an event alone.
 */
import type { Identity } from '../core/objects.js';
import type { Kind, KubeRecord, Outcome } from '../core/types.js';
import { decideWrite } from '../core/versions.js';
import type { KubeEvent } from '../events/codec.js';
import { decideInRounds, GroupCommit, type BatchedEvent, type Settled } from '../store/group-commit.js';
import { storedVersion, type Reader, type Store, type StoredObject, type TxPlan } from '../store/store.js';
import { incomingVersion } from './handler.js';

/** An event on its way into a batch: parsed and checked, not yet decided. */
export interface QueuedEvent<K extends Kind> extends BatchedEvent<Outcome> {
  event: KubeEvent;
  id: Identity;
  /** Undefined for a delete. */
  record: Extract<KubeRecord, { kind: K }> | undefined;
}

/**
 * The group commit of one kind of event, one per store (a process serving two stores, as tests
 * do, keeps them apart). `round` names the keys a round watches and the body that decides it.
 */
export function groupCommitPerStore<I extends BatchedEvent<Outcome>>(
  round: (store: Store, items: readonly I[]) => { watch: string[]; body: (r: Reader) => Promise<TxPlan<Settled<Outcome>[]>> },
): (store: Store) => GroupCommit<I, Outcome> {
  const perStore = new WeakMap<Store, GroupCommit<I, Outcome>>();
  return (store) => {
    let batches = perStore.get(store);
    if (batches === undefined) {
      batches = new GroupCommit((items) => decideInRounds(store, items, (these) => round(store, these)));
      perStore.set(store, batches);
    }
    return batches;
  };
}

/**
 * Each event of a round against its stored object (`values`, read in the round's order): stale
 * ones are answered, one whose stored record is corrupt fails alone (its sender retries it), and
 * the rest are listed in order with the live record they replace. `memo`: parse through the
 * store's text memo (Reader.parseObjectCached; `prev` is then frozen), for a small kind the batch
 * reads whole again afterwards (BgpPeers), so that each stored text is parsed once, not twice.
 */
export function sortByVersion<K extends Kind>(
  r: Reader,
  kind: K,
  items: readonly QueuedEvent<K>[],
  values: readonly (string | null)[],
  opts: { memo?: boolean } = {},
): { settled: (Settled<Outcome> | undefined)[]; applied: { i: number; prev: Extract<KubeRecord, { kind: K }> | undefined }[] } {
  const settled: (Settled<Outcome> | undefined)[] = items.map(() => undefined);
  const applied: { i: number; prev: Extract<KubeRecord, { kind: K }> | undefined }[] = [];
  items.forEach((it, i) => {
    let stored: StoredObject | undefined;
    try {
      const key = r.keys.object(kind, it.id.key);
      stored = opts.memo ? r.parseObjectCached(values[i] ?? null, key) : r.parseObject(values[i] ?? null, key);
    } catch (error) {
      settled[i] = { ok: false, error };
      return;
    }
    const decision = decideWrite(storedVersion(stored), incomingVersion(it.event, it.id, it.record, stored));
    if (!decision.apply) settled[i] = { ok: true, value: { outcome: 'stale', detail: decision.reason } };
    else applied.push({ i, prev: stored && !stored.deleted && stored.record.kind === kind ? (stored.record as Extract<KubeRecord, { kind: K }>) : undefined });
  });
  return { settled, applied };
}
