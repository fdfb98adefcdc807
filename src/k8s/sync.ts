/**
 * Comparing what the API lists with what the store holds: shared by the bridge's first sync and by
 * `racklb resync`. Both decide the same two things: which stored objects vanished from the cluster
 * (and so get a delete event), and when the store has caught up with what was sent (so it may be
 * marked complete, which lets the speakers withdraw routes again; docs/operations.md).
 */
import { parseObject } from '../core/objects.js';
import type { KubeRecord } from '../core/types.js';
import { compareResourceVersions } from '../core/versions.js';
import type { Store, StoredObject } from '../store/store.js';
import { metaOf, storeKey, type KubeObject, type WatchedKind } from './kinds.js';

export interface StoredIdentity {
  uid: string;
  resourceVersion: string;
  deleted: boolean;
  /** The stored record, for live objects. */
  record?: KubeRecord;
}

/** Stored identities of the given keys (absent or unreadable keys are left out). */
export async function storedIdentities(store: Store, w: WatchedKind, keys: readonly string[]): Promise<Map<string, StoredIdentity>> {
  const out = new Map<string, StoredIdentity>();
  for (let i = 0; i < keys.length; i += 500) {
    const batch = keys.slice(i, i + 500);
    const values = await store.redis.mget(batch.map((key) => store.keys.object(w.kind, key)));
    values.forEach((value, j) => {
      if (value === null) return;
      try {
        const s = JSON.parse(value) as StoredObject;
        const key = batch[j] as string;
        if (s.deleted) out.set(key, { uid: s.uid, resourceVersion: s.resourceVersion, deleted: true });
        else out.set(key, { uid: s.record.uid, resourceVersion: s.record.resourceVersion, deleted: false, record: s.record });
      } catch {
        // A corrupt record is left to `racklb state` to report; it never drives a delete.
      }
    });
  }
  return out;
}

export interface Vanished {
  key: string;
  uid: string;
  resourceVersion: string;
}

/**
 * Stored live objects that the list does not hold. Only those stored at or before the list's
 * resourceVersion: an object stored with a newer version was created after the list was taken
 * (another feeder delivered it), and deleting it would lose it for good, since the tombstone would
 * then refuse its own add event. A version that cannot be compared is left alone for the same reason.
 */
export async function findVanished(store: Store, w: WatchedKind, listed: ReadonlySet<string>, listResourceVersion: string): Promise<{ vanished: Vanished[]; newer: string[] }> {
  const stored = (await store.redis.smembers(store.keys.index(w.kind))).filter((k) => !listed.has(k)).sort();
  const ids = await storedIdentities(store, w, stored);
  const vanished: Vanished[] = [];
  const newer: string[] = [];
  for (const key of stored) {
    const id = ids.get(key);
    if (!id || id.deleted) continue;
    const order = compareResourceVersions(id.resourceVersion, listResourceVersion);
    if (order !== undefined && order <= 0) vanished.push({ key, uid: id.uid, resourceVersion: id.resourceVersion });
    else newer.push(key);
  }
  return { vanished, newer };
}

/** What racklb's functions would store for an object, or the reason they would refuse it. */
export function parseForStore(o: KubeObject): { record: KubeRecord } | { invalid: string } {
  try {
    return { record: parseObject(o) };
  } catch (err) {
    return { invalid: err instanceof Error ? err.message : String(err) };
  }
}

export function invalidReason(o: KubeObject): string | undefined {
  const parsed = parseForStore(o);
  return 'invalid' in parsed ? parsed.invalid : undefined;
}

export interface Expectation {
  w: WatchedKind;
  key: string;
  uid: string;
  resourceVersion: string;
  /** true: the object must be gone from the store; false: stored at this version or newer. */
  deleted: boolean;
}

export function expectLive(w: WatchedKind, o: KubeObject): Expectation {
  const m = metaOf(o);
  return { w, key: storeKey(w, o), uid: m.uid, resourceVersion: m.resourceVersion, deleted: false };
}

function converged(e: Expectation, s: StoredIdentity | undefined): boolean {
  if (e.deleted) return s === undefined || s.deleted || s.uid !== e.uid;
  if (s === undefined) return false;
  const order = compareResourceVersions(s.resourceVersion, e.resourceVersion);
  if (s.uid !== e.uid) return order !== undefined && order > 0;
  // The same object, at this version or a later one (possibly deleted since).
  return order === undefined ? s.resourceVersion === e.resourceVersion : order >= 0;
}

/** Polls the store until every expectation holds or the deadline passes; returns what is still off. */
export async function waitForConvergence(store: Store, expectations: readonly Expectation[], timeoutMs: number, pollMs = 100, cancelled: () => boolean = () => false): Promise<Expectation[]> {
  const deadline = Date.now() + timeoutMs;
  let open = [...expectations];
  for (;;) {
    if (cancelled()) return open;
    const byKind = new Map<WatchedKind, Expectation[]>();
    for (const e of open) byKind.set(e.w, [...(byKind.get(e.w) ?? []), e]);
    const still: Expectation[] = [];
    for (const [w, list] of byKind) {
      const ids = await storedIdentities(store, w, list.map((e) => e.key));
      for (const e of list) if (!converged(e, ids.get(e.key))) still.push(e);
    }
    open = still;
    if (open.length === 0 || Date.now() >= deadline) return open;
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
