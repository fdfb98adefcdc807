/**
 * Consumes one function's events from a Redis stream with a consumer group: the KEDA deployment
 * path, where KEDA scales consumers on the group's lag. An entry is acknowledged only after its
 * effects are stored; an entry left pending by a killed consumer is claimed again (XAUTOCLAIM).
 */
import type { CloudEvent } from 'cloudevents';
import { isRacklbError } from '../errors.js';
import { decodeStructuredJson, toStructuredJson } from '../events/codec.js';
import type { FunctionName } from '../store/keys.js';
import type { Store } from '../store/store.js';
import { journalRejectedEnvelope, runHandler, type FunctionDefinition, type FunctionDeps } from './handler.js';

export const STREAM_MAXLEN = 1_000_000;

export interface StreamOptions {
  group?: string;
  consumer: string;
  blockMs?: number;
  /** Entries pending longer than this belonged to a consumer that died; take them over. */
  claimIdleMs?: number;
  signal: AbortSignal;
}

export async function publishToStream(store: Store, fn: FunctionName, event: CloudEvent<unknown>): Promise<string> {
  const id = await store.redis.xadd(store.keys.eventStream(fn), 'MAXLEN', '~', String(STREAM_MAXLEN), '*', 'event', toStructuredJson(event));
  return id ?? '';
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
  opts.signal.addEventListener('abort', onAbort);
  try {
    await conn.xgroup('CREATE', key, group, '0', 'MKSTREAM').catch((err: unknown) => {
      if (!String(err).includes('BUSYGROUP')) throw err;
    });
    while (!opts.signal.aborted) {
      try {
        const claimed = (await conn.xautoclaim(key, group, opts.consumer, opts.claimIdleMs ?? 30_000, '0-0', 'COUNT', 64)) as [string, Entry[]];
        await processEntries(claimed[1]);
        const read = (await conn.xreadgroup('GROUP', group, opts.consumer, 'COUNT', 64, 'BLOCK', opts.blockMs ?? 2000, 'STREAMS', key, '>')) as [string, Entry[]][] | null;
        if (read) for (const [, entries] of read) await processEntries(entries);
      } catch (err) {
        if (opts.signal.aborted) break;
        deps.logger.warn({ err: String(err), fn: def.name }, 'stream consumer: Redis error, retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
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
    let event;
    try {
      event = decodeStructuredJson(raw);
    } catch (err) {
      await journalRejectedEnvelope(deps, def.name, isRacklbError(err) ? err.message : String(err), 'stream', raw);
      await conn.xack(key, group, id);
      return;
    }
    const handled = await runHandler(def, event, deps, 'stream');
    // Left pending on a retryable failure: this or another consumer claims it again later.
    if (handled.ok) await conn.xack(key, group, id);
  }
}
