/**
 * The metrics of one function, whichever way its events arrive: over HTTP (Knative, src/serve/http.ts)
 * or from its Redis stream (KEDA, src/serve/stream.ts). Both ways count the same outcomes under the
 * same names, so one dashboard reads either deployment.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Outcome } from '../core/types.js';
import type { BatchStats } from '../store/group-commit.js';
import type { Store } from '../store/store.js';
import type { FunctionDefinition } from './handler.js';

/** What an event came to: its handler's outcome, or what stopped it before or after (src/serve/http.ts). */
export type EventOutcome = Outcome['outcome'] | 'retry' | 'throttled' | 'unauthorized';

export interface FunctionMetrics {
  registry: Registry;
  /** Counts one event's outcome. */
  count(outcome: EventOutcome): void;
  /** Starts timing one event; the returned function stops it. */
  time(): () => void;
}

export interface FunctionMetricsOptions {
  /**
   * The process's own figures too (resident memory, heap, GC, event loop lag): for a process that
   * serves this one function, as `racklb serve` does. Off where servers share a process (the
   * tests), whose figures would not be the function's. Behind them, a GC observer takes a callback
   * per collection: 20 to 25 a second under the throughput benchmark's load, against 3,000 to 6,000
   * events.
   */
  processMetrics?: boolean;
}

export function functionMetrics(def: FunctionDefinition, store: Store, opts: FunctionMetricsOptions = {}): FunctionMetrics {
  const registry = new Registry();
  if (opts.processMetrics) collectDefaultMetrics({ register: registry });
  const labels = { function: def.name };
  const events = new Counter({ name: 'racklb_function_events_total', help: 'Events handled, by outcome', labelNames: ['function', 'outcome'], registers: [registry] });
  const latency = new Histogram({
    name: 'racklb_function_event_seconds',
    help: 'Time from request (or stream entry) to answer (or acknowledgement)',
    labelNames: ['function'],
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1],
    registers: [registry],
  });

  // What group commit took together (src/store/group-commit.ts): events / batches is the mean
  // batch; 1 means every event had a transaction of its own.
  const batchStats = (): BatchStats => {
    const all = def.batches?.(store) ?? [];
    return { batches: all.reduce((n, b) => n + b.stats.batches, 0), items: all.reduce((n, b) => n + b.stats.items, 0), largest: Math.max(0, ...all.map((b) => b.stats.largest)) };
  };
  new Counter({
    name: 'racklb_function_batches_total',
    help: 'Transactions that decided a batch of events (group commit)',
    labelNames: ['function'],
    registers: [registry],
    collect() {
      this.reset();
      this.inc(labels, batchStats().batches);
    },
  });
  new Counter({
    name: 'racklb_function_batched_events_total',
    help: 'Events decided in batches (group commit)',
    labelNames: ['function'],
    registers: [registry],
    collect() {
      this.reset();
      this.inc(labels, batchStats().items);
    },
  });
  new Gauge({
    name: 'racklb_function_batch_largest_events',
    help: 'The most events one batch has decided since the process started',
    labelNames: ['function'],
    registers: [registry],
    collect() {
      this.set(labels, batchStats().largest);
    },
  });

  // Reads of the Eips, BgpPeers or speaker Nodes answered from memory because their kind's epoch
  // token had not moved (RecordCache, docs/state.md); misses are the reads after a write of the
  // kind, or the first.
  new Counter({
    name: 'racklb_function_record_cache_reads_total',
    help: 'Reads of every Eip, every BgpPeer or the speaker Nodes, by whether the in-memory copy was current (hit) or read from Redis (miss)',
    labelNames: ['function', 'result'],
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ ...labels, result: 'hit' }, store.recordCache.hits);
      this.inc({ ...labels, result: 'miss' }, store.recordCache.misses);
    },
  });

  return {
    registry,
    count: (outcome) => events.inc({ ...labels, outcome }),
    time: () => latency.startTimer(labels),
  };
}
