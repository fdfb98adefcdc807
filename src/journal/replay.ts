/**
 * Replaying the journal: to a URL (a function, a Knative Broker ingress, any CloudEvents sink),
 * or into another key prefix, where the journaled events run through the same handlers as the
 * live ones did and the rebuilt state can be compared with the live state.
 */
import { pino } from 'pino';
import { Agent, RetryAgent } from 'undici';
import { RacklbError } from '../errors.js';
import { FUNCTIONS, functionFor } from '../functions.js';
import type { Kind } from '../core/types.js';
import { fromJournal, journaledCloudEvent, toHttpMessage } from '../events/codec.js';
import { runHandler } from '../serve/handler.js';
import { readState, type StateDocument } from '../state/read.js';
import type { FunctionName } from '../store/keys.js';
import { Store } from '../store/store.js';
import { journalEntries, type JournalEntry, type JournalFilter } from './journal.js';

/** Statuses worth sending again: the ones a Knative broker retries (DESIGN.md); 400/401/403 never are. */
export const RETRYABLE_STATUSES = [404, 408, 409, 429, 500, 502, 503, 504];

export interface SendResult {
  entry: JournalEntry;
  status: number | undefined;
  ok: boolean;
  /** The answer's body or the transport error, for the report. */
  error?: string;
}

export interface ReplayToOptions {
  url: string;
  filter: JournalFilter;
  /** Events per second at most; unlimited when undefined. */
  rate?: number;
  retries?: number;
  /** Backoff bounds in milliseconds (doubling from min to max, or the answer's Retry-After). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  timeoutMs?: number;
  onResult?: (r: SendResult) => void;
}

export interface ReplayToReport {
  sent: number;
  ok: number;
  failed: number;
  /** Journal entries that hold no event to send (rejected envelopes, resyncs). */
  skipped: number;
  statuses: Record<string, number>;
}

/**
 * Sends the matching journaled events in journal order, one at a time (order is the point), as
 * binary-mode CloudEvents. Any 2xx is success (a function answers 200, a broker 202). Retryable
 * answers and connection failures are retried with exponential backoff by undici's RetryAgent;
 * what still fails is reported and the replay goes on with the next event.
 */
export async function replayTo(store: Store, opts: ReplayToOptions): Promise<ReplayToReport> {
  let target: URL;
  try {
    target = new URL(opts.url);
  } catch {
    throw new RacklbError('RACKLB_USAGE', `--to ${JSON.stringify(opts.url)}: must be an http:// or https:// URL`);
  }
  if (target.protocol !== 'http:' && target.protocol !== 'https:') throw new RacklbError('RACKLB_USAGE', `--to ${JSON.stringify(opts.url)}: must be an http:// or https:// URL`);
  const timeout = opts.timeoutMs ?? 10_000;
  const agent = new RetryAgent(new Agent({ headersTimeout: timeout, bodyTimeout: timeout }), {
    methods: ['POST'],
    statusCodes: RETRYABLE_STATUSES,
    maxRetries: opts.retries ?? 5,
    minTimeout: opts.minBackoffMs ?? 200,
    maxTimeout: opts.maxBackoffMs ?? 5000,
    timeoutFactor: 2,
    retryAfter: true,
    // Hand the last answer back instead of throwing, so its status and body reach the report.
    throwOnError: false,
  });
  const report: ReplayToReport = { sent: 0, ok: 0, failed: 0, skipped: 0, statuses: {} };
  const interval = opts.rate === undefined ? 0 : 1000 / opts.rate;
  let next = Date.now();
  try {
    for await (const entry of journalEntries(store, opts.filter)) {
      if (!entry.event) {
        report.skipped++;
        continue;
      }
      if (interval > 0) {
        const wait = next - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        next = Math.max(next, Date.now()) + interval;
      }
      const { headers, body } = toHttpMessage(journaledCloudEvent(entry.event));
      report.sent++;
      let result: SendResult;
      try {
        const res = await agent.request({ origin: target.origin, path: `${target.pathname}${target.search}`, method: 'POST', headers, body });
        const text = await res.body.text();
        const ok = res.statusCode >= 200 && res.statusCode < 300;
        result = { entry, status: res.statusCode, ok, ...(ok ? {} : { error: text.slice(0, 300) || `HTTP ${res.statusCode}` }) };
      } catch (err) {
        const e = err as { code?: string; message?: string };
        result = { entry, status: undefined, ok: false, error: `${e.code ?? 'error'}: ${e.message ?? String(err)}` };
      }
      const key = result.status === undefined ? 'error' : String(result.status);
      report.statuses[key] = (report.statuses[key] ?? 0) + 1;
      if (result.ok) report.ok++;
      else report.failed++;
      opts.onResult?.(result);
    }
  } finally {
    await agent.close();
  }
  return report;
}

export interface ReplayIntoOptions {
  /** Replay only events journaled up to this time (epoch ms): the state as it was then. */
  at?: number;
  /** Empty the target prefix first when it holds keys. */
  reset?: boolean;
}

export interface ReplayIntoReport {
  events: number;
  outcomes: Record<string, number>;
  /** Journal entries with nothing to run (rejected envelopes, resyncs, unknown functions). */
  skipped: number;
}

/** Deletes every key of a prefix; `racklb replay --into` uses it only on its own target. */
export async function clearPrefix(store: Store): Promise<number> {
  let cursor = '0';
  let removed = 0;
  do {
    const [next, keys] = await store.redis.scan(cursor, 'MATCH', store.keys.allPattern(), 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) removed += await store.redis.unlink(...keys);
  } while (cursor !== '0');
  return removed;
}

async function prefixHasKeys(store: Store): Promise<boolean> {
  let cursor = '0';
  do {
    const [next, keys] = await store.redis.scan(cursor, 'MATCH', store.keys.allPattern(), 'COUNT', 1000);
    if (keys.length > 0) return true;
    cursor = next;
  } while (cursor !== '0');
  return false;
}

/**
 * Runs every journaled event (up to `at`) through the handler of the function that received it,
 * in journal order, against `target`: the same decisions the live functions made, so the same
 * versions come out stale, the same IPs are allocated in the same order.
 */
export async function replayInto(live: Store, target: Store, opts: ReplayIntoOptions = {}): Promise<ReplayIntoReport> {
  if (target.keys.prefix === live.keys.prefix) throw new RacklbError('RACKLB_USAGE', `--into ${target.keys.prefix}: must differ from the live prefix`);
  if (await prefixHasKeys(target)) {
    if (!opts.reset) throw new RacklbError('RACKLB_USAGE', `--into ${target.keys.prefix}: the prefix already holds keys; choose another or add --reset to empty it first`);
    await clearPrefix(target);
  }
  const deps = { store: target, logger: pino({ level: 'silent' }) };
  const report: ReplayIntoReport = { events: 0, outcomes: {}, skipped: 0 };
  for await (const entry of journalEntries(live, opts.at === undefined ? {} : { until: opts.at })) {
    const def = definitionOf(entry);
    if (!entry.event || !def) {
      report.skipped++;
      continue;
    }
    let event;
    try {
      event = fromJournal(entry.event);
    } catch {
      report.skipped++;
      continue;
    }
    const handled = await runHandler(def, event, deps, 'replay');
    if (!handled.ok) throw handled.error;
    report.events++;
    report.outcomes[handled.outcome.outcome] = (report.outcomes[handled.outcome.outcome] ?? 0) + 1;
  }
  return report;
}

function definitionOf(entry: JournalEntry): (typeof FUNCTIONS)[FunctionName] | undefined {
  if (Object.hasOwn(FUNCTIONS, entry.fn)) return FUNCTIONS[entry.fn as FunctionName];
  try {
    return entry.kind ? functionFor(entry.kind as Kind) : undefined;
  } catch {
    return undefined;
  }
}

export interface StateDifference {
  path: string;
  live: unknown;
  rebuilt: unknown;
}

/**
 * What a rebuild from events can reproduce: everything but the store's own bookkeeping
 * (generation, revision, the completeness flag) and what speakers write (sessions).
 */
export function comparable(doc: StateDocument): Record<string, unknown> {
  const { generation: _g, revision: _r, complete: _c, sessions: _s, ...rest } = doc;
  return rest;
}

/** Leaf-by-leaf differences between two JSON documents, by dotted path; arrays compare whole. */
export function diffDocuments(live: unknown, rebuilt: unknown, path = ''): StateDifference[] {
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (isObj(live) && isObj(rebuilt)) {
    const out: StateDifference[] = [];
    for (const key of [...new Set([...Object.keys(live), ...Object.keys(rebuilt)])].sort()) {
      out.push(...diffDocuments(live[key], rebuilt[key], path ? `${path}.${key}` : key));
    }
    return out;
  }
  return JSON.stringify(live) === JSON.stringify(rebuilt) ? [] : [{ path, live, rebuilt }];
}

export async function diffStates(live: Store, rebuilt: Store): Promise<StateDifference[]> {
  return diffDocuments(comparable(await readState(live)), comparable(await readState(rebuilt)));
}

export function formatDifferences(diffs: readonly StateDifference[]): string {
  const show = (v: unknown): string => (v === undefined ? '(absent)' : JSON.stringify(v));
  return diffs.map((d) => `  ${d.path}\n      live:    ${show(d.live)}\n      rebuilt: ${show(d.rebuilt)}`).join('\n');
}
