/**
 * Consumes one function's events from a Redis stream with a consumer group: the KEDA deployment
 * path, where KEDA scales consumers on the group's lag. An entry is acknowledged only after its
 * effects are stored; an entry left pending by a killed consumer is claimed again (XAUTOCLAIM).
 */
import type { CloudEvent } from 'cloudevents';
import type { Redis } from 'ioredis';
import { isRacklbError } from '../errors.js';
import { decodeStructuredJson, toStructuredJson } from '../events/codec.js';
import type { FunctionName } from '../store/keys.js';
import type { Store } from '../store/store.js';
import { journalRejectedEnvelope, runHandler, type FunctionDefinition, type FunctionDeps } from './handler.js';
import type { FunctionMetrics } from './metrics.js';

export const STREAM_MAXLEN = 1_000_000;

/**
 * Trims from the head of a stream every entry that all of its consumer groups are done with: older
 * than each group's oldest pending entry, or than its last delivered one when nothing is pending.
 * Without it the stream keeps acknowledged entries up to STREAM_MAXLEN, about 1 GB of Redis memory
 * (the journal keeps each event for replay already). From the head only (XTRIM MINID), never XDEL:
 * a deleted entry inside the stream leaves Redis unable to compute a group's lag (XINFO GROUPS
 * answers nil), which KEDA's lag trigger reads as 0, scaling a function to zero with events waiting.
 * Returns the number of entries trimmed.
 */
const TRIM_CONSUMED_LUA = `
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local floorMs, floorSeq
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local pending = redis.call('XPENDING', KEYS[1], name)
  local keep = pending[1] > 0 and pending[2] or last
  local ms, seq = string.match(keep, '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  if floorMs == nil or ms < floorMs or (ms == floorMs and seq < floorSeq) then floorMs, floorSeq = ms, seq end
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d-%d', floorMs, floorSeq))
`;

type TrimmingRedis = { racklbTrimConsumed(key: string): Promise<number> };

/** Trims what every group of `key` has consumed (TRIM_CONSUMED_LUA) on this connection. */
export async function trimConsumed(conn: Redis, key: string): Promise<number> {
  if (!('racklbTrimConsumed' in conn)) conn.defineCommand('racklbTrimConsumed', { numberOfKeys: 1, lua: TRIM_CONSUMED_LUA });
  return (conn as unknown as TrimmingRedis).racklbTrimConsumed(key);
}

export interface StreamOptions {
  group?: string;
  consumer: string;
  blockMs?: number;
  /** Entries pending longer than this belonged to a consumer that died; take them over. */
  claimIdleMs?: number;
  signal: AbortSignal;
  /** Outcomes and latencies, under the names the HTTP front uses (src/serve/metrics.ts). */
  metrics?: FunctionMetrics;
  /** Kept up to date by the consumer, for its probes. */
  health?: StreamConsumerHealth;
}

/**
 * A round of the consumer's loop reads at most 64 entries, waits at most `blockMs` for them, and
 * handles them with Redis commands that time out; a loop that has not come round for this long is
 * stuck, and its pod is better restarted (what it holds pending is claimed by another consumer).
 */
export const STUCK_AFTER_MS = 60_000;

/** What the kubelet's probes read of a stream consumer (racklb serve --from-stream --metrics-port). */
export class StreamConsumerHealth {
  /** The group exists and the last round reached Redis. */
  ready = false;
  /** When the loop last came round: entries handled, a read that timed out, or a failure retried. */
  lastRoundAt = Date.now();

  live(now = Date.now()): boolean {
    return now - this.lastRoundAt <= STUCK_AFTER_MS;
  }
}

/**
 * Appends an event to a function's stream, making the function's consumer group first if it is
 * missing. KEDA measures lag on the group, so it must exist before any consumer does: with every
 * consumer scaled to zero, a stream without its group gives KEDA no reason to start one. A group
 * made once is not enough either: a Redis that restarted empty lost it, and XADD makes the stream
 * again without it. So each append carries the XGROUP CREATE (from '0': whatever the stream holds
 * is unread), in the same round trip; BUSYGROUP is the usual answer.
 */
export async function publishToStream(store: Store, fn: FunctionName, event: CloudEvent<unknown>): Promise<string> {
  const key = store.keys.eventStream(fn);
  const replies = await store.redis
    .pipeline()
    .xgroup('CREATE', key, fn, '0', 'MKSTREAM')
    .xadd(key, 'MAXLEN', '~', String(STREAM_MAXLEN), '*', 'event', toStructuredJson(event))
    .exec();
  const [group, added] = replies ?? [];
  if (group?.[0] && !String(group[0]).includes('BUSYGROUP')) throw group[0];
  if (added?.[0]) throw added[0];
  return typeof added?.[1] === 'string' ? added[1] : '';
}

type Entry = [id: string, fields: string[]];

function eventField(fields: string[]): string {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'event') return fields[i + 1] ?? '';
  return '';
}

export async function consumeStream(def: FunctionDefinition, deps: FunctionDeps, opts: StreamOptions): Promise<void> {
  const group = opts.group ?? def.name;
  const key = deps.store.keys.eventStream(def.name);
  // Blocking reads need a connection of their own.
  const conn = deps.store.redis.duplicate();
  conn.on('error', () => undefined);
  const onAbort = (): void => conn.disconnect();
  const { metrics, health } = opts;

  /** A failed trim costs memory, not correctness: consuming goes on, and the operator hears of it once. */
  let trimFailing = false;
  async function trim(): Promise<void> {
    try {
      await trimConsumed(conn, key);
      trimFailing = false;
    } catch (err) {
      if (opts.signal.aborted || trimFailing) return;
      trimFailing = true;
      deps.logger.warn({ err: String(err), stream: key }, `stream consumer: cannot trim consumed entries; the stream keeps them up to ${STREAM_MAXLEN} entries`);
    }
  }

  opts.signal.addEventListener('abort', onAbort);
  try {
    // Created before the first read, and again whenever Redis says it is gone (a Redis that restarted
    // empty, a stream deleted by hand): reads of a missing group fail forever, while the bridge's
    // relist fills the stream again. From '0': whatever a new stream holds is unread.
    let groupMissing = true;
    /** The group was there, or made, once: making it again means it was lost. */
    let groupSeen = false;
    while (!opts.signal.aborted) {
      try {
        if (groupMissing) {
          const created = await conn.xgroup('CREATE', key, group, '0', 'MKSTREAM').then(
            () => true,
            (err: unknown) => {
              if (!String(err).includes('BUSYGROUP')) throw err;
              return false;
            },
          );
          if (created && groupSeen) deps.logger.warn({ stream: key, group }, 'stream consumer: the consumer group was gone (Redis restarted empty?); created it again');
          groupMissing = false;
          groupSeen = true;
        }
        const claimed = (await conn.xautoclaim(key, group, opts.consumer, opts.claimIdleMs ?? 30_000, '0-0', 'COUNT', 64)) as [string, Entry[]];
        if (health) health.ready = true;
        await processEntries(claimed[1]);
        const read = (await conn.xreadgroup('GROUP', group, opts.consumer, 'COUNT', 64, 'BLOCK', opts.blockMs ?? 2000, 'STREAMS', key, '>')) as [string, Entry[]][] | null;
        if (read) for (const [, entries] of read) await processEntries(entries);
        if (claimed[1].length > 0 || read) await trim();
      } catch (err) {
        if (opts.signal.aborted) break;
        if (health) health.ready = false;
        if (String(err).includes('NOGROUP')) groupMissing = true;
        deps.logger.warn({ err: String(err), fn: def.name }, 'stream consumer: Redis error, retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
      if (health) health.lastRoundAt = Date.now();
    }
  } finally {
    opts.signal.removeEventListener('abort', onAbort);
    conn.disconnect();
  }

  /**
   * The entries of one read are handed over together, in stream order, so that they are decided in
   * batches as a broker's concurrent deliveries are (src/store/group-commit.ts); events of one
   * object still run one after the other (runHandler).
   */
  async function processEntries(entries: Entry[]): Promise<void> {
    await Promise.all(entries.map(([id, fields]) => processEntry(id, fields)));
  }

  async function processEntry(id: string, fields: string[] | null): Promise<void> {
    if (!fields) return; // deleted while pending
    const raw = eventField(fields);
    const stop = metrics?.time();
    let event;
    try {
      event = decodeStructuredJson(raw);
    } catch (err) {
      await journalRejectedEnvelope(deps, def.name, isRacklbError(err) ? err.message : String(err), 'stream', raw);
      await conn.xack(key, group, id);
      stop?.();
      metrics?.count('rejected');
      return;
    }
    const handled = await runHandler(def, event, deps, 'stream');
    // Left pending on a retryable failure: this or another consumer claims it again later.
    if (handled.ok) await conn.xack(key, group, id);
    stop?.();
    metrics?.count(handled.ok ? handled.outcome.outcome : 'retry');
  }
}
