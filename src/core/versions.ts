/**
 * Ordering of Kubernetes events by the object's uid and resourceVersion. Delivery is
 * at-least-once and unordered (ApiServerSource retries, the bridge relists, replays happen), so
 * every write asks this module first whether the event is newer than what is stored.
 */

import type { KubeRecord } from './types.js';

export interface StoredVersion {
  uid: string;
  resourceVersion: string;
  deleted: boolean;
}

export type WriteDecision = { apply: true } | { apply: false; reason: string };

/**
 * resourceVersion is opaque by contract, but every API server in use hands out etcd revisions,
 * which are integers that grow. Compare them as integers; when either is not an integer the only
 * order we can know is equality.
 */
export function compareResourceVersions(a: string, b: string): number | undefined {
  if (/^\d{1,30}$/.test(a) && /^\d{1,30}$/.test(b)) {
    const x = BigInt(a);
    const y = BigInt(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  return a === b ? 0 : undefined;
}

/**
 * `resync` marks a recomputation from the stored record itself (POST /resync): it applies only
 * while that exact version is still the stored one, so a newer event that landed meanwhile (and
 * derived its own state) is never overwritten by the older record the resync read.
 * `readDifferently` (asked only of an event at the stored version): the event carries the stored
 * version of the stored object, yet racklb reads it into another record than the stored one. The
 * object is the same, so racklb's reading changed (an upgrade that reads more of it, such as
 * OpenELB's keys): the event applies, so that a relist after an upgrade reads every object again.
 */
export function decideWrite(stored: StoredVersion | undefined, incoming: { uid: string; resourceVersion: string; deleting: boolean; resync?: boolean; readDifferently?: () => boolean }): WriteDecision {
  if (incoming.resync) {
    if (stored !== undefined && !stored.deleted && stored.uid === incoming.uid && stored.resourceVersion === incoming.resourceVersion) return { apply: true };
    return { apply: false, reason: 'changed since the resync read it: a newer event has derived its state already' };
  }
  // A delete of an object never stored still writes its tombstone: with unordered delivery the
  // add may simply not have arrived yet, and must not bring the object back when it does.
  if (stored === undefined) return { apply: true };
  if (stored.deleted && stored.uid === incoming.uid && !incoming.deleting) {
    return { apply: false, reason: `object uid ${incoming.uid} was deleted at resourceVersion ${stored.resourceVersion}; a late add or update cannot bring it back` };
  }
  if (stored.deleted && incoming.deleting) {
    return { apply: false, reason: 'already deleted' };
  }
  const order = compareResourceVersions(incoming.resourceVersion, stored.resourceVersion);
  if (order === undefined) return { apply: true };
  if (incoming.deleting && stored.uid === incoming.uid) {
    // A delete event may carry the last resourceVersion the object had.
    return order >= 0 ? { apply: true } : { apply: false, reason: `delete at resourceVersion ${incoming.resourceVersion} is older than stored ${stored.resourceVersion}` };
  }
  if (order > 0) return { apply: true };
  if (order === 0 && !stored.deleted && stored.uid === incoming.uid && incoming.readDifferently?.() === true) return { apply: true };
  return {
    apply: false,
    reason: order === 0 ? `resourceVersion ${incoming.resourceVersion} already stored` : `resourceVersion ${incoming.resourceVersion} is older than stored ${stored.resourceVersion}`,
  };
}

/**
 * Two records of one object with the same content, whatever their resourceVersions: the object
 * moved on, if at all, only by changes racklb does not read (status other than a Service's ingress
 * addresses, other annotations). Records come from one parser, so their JSON compares field by
 * field; from two parsers (an upgrade), they differ where the readings differ.
 */
export function sameContent(a: KubeRecord, b: KubeRecord): boolean {
  return a.uid === b.uid && JSON.stringify({ ...a, resourceVersion: '' }) === JSON.stringify({ ...b, resourceVersion: '' });
}
