/**
 * A work queue keyed by object, like client-go's workqueue: at most one pending item per key (a
 * newer item replaces the one not started yet), one item per key in flight at a time (so an
 * object's changes stay in order), bounded concurrency, and a failed item retried with exponential
 * backoff and jitter until it succeeds or a newer item supersedes it. Memory is bounded by the
 * number of keys, whatever the receiver's state.
 */
export type RunResult = { done: true } | { done: false; reason: string };

export interface KeyedQueueOptions<T> {
  run: (key: string, item: T) => Promise<RunResult>;
  concurrency?: number;
  /** First retry delay; doubles per failed attempt up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
  onRetry?: (key: string, item: T, reason: string, attempt: number, waitMs: number) => void;
}

interface Slot<T> {
  item: T;
  attempts: number;
  notBefore: number;
}

export class KeyedQueue<T> {
  private readonly pending = new Map<string, Slot<T>>();
  private readonly inflight = new Map<string, Slot<T>>();
  private readonly next = new Map<string, T>();
  private readonly idleWaiters: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly concurrency: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;

  constructor(private readonly o: KeyedQueueOptions<T>) {
    this.concurrency = o.concurrency ?? 8;
    this.backoffMs = o.backoffMs ?? 200;
    this.maxBackoffMs = o.maxBackoffMs ?? 30_000;
  }

  size(): number {
    return this.pending.size + this.inflight.size + this.next.size;
  }

  push(key: string, item: T): void {
    if (this.stopped) return;
    if (this.inflight.has(key)) {
      this.next.set(key, item);
      return;
    }
    const slot = this.pending.get(key);
    // Keep a failing key's backoff: a newer item must not turn retries into a hammering loop.
    if (slot) slot.item = item;
    else this.pending.set(key, { item, attempts: 0, notBefore: 0 });
    this.pump();
  }

  idle(): Promise<void> {
    if (this.size() === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.pending.clear();
    this.next.clear();
    for (const w of this.idleWaiters.splice(0)) w();
  }

  private pump(): void {
    if (this.stopped) return;
    const now = Date.now();
    let soonest = Infinity;
    for (const [key, slot] of this.pending) {
      if (this.inflight.size >= this.concurrency) break;
      if (slot.notBefore > now) {
        soonest = Math.min(soonest, slot.notBefore);
        continue;
      }
      this.pending.delete(key);
      this.inflight.set(key, slot);
      void this.execute(key, slot);
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = soonest === Infinity ? undefined : setTimeout(() => this.pump(), soonest - now);
    this.timer?.unref();
    if (this.size() === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private async execute(key: string, slot: Slot<T>): Promise<void> {
    let result: RunResult;
    try {
      result = await this.o.run(key, slot.item);
    } catch (err) {
      result = { done: false, reason: err instanceof Error ? err.message : String(err) };
    }
    this.inflight.delete(key);
    if (this.stopped) return;
    const newer = this.next.get(key);
    this.next.delete(key);
    if (result.done) {
      if (newer !== undefined) this.pending.set(key, { item: newer, attempts: 0, notBefore: 0 });
    } else {
      const attempts = slot.attempts + 1;
      const delay = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** Math.min(attempts - 1, 20));
      // Jitter keeps many writers from retrying in lockstep against a recovering server.
      const wait = Math.round(delay * (0.5 + Math.random() / 2));
      this.o.onRetry?.(key, newer ?? slot.item, result.reason, attempts, wait);
      this.pending.set(key, { item: newer ?? slot.item, attempts, notBefore: Date.now() + wait });
    }
    this.pump();
  }
}
