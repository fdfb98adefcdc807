/**
 * Delivers Kubernetes changes as ApiServerSource's CloudEvents to one of three places: the
 * functions' own URLs, a Knative Broker's ingress, or the functions' Redis streams (KEDA).
 *
 * Sends go through a queue keyed by object (queue.ts): an object's events stay in order, a newer
 * change replaces one not sent yet, and a failed send is retried with backoff until it lands, so a
 * receiver that is down for an hour costs nothing but time. 400 and 413 are final: the event can
 * never succeed (the function journaled why); the other 4xx a broker retries are retried too.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { request } from 'undici';
import { apiServerEvent, toHttpMessage, type KubeAction } from '../events/codec.js';
import { publishToStream } from '../serve/stream.js';
import type { FunctionName } from '../store/keys.js';
import type { Store } from '../store/store.js';
import { functionOf, storeKey, type KubeObject, type WatchedKind } from './kinds.js';
import { KeyedQueue, type RunResult } from './queue.js';

export type Target =
  | { type: 'functions'; urls: Record<FunctionName, string> }
  | { type: 'broker'; url: string }
  | { type: 'streams'; store: Store };

export type SendResult = { ok: true; outcome: string } | { ok: false; final: boolean; reason: string };

export interface Delivery {
  w: WatchedKind;
  action: KubeAction;
  object: KubeObject;
}

export interface DelivererOptions {
  target: Target;
  /** CloudEvent `source`: ApiServerSource uses the API server's URL. */
  source: string;
  logger: Logger;
  registry: Registry;
  concurrency?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
  requestTimeoutMs?: number;
  /** Called after each final answer (delivered or refused for good), for reports. */
  onResult?: (d: Delivery, result: SendResult) => void;
}

/** What a broker retries (Knative's delivery rules); any other 4xx will never succeed. */
function retryable(status: number): boolean {
  return status === 404 || status === 408 || status === 409 || status === 429 || status >= 500;
}

export function describeTarget(t: Target): string {
  return t.type === 'functions' ? 'the functions' : t.type === 'broker' ? `broker ${t.url}` : 'the Redis streams';
}

export class Deliverer {
  private readonly queue: KeyedQueue<Delivery>;
  readonly delivered: Counter<'kind' | 'action' | 'outcome'>;
  readonly failures: Counter<'kind' | 'reason'>;
  private readonly requestTimeoutMs: number;

  constructor(private readonly o: DelivererOptions) {
    this.requestTimeoutMs = o.requestTimeoutMs ?? 15_000;
    this.delivered = new Counter({
      name: 'racklb_bridge_events_total',
      help: 'Events delivered, by kind, action and outcome (applied, stale, accepted by a broker, published to a stream, rejected)',
      labelNames: ['kind', 'action', 'outcome'],
      registers: [o.registry],
    });
    this.failures = new Counter({ name: 'racklb_bridge_delivery_failures_total', help: 'Failed sends, retried with backoff, by kind and reason', labelNames: ['kind', 'reason'], registers: [o.registry] });
    this.queue = new KeyedQueue<Delivery>({
      run: (key, d) => this.attempt(key, d),
      concurrency: o.concurrency ?? 8,
      backoffMs: o.backoffMs ?? 200,
      maxBackoffMs: o.maxBackoffMs ?? 30_000,
      onRetry: (key, d, reason, attempt, waitMs) => {
        this.failures.inc({ kind: d.w.kind, reason: reason.replace(/\s.*$/s, '').slice(0, 40) });
        o.logger.warn({ kind: d.w.kind, key, action: d.action, reason, attempt, retryInMs: waitMs }, 'delivery failed; retrying');
      },
    });
    const queue = this.queue;
    new Gauge({
      name: 'racklb_bridge_queue',
      help: 'Objects with an event waiting to be delivered or retried',
      registers: [o.registry],
      collect() {
        this.set(queue.size());
      },
    });
  }

  enqueue(d: Delivery): void {
    this.queue.push(`${d.w.kind}/${storeKey(d.w, d.object)}`, d);
  }

  size(): number {
    return this.queue.size();
  }

  /** Resolves once nothing is queued, in flight or waiting for a retry. */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  stop(): void {
    this.queue.stop();
  }

  private async attempt(key: string, d: Delivery): Promise<RunResult> {
    const result = await this.send(d).catch((err: unknown): SendResult => ({ ok: false, final: false, reason: err instanceof Error ? `${err.name}: ${err.message}` : String(err) }));
    if (result.ok) {
      this.delivered.inc({ kind: d.w.kind, action: d.action, outcome: result.outcome });
      this.o.onResult?.(d, result);
      return { done: true };
    }
    if (result.final) {
      this.delivered.inc({ kind: d.w.kind, action: d.action, outcome: 'rejected' });
      this.o.logger.warn({ kind: d.w.kind, key, action: d.action, reason: result.reason }, 'event refused for good (not retried)');
      this.o.onResult?.(d, result);
      return { done: true };
    }
    return { done: false, reason: result.reason };
  }

  /** One attempt, with a fresh CloudEvent id as ApiServerSource gives every emission. */
  async send(d: Delivery): Promise<SendResult> {
    const event = apiServerEvent(d.action, d.object, this.o.source, randomUUID());
    const t = this.o.target;
    if (t.type === 'streams') {
      // With the consumer group KEDA scales on, made again if Redis lost it (publishToStream).
      await publishToStream(t.store, functionOf(d.w), event);
      return { ok: true, outcome: 'published' };
    }
    const url = t.type === 'functions' ? t.urls[functionOf(d.w)] : t.url;
    const { headers, body } = toHttpMessage(event);
    const res = await request(url, { method: 'POST', headers, body, headersTimeout: this.requestTimeoutMs, bodyTimeout: this.requestTimeoutMs });
    const text = await res.body.text();
    const status = res.statusCode;
    if (status >= 200 && status <= 299) {
      const h = res.headers['racklb-outcome'];
      const outcome = t.type === 'broker' ? 'accepted' : ((Array.isArray(h) ? h[0] : h) ?? 'applied');
      return { ok: true, outcome };
    }
    return { ok: false, final: !retryable(status), reason: `${status} ${text.slice(0, 200)}`.trim() };
  }
}

/** A delete event for an object known only from the store: its identity is all a function reads. */
export function deletedObject(w: WatchedKind, key: string, uid: string, resourceVersion: string): KubeObject {
  const slash = key.indexOf('/');
  const namespace = w.namespaced ? key.slice(0, slash) : undefined;
  const name = w.namespaced ? key.slice(slash + 1) : key;
  return { apiVersion: w.apiVersion, kind: w.kind, metadata: { name, ...(namespace === undefined ? {} : { namespace }), uid, resourceVersion } };
}
