/**
 * Reading the event journal (the `journal` stream, written by src/serve/handler.ts): entries,
 * filters, time bounds and following. Stream IDs start with the millisecond the entry was
 * appended, so time bounds are ID bounds and never a scan of the whole stream.
 */
import type { Redis } from 'ioredis';
import { RacklbError } from '../errors.js';
import { hasOwnKey, isObject, own } from '../core/fields.js';
import { KINDS, type Kind } from '../core/types.js';
import type { JournaledEvent } from '../events/codec.js';
import type { Store } from '../store/store.js';

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

/**
 * The object as a journal line keeps it: without the parts of a real object that are large and
 * that no handler reads, `metadata.managedFields`, kubectl's last-applied annotation (a second copy
 * of the object) and a Node's `status.images` (every image on the node, with its size). A Node of
 * a real cluster is 5 to 20 KB with them and about 1 KB without; 100,000 lines of such Nodes would
 * take gigabytes of Redis memory. Replaying the line decides as the original did.
 */
export function journalForm(object: unknown): unknown {
  if (!isObject(object)) return object;
  let out = object;
  const meta = own(object, 'metadata');
  if (isObject(meta)) {
    const annotations = own(meta, 'annotations');
    const lastApplied = isObject(annotations) && hasOwnKey(annotations, LAST_APPLIED);
    if (hasOwnKey(meta, 'managedFields') || lastApplied) {
      const { managedFields: _managed, ...kept } = meta;
      if (lastApplied) {
        const { [LAST_APPLIED]: _applied, ...otherAnnotations } = annotations;
        kept.annotations = otherAnnotations;
      }
      out = { ...out, metadata: kept };
    }
  }
  const status = own(object, 'status');
  if (own(object, 'kind') === 'Node' && isObject(status) && hasOwnKey(status, 'images')) {
    const { images: _images, ...kept } = status;
    out = { ...out, status: kept };
  }
  return out;
}

export const OUTCOMES = ['applied', 'stale', 'rejected'] as const;
export type JournalOutcome = (typeof OUTCOMES)[number];

export interface JournalEntry {
  /** The stream entry ID (`<ms>-<seq>`): the journal's order. */
  id: string;
  at: string;
  fn: string;
  /** http, webhook, stream, resync, replay. */
  via: string;
  outcome: string;
  detail: string;
  kind: string;
  key: string;
  uid: string;
  rv: string;
  eventId: string;
  type: string;
  source: string;
  /** The event as received, when the entry holds one that can be sent again. */
  event: JournaledEvent | undefined;
}

export interface JournalFilter {
  /** The function that received the event. */
  fn?: string;
  kind?: Kind;
  /** An object's name, or `namespace/name`. */
  name?: string;
  outcomes?: readonly string[];
  /** Epoch milliseconds, inclusive. */
  since?: number;
  until?: number;
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const ISO = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/**
 * A point in time as an operator writes it: an ISO 8601 time (`2024-05-01T10:00:00Z`; a date
 * alone is midnight UTC) or a duration before `now` (`90s`, `15m`, `2h`, `1d`).
 */
export function parseTime(text: string, flag: string, now: number = Date.now()): number {
  const t = text.trim();
  const d = DURATION.exec(t);
  if (d) return now - Number(d[1]) * (UNIT_MS[d[2] ?? 's'] ?? 1000);
  if (ISO.test(t)) {
    const ms = Date.parse(t);
    if (!Number.isNaN(ms)) return ms;
  }
  throw new RacklbError('RACKLB_USAGE', `${flag} ${JSON.stringify(text)}: must be an ISO 8601 time (2024-05-01T10:00:00Z) or a duration ago (90s, 15m, 2h, 1d)`);
}

/** A kind as typed on the command line, checked against the kinds racklb knows (any case). */
export function parseKind(text: string, flag = '--kind'): Kind {
  const kind = KINDS.find((k) => k.toLowerCase() === text.toLowerCase());
  if (!kind) throw new RacklbError('RACKLB_USAGE', `${flag} ${JSON.stringify(text)}: must be one of ${KINDS.join(', ')}`);
  return kind;
}

function fieldsOf(fields: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) out[fields[i] as string] = fields[i + 1] as string;
  return out;
}

function parseEvent(text: string | undefined): JournaledEvent | undefined {
  if (!text) return undefined;
  try {
    const e = JSON.parse(text) as Partial<JournaledEvent>;
    if (typeof e !== 'object' || e === null || typeof e.id !== 'string' || typeof e.type !== 'string' || typeof e.source !== 'string') return undefined;
    if (typeof e.data !== 'object' || e.data === null) return undefined;
    return { id: e.id, source: e.source, type: e.type, time: typeof e.time === 'string' ? e.time : undefined, data: e.data };
  } catch {
    // A rejected envelope keeps the raw body here, which may be anything.
    return undefined;
  }
}

export function parseEntry(id: string, raw: string[]): JournalEntry {
  const f = fieldsOf(raw);
  return {
    id,
    at: f.at ?? new Date(Number(id.split('-')[0])).toISOString(),
    fn: f.fn ?? '',
    via: f.via ?? '',
    outcome: f.outcome ?? '',
    detail: f.detail ?? '',
    kind: f.kind ?? '',
    key: f.key ?? '',
    uid: f.uid ?? '',
    rv: f.rv ?? '',
    eventId: f.id ?? '',
    type: f.type ?? '',
    source: f.source ?? '',
    event: parseEvent(f.event),
  };
}

export function matches(entry: JournalEntry, filter: JournalFilter): boolean {
  if (filter.fn !== undefined && entry.fn !== filter.fn) return false;
  if (filter.kind !== undefined && entry.kind !== filter.kind) return false;
  if (filter.name !== undefined) {
    const name = entry.key.includes('/') ? entry.key.slice(entry.key.indexOf('/') + 1) : entry.key;
    if (entry.key !== filter.name && name !== filter.name) return false;
  }
  if (filter.outcomes !== undefined && !filter.outcomes.includes(entry.outcome)) return false;
  return true;
}

function idBounds(filter: JournalFilter): { start: string; end: string } {
  return { start: filter.since === undefined ? '-' : `${Math.max(0, Math.floor(filter.since))}-0`, end: filter.until === undefined ? '+' : `${Math.max(0, Math.floor(filter.until))}` };
}

const PAGE = 1000;

/** Every matching entry in journal order, read page by page. */
export async function* journalEntries(store: Store, filter: JournalFilter = {}): AsyncGenerator<JournalEntry> {
  const { start, end } = idBounds(filter);
  let from = start;
  for (;;) {
    const page = (await store.redis.xrange(store.keys.journal(), from, end, 'COUNT', PAGE)) as [string, string[]][];
    for (const [id, fields] of page) {
      const entry = parseEntry(id, fields);
      if (matches(entry, filter)) yield entry;
    }
    const last = page[page.length - 1];
    if (page.length < PAGE || !last) return;
    from = `(${last[0]}`;
  }
}

/** The last `limit` matching entries, oldest first: what a person wants on a terminal. */
export async function lastEntries(store: Store, filter: JournalFilter, limit: number): Promise<JournalEntry[]> {
  const { start, end } = idBounds(filter);
  const out: JournalEntry[] = [];
  let to = end;
  while (out.length < limit) {
    const page = (await store.redis.xrevrange(store.keys.journal(), to, start, 'COUNT', PAGE)) as [string, string[]][];
    for (const [id, fields] of page) {
      const entry = parseEntry(id, fields);
      if (matches(entry, filter)) out.push(entry);
      if (out.length >= limit) break;
    }
    const last = page[page.length - 1];
    if (page.length < PAGE || !last) break;
    to = `(${last[0]}`;
  }
  return out.reverse();
}

/** The ID of the newest entry, so a follower starts after what was already printed. */
export async function lastId(store: Store): Promise<string> {
  const [newest] = (await store.redis.xrevrange(store.keys.journal(), '+', '-', 'COUNT', 1)) as [string, string[]][];
  return newest?.[0] ?? '0-0';
}

/** Follows new entries until the signal aborts; blocking reads use a connection of their own. */
export async function followJournal(store: Store, after: string, filter: JournalFilter, signal: AbortSignal, onEntry: (e: JournalEntry) => void): Promise<void> {
  const conn: Redis = store.redis.duplicate();
  conn.on('error', () => undefined);
  const onAbort = (): void => conn.disconnect();
  signal.addEventListener('abort', onAbort);
  let from = after;
  try {
    while (!signal.aborted) {
      let res: [string, [string, string[]][]][] | null;
      try {
        res = (await conn.xread('COUNT', PAGE, 'BLOCK', 2000, 'STREAMS', store.keys.journal(), from)) as [string, [string, string[]][]][] | null;
      } catch (err) {
        if (signal.aborted) return;
        throw err;
      }
      for (const [id, fields] of res?.[0]?.[1] ?? []) {
        from = id;
        const entry = parseEntry(id, fields);
        if (matches(entry, filter) && (filter.until === undefined || Number(id.split('-')[0]) <= filter.until)) onEntry(entry);
      }
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    conn.disconnect();
  }
}

/**
 * How many entries the journal has lost to its cap (or to XDEL): a replay that starts after such
 * a loss starts mid-history. Needs Redis 7 (XINFO's entries-added); undefined when unknown.
 */
export async function journalLoss(store: Store): Promise<number | undefined> {
  try {
    const info = (await store.redis.xinfo('STREAM', store.keys.journal())) as unknown[];
    const fields = new Map<string, unknown>();
    for (let i = 0; i + 1 < info.length; i += 2) fields.set(String(info[i]), info[i + 1]);
    const added = Number(fields.get('entries-added'));
    const length = Number(fields.get('length'));
    return Number.isFinite(added) && Number.isFinite(length) ? added - length : undefined;
  } catch {
    // No journal yet, or Redis before 7.
    return undefined;
  }
}
