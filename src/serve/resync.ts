/**
 * POST /resync: recompute the derived state (rack next hops, peer assignments, IP allocations,
 * route intents) from the objects already stored, by running every stored record through the
 * function's own handler again. There is no second implementation of the derivation: a resync
 * is the handler deciding once more, with the stored record in place of a received object.
 *
 * Each record is re-derived in its own transaction, guarded by its resourceVersion (decideWrite's
 * `resync`), so a resync running beside live events never overwrites what a newer event decided.
 * Handlers write only what differs from the store and notify only real changes, so a resync of a
 * healthy store changes nothing a speaker acts on.
 *
 * A resync cannot vouch that the store is complete: it sees only what was stored, and an object
 * whose events never arrived is simply absent. Only a caller that has just delivered every object
 * (a full relist from the API) may ask for the store to be marked complete along with it.
 */
import { randomUUID } from 'node:crypto';
import { isRacklbError } from '../errors.js';
import { preferredApiVersion } from '../core/meta.js';
import type { Kind, KubeRecord } from '../core/types.js';
import type { KubeEvent } from '../events/codec.js';
import { markComplete } from '../state/complete.js';
import type { FunctionDefinition, FunctionDeps } from './handler.js';

/**
 * Pools and BGP settings before what uses them, Services before their EndpointSlices: the same
 * order a fresh cluster's objects would arrive in, so allocation sees every pool.
 */
export const RESYNC_ORDER: readonly Kind[] = ['BgpConf', 'Eip', 'BgpPeer', 'Node', 'Service', 'EndpointSlice'];

export const RESYNC_TYPE = 'racklb.resync';

export interface ResyncReport {
  function: string;
  /** Stored objects handed to the handler, per kind. */
  objects: Partial<Record<Kind, number>>;
  applied: number;
  /** Changed by a newer event while the resync ran; that event derived its state. */
  stale: number;
  /** Stored records the handler refuses today (a rule tightened since they were stored). */
  rejected: { kind: Kind; key: string; detail: string }[];
  complete: boolean;
  revisionBefore: number;
  revisionAfter: number;
  durationMs: number;
}

/** The event a resync hands the handler: the record itself, and a header so it is identified as usual. */
export function resyncEvent(record: KubeRecord): KubeEvent {
  const metadata: Record<string, string> = { name: record.name, uid: record.uid, resourceVersion: record.resourceVersion };
  if (record.namespace !== undefined) metadata.namespace = record.namespace;
  return {
    id: `resync-${randomUUID()}`,
    source: 'racklb/resync',
    type: RESYNC_TYPE,
    time: new Date().toISOString(),
    action: 'update',
    object: { apiVersion: preferredApiVersion(record.kind), kind: record.kind, metadata },
    record,
  };
}

export async function resyncFunction(def: FunctionDefinition, deps: FunctionDeps, opts: { markComplete?: boolean } = {}): Promise<ResyncReport> {
  const started = Date.now();
  const revision = async (): Promise<number> => Number((await deps.store.redis.hget(deps.store.keys.meta(), 'rev')) ?? 0);
  const report: ResyncReport = { function: def.name, objects: {}, applied: 0, stale: 0, rejected: [], complete: false, revisionBefore: await revision(), revisionAfter: 0, durationMs: 0 };
  for (const kind of RESYNC_ORDER) {
    if (!def.kinds.includes(kind)) continue;
    const records = await deps.store.reader.allRecords(kind);
    report.objects[kind] = records.length;
    for (const record of records) {
      try {
        const outcome = await def.handle(resyncEvent(record), deps);
        if (outcome.outcome === 'applied') report.applied++;
        else if (outcome.outcome === 'stale') report.stale++;
        else report.rejected.push({ kind, key: record.key, detail: outcome.detail });
      } catch (err) {
        // Store failures end the resync (the caller answers 503 and may try again); a record the
        // handler refuses is reported and the rest go on.
        if (!isRacklbError(err, 'RACKLB_INVALID_FIELD') && !isRacklbError(err, 'RACKLB_INVALID_EVENT')) throw err;
        report.rejected.push({ kind, key: record.key, detail: err.message });
      }
    }
  }
  if (opts.markComplete) {
    await markComplete(deps.store);
    report.complete = true;
  }
  report.revisionAfter = await revision();
  report.durationMs = Date.now() - started;
  return report;
}

// One resync per function and store at a time in this process: a second would only redo the first.
const running = new Set<string>();

/**
 * The HTTP side of POST /resync, after the request was authenticated: an optional JSON body
 * `{"complete": true}` by which the caller vouches for completeness. Answers 200 with the report,
 * 400 for a bad body, 409 while a resync of this function runs, 503 when Redis fails.
 */
export async function answerResync(def: FunctionDefinition, deps: FunctionDeps, body: string): Promise<{ status: number; body: string }> {
  let complete = false;
  if (body.trim() !== '') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return { status: 400, body: JSON.stringify({ error: 'resync body must be empty or a JSON object {"complete": true|false}', field: '.' }) };
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return { status: 400, body: JSON.stringify({ error: 'resync body must be a JSON object', field: '.' }) };
    const extra = Object.keys(parsed).filter((k) => k !== 'complete');
    if (extra.length > 0) return { status: 400, body: JSON.stringify({ error: `${extra[0]}: unknown field; the resync body takes only "complete"`, field: extra[0] }) };
    const value = (parsed as Record<string, unknown>).complete;
    if (value !== undefined && typeof value !== 'boolean') return { status: 400, body: JSON.stringify({ error: 'complete: must be true or false', field: 'complete' }) };
    complete = value === true;
  }
  const key = `${deps.store.keys.prefix}/${def.name}`;
  if (running.has(key)) return { status: 409, body: JSON.stringify({ error: `a resync of ${def.name} is already running` }) };
  running.add(key);
  try {
    const report = await resyncFunction(def, deps, { markComplete: complete });
    const detail = `resync of ${def.name}: ${Object.entries(report.objects).map(([k, n]) => `${n} ${k}`).join(', ') || 'no objects'}; ${report.applied} re-derived, ${report.stale} changed meanwhile, ${report.rejected.length} refused; revision ${report.revisionBefore} -> ${report.revisionAfter}${complete ? '; store marked complete by the caller' : ''}`;
    deps.logger.info({ fn: def.name, ...report, rejected: report.rejected.length }, 'resync');
    await deps.store
      .appendJournal({ at: new Date().toISOString(), fn: def.name, via: 'resync', outcome: 'applied', detail, kind: '', key: '', uid: '', rv: '', id: '', type: RESYNC_TYPE, source: '', event: '' })
      .catch((err: unknown) => deps.logger.warn({ err: String(err) }, 'could not journal a resync'));
    return { status: 200, body: JSON.stringify(report) };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    deps.logger.warn({ fn: def.name, err: message }, 'resync failed');
    return { status: 503, body: JSON.stringify({ error: `resync failed: ${message}` }) };
  } finally {
    running.delete(key);
  }
}
