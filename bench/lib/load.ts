/**
 * Closed-loop load: `concurrency` requests in flight on keep-alive connections, bounded by a count
 * and by a time limit (whichever comes first), with every latency kept; a run in which any request
 * failed or was answered other than 200 throws instead of reporting a rate. Request bodies are built
 * before the clock starts, so the generator spends its time sending, not encoding.
 */
import { Pool } from 'undici';
import { summarize, type Summary } from './stats.js';

export interface Request {
  headers: Record<string, string>;
  body: string;
}

export interface LoadResult {
  events: number;
  seconds: number;
  events_per_s: number;
  latency: Summary;
  /** Answers by HTTP status ("200": n). */
  statuses: Record<string, number>;
  errors: number;
}

export interface LoadOptions {
  concurrency: number;
  maxEvents: number;
  maxSeconds: number;
}

export async function runLoad(url: string, requests: readonly Request[], opts: LoadOptions): Promise<LoadResult> {
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: opts.concurrency, pipelining: 1, keepAliveTimeout: 60_000 });
  let next = 0;
  const send = async (r: Request): Promise<number> => {
    const res = await pool.request({ path: u.pathname, method: 'POST', headers: r.headers, body: r.body, headersTimeout: 30_000, bodyTimeout: 30_000 });
    await res.body.dump();
    return res.statusCode;
  };
  try {
    const latencies: number[] = [];
    const statuses: Record<string, number> = {};
    let errors = 0;
    const started = performance.now();
    const stopAt = started + opts.maxSeconds * 1000;
    const limit = Math.min(requests.length, opts.maxEvents);
    const worker = async (): Promise<void> => {
      while (next < limit && performance.now() < stopAt) {
        const r = requests[next++] as Request;
        const t0 = performance.now();
        try {
          const status = await send(r);
          statuses[status] = (statuses[status] ?? 0) + 1;
        } catch {
          errors++;
        }
        latencies.push(performance.now() - t0);
      }
    };
    await Promise.all(Array.from({ length: opts.concurrency }, worker));
    const seconds = (performance.now() - started) / 1000;
    // A rate of failed requests measures nothing: every request must have been answered 200.
    if (errors > 0 || Object.keys(statuses).some((status) => status !== '200')) throw new Error(`load on ${url}: ${errors} requests failed, answers by status ${JSON.stringify(statuses)}`);
    return { events: latencies.length, seconds, events_per_s: latencies.length / seconds, latency: summarize(latencies), statuses, errors };
  } finally {
    await pool.close();
  }
}
