/**
 * Kubernetes objects in, as the CloudEvents Knative's ApiServerSource sends, straight to the
 * function that owns the kind, over keep-alive connections. The lab's API server stand-in
 * (src/lab/apiserver.ts) rewrites a JSON file per change; that is the lab's cost, not racklb's, so
 * benchmarks post themselves and stamp resourceVersions from their own growing counter.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';
import type { Kind } from '../../src/core/types.js';
import { apiServerEvent, toHttpMessage, type KubeAction } from '../../src/events/codec.js';
import { functionFor } from '../../src/functions.js';
import type { FunctionName } from '../../src/store/keys.js';

export interface PreparedEvent {
  fn: FunctionName;
  headers: Record<string, string>;
  body: string;
}

export interface Posted {
  status: number;
  outcome: string;
  detail: string;
}

/**
 * What the lab's Triggers ask of the broker (infra/knative/triggers.yaml: retry 10, exponential,
 * PT0.2S): a 503 or 429 is delivered again. A function answers 503 when Redis did not answer in
 * time, which on this machine happens when an fsync of the append-only file (appendfsync always)
 * stalls for seconds; the benchmark counts each redelivery instead of failing the run.
 */
const REDELIVERY = { retries: 10, firstDelayMs: 200 } as const;

export class Sender {
  private readonly pools = new Map<string, Pool>();
  private rv: number;
  /** Events delivered again after a 503 or 429, since the Sender was made; benchmarks report it. */
  redeliveries = 0;

  constructor(
    private readonly urls: Record<FunctionName, string>,
    private readonly connections = 64,
    firstResourceVersion = 1_000_000,
  ) {
    this.rv = firstResourceVersion;
  }

  nextResourceVersion(): string {
    return String(this.rv++);
  }

  /** The event for `object`, with the next resourceVersion stamped on a copy of it. */
  prepare(action: KubeAction, object: Record<string, unknown>, opts: { keepResourceVersion?: boolean } = {}): PreparedEvent {
    const o = structuredClone(object);
    if (!opts.keepResourceVersion) (o.metadata as Record<string, unknown>).resourceVersion = this.nextResourceVersion();
    const { headers, body } = toHttpMessage(apiServerEvent(action, o, 'racklb-bench'));
    return { fn: functionFor(o.kind as Kind).name, headers, body };
  }

  private pool(fn: FunctionName): { pool: Pool; path: string } {
    const url = new URL(this.urls[fn]);
    let pool = this.pools.get(url.origin);
    if (!pool) {
      pool = new Pool(url.origin, { connections: this.connections, pipelining: 1, keepAliveTimeout: 60_000 });
      this.pools.set(url.origin, pool);
    }
    return { pool, path: url.pathname };
  }

  async post(e: PreparedEvent): Promise<Posted> {
    const { pool, path } = this.pool(e.fn);
    const res = await pool.request({ path, method: 'POST', headers: e.headers, body: e.body, headersTimeout: 30_000, bodyTimeout: 30_000 });
    const text = await res.body.text();
    const h = (name: string): string => {
      const v = res.headers[name];
      return Array.isArray(v) ? (v[0] ?? '') : (v ?? '');
    };
    return { status: res.statusCode, outcome: h('racklb-outcome'), detail: h('racklb-detail') || text };
  }

  /**
   * Posts, redelivering as the broker would (REDELIVERY), and insists on 200 `applied`: a
   * benchmark that measured a rejected event would measure nothing.
   */
  async apply(e: PreparedEvent): Promise<Posted> {
    let r = await this.post(e);
    let attempt = 0;
    for (; (r.status === 503 || r.status === 429) && attempt < REDELIVERY.retries; attempt++) {
      this.redeliveries++;
      await sleep(REDELIVERY.firstDelayMs * 2 ** attempt);
      r = await this.post(e);
    }
    // A 503 after Redis ran the transaction but before its reply arrived: the redelivery finds the
    // event's resourceVersion stored, which is the outcome the benchmark wanted.
    const landed = r.outcome === 'applied' || (attempt > 0 && r.outcome === 'stale');
    if (r.status !== 200 || !landed) throw new Error(`${e.fn}: expected applied, got ${r.status} ${r.outcome}: ${r.detail}${attempt > 0 ? ` (after ${attempt} redeliveries)` : ''}`);
    return r;
  }

  /** Posts many with at most `concurrency` in flight; every one must be applied. */
  async applyAll(events: readonly PreparedEvent[], concurrency = this.connections): Promise<void> {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < events.length) await this.apply(events[next++] as PreparedEvent);
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, events.length) }, worker));
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.close()));
    this.pools.clear();
  }
}
