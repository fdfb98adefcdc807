/**
 * The one handler shape every function has, and the wrapper that turns its result or error into
 * an outcome, journals it, and tells the transport how to answer.
 */
import type { Logger } from 'pino';
import { isRacklbError, RacklbError } from '../errors.js';
import { journalForm } from '../journal/journal.js';
import { redactedJson, redactText } from '../secrets.js';
import type { Kind, KubeRecord, Outcome } from '../core/types.js';
import { sameContent } from '../core/versions.js';
import type { KubeEvent } from '../events/codec.js';
import type { FunctionName } from '../store/keys.js';
import type { BatchStats } from '../store/group-commit.js';
import type { Store, StoredObject, TxJournal } from '../store/store.js';

export interface FunctionDeps {
  store: Store;
  logger: Logger;
  /**
   * The journal line of the event being handled, set by `runHandler`: a handler hands it to
   * `store.transact`, which writes it inside the transaction (see TxJournal). Unset when a handler
   * is called outside runHandler (a resync journals its own summary line).
   */
  journal?: TxJournal<Outcome>;
}

export type FunctionHandler = (event: KubeEvent, deps: FunctionDeps) => Promise<Outcome>;

export interface FunctionDefinition {
  name: FunctionName;
  /** The kinds this function owns; any other kind is rejected with 400. */
  kinds: readonly Kind[];
  handle: FunctionHandler;
  /** The group commits the function decides its events in, per store (for the metrics). */
  batches?: (store: Store) => readonly { readonly stats: BatchStats }[];
}

/** What the transport needs: the outcome, and whether the sender should retry. */
export type Handled = { ok: true; outcome: Outcome } | { ok: false; retry: true; error: RacklbError };

interface ObjectDescription {
  kind: string;
  key: string;
  uid: string;
  resourceVersion: string;
}

function describeObject(object: unknown): ObjectDescription {
  const o = (typeof object === 'object' && object !== null ? object : {}) as Record<string, unknown>;
  const meta = (typeof o.metadata === 'object' && o.metadata !== null ? o.metadata : {}) as Record<string, unknown>;
  const str = (v: unknown): string => (typeof v === 'string' ? v.slice(0, 300) : '');
  const name = str(meta.name);
  const ns = str(meta.namespace);
  return { kind: str(o.kind), key: ns ? `${ns}/${name}` : name, uid: str(meta.uid), resourceVersion: str(meta.resourceVersion) };
}

/**
 * Runs a handler for one decoded event. Invalid input becomes a `rejected` outcome; a store
 * failure becomes `retry` (the transport answers 503 or leaves a stream entry pending).
 */
export async function runHandler(def: FunctionDefinition, event: KubeEvent, deps: FunctionDeps, via: string): Promise<Handled> {
  const obj = describeObject(event.object);
  const handled = await inObjectOrder(`${def.name}\n${obj.kind}\n${obj.key}`, async (): Promise<Handled> => {
    let outcome: Outcome;
    const line: TxJournal<Outcome> = { entriesFor: (o) => [journalEntry(def.name, event, obj, o, via)], journaled: false };
    try {
      outcome = await def.handle(event, { ...deps, journal: line });
    } catch (err) {
      if (isRacklbError(err, 'RACKLB_INVALID_FIELD') || isRacklbError(err, 'RACKLB_INVALID_EVENT')) {
        outcome = { outcome: 'rejected', detail: err.message, ...(err.field ? { field: err.field } : {}), ...(err.rule ? { rule: err.rule } : {}) };
      } else {
        const error = err instanceof RacklbError ? err : new RacklbError('RACKLB_STORE_UNAVAILABLE', `unexpected failure: ${String(err)}`, { cause: err });
        deps.logger.warn({ fn: def.name, eventId: event.id, err: error.message, code: error.code }, 'event not applied; sender should retry');
        return { ok: false, retry: true, error };
      }
    }
    if (!line.journaled) await journal(deps, def.name, event, obj, outcome, via);
    return { ok: true, outcome };
  });
  if (handled.ok) eventLogger(deps.logger).info({ fn: def.name, eventId: event.id, type: event.type, ...obj, outcome: handled.outcome.outcome, detail: handled.outcome.detail }, 'event');
  return handled;
}

/** The last event of each object in this process, while one runs: what the next one waits for. */
const objectTails = new Map<string, Promise<unknown>>();

/**
 * Runs the events of one object one after the other, in the order they reached this process, and
 * those of different objects side by side. Side by side, two events of one object only fail each
 * other's EXEC (they WATCH the same key) and may apply in either order; the store's checks still
 * hold across processes.
 */
async function inObjectOrder<T>(object: string, run: () => Promise<T>): Promise<T> {
  const before = objectTails.get(object);
  const mine = (before === undefined ? run() : before.then(run, run)).finally(() => {
    if (objectTails.get(object) === mine) objectTails.delete(object);
  });
  objectTails.set(object, mine);
  return mine;
}

const eventLoggers = new WeakMap<Logger, Logger>();

/**
 * The logger of the line every event gets. Redaction (src/log.ts) matches member names, and this
 * line's members are fixed names holding strings, so it could never change the line; skipping it
 * halves what the line costs (pino clones and re-serializes every line when a redact path starts
 * with a wildcard). Every other line is still redacted.
 */
function eventLogger(logger: Logger): Logger {
  let child = eventLoggers.get(logger);
  if (child === undefined) {
    child = logger.child({}, { redact: { paths: [] } });
    eventLoggers.set(logger, child);
  }
  return child;
}

/** Journals an event that never reached a handler (undecodable envelope). */
export async function journalRejectedEnvelope(deps: FunctionDeps, fn: FunctionName, reason: string, via: string, rawBody: string): Promise<void> {
  await deps.store
    .appendJournal({ at: new Date().toISOString(), fn, via, outcome: 'rejected', detail: reason, kind: '', key: '', uid: '', rv: '', id: '', type: '', event: redactText(rawBody).slice(0, 4096) })
    .catch((err: unknown) => deps.logger.warn({ err: String(err) }, 'could not journal a rejected request'));
}

function journalEntry(fn: FunctionName, event: KubeEvent, obj: ObjectDescription, outcome: Outcome, via: string): Record<string, string> {
  return {
    at: new Date().toISOString(),
    fn,
    via,
    outcome: outcome.outcome,
    detail: outcome.detail,
    kind: obj.kind,
    key: obj.key,
    uid: obj.uid,
    rv: obj.resourceVersion,
    id: event.id,
    type: event.type,
    source: event.source,
    // A BgpPeer's MD5 password stays out of the journal (docs/operations.md, secrets), and so do
    // the large parts of an object no handler reads (journalForm).
    event: redactedJson({ id: event.id, source: event.source, type: event.type, time: event.time, data: journalForm(event.object) }),
  };
}

/** The journal line of an event that did not get one inside its transaction (rejected, or a handler without one). */
async function journal(deps: FunctionDeps, fn: FunctionName, event: KubeEvent, obj: ObjectDescription, outcome: Outcome, via: string): Promise<void> {
  try {
    await deps.store.appendJournal(journalEntry(fn, event, obj, outcome, via));
  } catch (err) {
    // The effect is stored; losing its journal line is worth a warning, not a retry that would
    // journal the same event twice.
    deps.logger.warn({ err: String(err), eventId: event.id }, 'could not append to the event journal');
  }
}

/**
 * The record a handler derives from: the stored one a resync hands over (src/serve/resync.ts),
 * else the event's object parsed and validated by `parse`.
 */
export function recordOf<K extends Kind>(event: KubeEvent, kind: K, parse: (raw: unknown) => Extract<KubeRecord, { kind: K }>): Extract<KubeRecord, { kind: K }> {
  if (event.record === undefined) return parse(event.object);
  if (event.record.kind !== kind) throw new RacklbError('RACKLB_INVALID_EVENT', `resync of a ${event.record.kind} handed to the ${kind} handler`);
  return event.record as Extract<KubeRecord, { kind: K }>;
}

/**
 * What `decideWrite` compares against the stored object: the event's version, and whether its
 * record (undefined for a delete) differs from the stored one (`readDifferently`).
 */
export function incomingVersion(
  event: KubeEvent,
  id: { uid: string; resourceVersion: string },
  record: KubeRecord | undefined,
  stored: StoredObject | undefined,
): { uid: string; resourceVersion: string; deleting: boolean; resync: boolean; readDifferently: () => boolean } {
  // Asked only of a repeat of the stored version: nothing is serialized for an event that is newer.
  const readDifferently = (): boolean => record !== undefined && stored !== undefined && !stored.deleted && !sameContent(stored.record, record);
  return { uid: id.uid, resourceVersion: id.resourceVersion, deleting: event.action === 'delete', resync: event.record !== undefined, readDifferently };
}

/** Rejects an event whose object is of a kind this function does not own. */
export function requireKind(def: { name: string; kinds: readonly Kind[] }, kind: string): Kind {
  if (!(def.kinds as readonly string[]).includes(kind)) {
    throw new RacklbError('RACKLB_INVALID_FIELD', `kind: ${def.name} takes ${def.kinds.join(', ')}, not ${JSON.stringify(kind)}`, { field: 'kind', rule: `must be one of ${def.kinds.join(', ')}` });
  }
  return kind as Kind;
}
