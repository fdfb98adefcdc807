/**
 * Drift correction. ApiServerSource sends nothing for objects that exist when it starts, replays
 * nothing it missed while its watch was down, and drops an event after five failed sends; Redis
 * can come back from an old snapshot. A resync lists every watched kind from the API, compares it
 * with the store, sends an add or update for what the store lacks or holds at an older version and
 * a delete for what vanished, waits until the store has caught up, and only then marks it complete.
 */
import type { Logger } from 'pino';
import type { Kind } from '../core/types.js';
import { markComplete } from '../state/complete.js';
import type { Store } from '../store/store.js';
import { compareResourceVersions, sameContent } from '../core/versions.js';
import { deletedObject, describeTarget, type Deliverer, type Delivery, type SendResult, type Target } from './deliver.js';
import { storeKey, WATCHED, type KubeObject, type WatchedKind } from './kinds.js';
import type { KubeApi } from './kube.js';
import { expectLive, findVanished, parseForStore, storedIdentities, waitForConvergence, type Expectation } from './sync.js';

export interface KindReport {
  listed: number;
  /** Live objects the store held before the resync. */
  stored: number;
  unchanged: number;
  /** Sent as add: in the cluster, not in the store. */
  added: string[];
  /** Sent as update: the store held an older version, or another object of the same name. */
  updated: string[];
  /** Sent as delete: in the store, gone from the cluster. */
  deleted: string[];
  /** Objects racklb's functions refuse (the reason names the field and the rule). */
  invalid: { key: string; reason: string }[];
  /** Refused by a function when sent. */
  rejected: { key: string; reason: string }[];
  /** Stored at a version newer than the list: left alone (see sync.ts findVanished). */
  newerInStore: string[];
  /** Sent, but not reflected in the store before the deadline. */
  notConverged: string[];
  /** The kind could not be listed; nothing of it was changed. */
  error?: string;
}

export interface ResyncReport {
  target: string;
  kinds: Partial<Record<Kind, KindReport>>;
  /** Events sent to correct the store. */
  corrected: number;
  complete: boolean;
  markedComplete: boolean;
  durationMs: number;
}

export interface ResyncOptions {
  api: KubeApi;
  store: Store;
  /** Built with onResult wired to `resultSink` so rejections are known. */
  deliverer: Deliverer;
  target: Target;
  logger: Logger;
  /** Mark the store complete when everything converged (default true). */
  markComplete?: boolean;
  /** Also send objects the store already holds at the listed version. */
  all?: boolean;
  /** How long to wait for the store to reflect what was sent (streams and brokers are asynchronous). */
  convergenceTimeoutMs?: number;
  kinds?: readonly WatchedKind[];
}

/** Collects final refusals from a Deliverer (its onResult hook). */
export class ResultSink {
  readonly rejected = new Map<string, string>();
  readonly handle = (d: Delivery, r: SendResult): void => {
    if (!r.ok) this.rejected.set(`${d.w.kind}/${storeKey(d.w, d.object)}`, r.reason);
  };
}

export function emptyKindReport(): KindReport {
  return { listed: 0, stored: 0, unchanged: 0, added: [], updated: [], deleted: [], invalid: [], rejected: [], newerInStore: [], notConverged: [] };
}

export async function resync(o: ResyncOptions, sink: ResultSink): Promise<ResyncReport> {
  const started = Date.now();
  const report: ResyncReport = { target: describeTarget(o.target), kinds: {}, corrected: 0, complete: false, markedComplete: false, durationMs: 0 };
  const expectations: Expectation[] = [];
  let listFailed = false;

  for (const w of o.kinds ?? WATCHED) {
    const kr = emptyKindReport();
    report.kinds[w.kind] = kr;
    let items: KubeObject[];
    let listRv: string;
    try {
      ({ items, resourceVersion: listRv } = await o.api.list(w));
    } catch (err) {
      kr.error = err instanceof Error ? err.message : String(err);
      listFailed = true;
      o.logger.error({ kind: w.kind, err: kr.error }, 'cannot list; this kind is left as it is');
      continue;
    }
    kr.listed = items.length;
    kr.stored = await o.store.redis.scard(o.store.keys.index(w.kind));
    const byKey = new Map(items.map((i) => [storeKey(w, i), i]));
    const stored = await storedIdentities(o.store, w, [...byKey.keys()]);
    for (const [key, obj] of [...byKey].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const parsed = parseForStore(obj);
      if ('invalid' in parsed) {
        kr.invalid.push({ key, reason: parsed.invalid });
        continue;
      }
      const exp = expectLive(w, obj);
      const s = stored.get(key);
      // The same content (at the same version, or an older one whose status alone moved on), or a
      // newer version. The same version read into another record is not current: racklb reads it
      // differently since it was stored (an upgrade), and the function applies it again.
      const order = s === undefined ? undefined : compareResourceVersions(s.resourceVersion, exp.resourceVersion);
      const current =
        s !== undefined && !s.deleted && s.uid === exp.uid && ((order !== undefined && order > 0) || (s.record === undefined ? order === 0 : sameContent(s.record, parsed.record)));
      if (current && !o.all) {
        kr.unchanged++;
        continue;
      }
      const action = s === undefined || s.deleted ? 'add' : 'update';
      if (!current) (action === 'add' ? kr.added : kr.updated).push(key);
      o.deliverer.enqueue({ w, action, object: obj });
      expectations.push(exp);
    }
    const { vanished, newer } = await findVanished(o.store, w, new Set(byKey.keys()), listRv);
    kr.newerInStore = newer;
    for (const v of vanished) {
      kr.deleted.push(v.key);
      o.deliverer.enqueue({ w, action: 'delete', object: deletedObject(w, v.key, v.uid, v.resourceVersion) });
      expectations.push({ w, key: v.key, uid: v.uid, resourceVersion: v.resourceVersion, deleted: true });
    }
    report.corrected += kr.added.length + kr.updated.length + kr.deleted.length;
  }

  await o.deliverer.idle();
  const pending = expectations.filter((e) => !sink.rejected.has(`${e.w.kind}/${e.key}`));
  for (const [id, reason] of sink.rejected) {
    const [kind, ...rest] = id.split('/');
    report.kinds[kind as Kind]?.rejected.push({ key: rest.join('/'), reason });
  }
  const open = await waitForConvergence(o.store, pending, o.convergenceTimeoutMs ?? 60_000);
  for (const e of open) report.kinds[e.w.kind]?.notConverged.push(e.key);

  report.complete = !listFailed && open.length === 0;
  if (report.complete && (o.markComplete ?? true)) {
    await markComplete(o.store);
    report.markedComplete = true;
  }
  report.durationMs = Date.now() - started;
  return report;
}

/** The report as an operator reads it: one line per kind, then every key that was corrected. */
export function formatReport(r: ResyncReport): string {
  const lines = [`resync to ${r.target}: ${r.corrected} correction(s) in ${r.durationMs} ms; store ${r.markedComplete ? 'marked complete' : r.complete ? 'complete (not marked: --no-mark-complete)' : 'NOT marked complete'}`];
  for (const [kind, k] of Object.entries(r.kinds)) {
    if (k.error) {
      lines.push(`  ${kind.padEnd(14)} cannot list: ${k.error}`);
      continue;
    }
    lines.push(`  ${kind.padEnd(14)} listed ${k.listed}, stored ${k.stored}: ${k.unchanged} unchanged, ${k.added.length} added, ${k.updated.length} updated, ${k.deleted.length} deleted${k.invalid.length ? `, ${k.invalid.length} invalid` : ''}`);
    for (const key of k.added) lines.push(`      added    ${key}`);
    for (const key of k.updated) lines.push(`      updated  ${key}`);
    for (const key of k.deleted) lines.push(`      deleted  ${key}`);
    for (const i of k.invalid) lines.push(`      invalid  ${i.key}: ${i.reason}`);
    for (const i of k.rejected) lines.push(`      rejected ${i.key}: ${i.reason}`);
    for (const key of k.newerInStore) lines.push(`      kept     ${key} (stored version is newer than the list)`);
    for (const key of k.notConverged) lines.push(`      pending  ${key} (sent, not yet in the store)`);
  }
  return lines.join('\n');
}
