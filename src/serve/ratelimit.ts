/**
 * A token bucket per function process: `rate` requests a second on average, bursts of up to
 * `burst`. Over the limit a request is answered 429 with Retry-After, which Knative brokers retry
 * with backoff, so a flood slows down instead of being lost; it is neither read nor journaled, so
 * a flood costs Redis nothing.
 */
export interface RateLimit {
  /** Sustained requests per second; 0 turns the limit off. */
  perSecond: number;
  /** Largest burst; defaults to one second's worth (at least 1). */
  burst?: number;
}

export class TokenBucket {
  private tokens: number;
  private last: number;
  readonly rate: number;
  readonly burst: number;

  constructor(limit: RateLimit, private readonly now: () => number = () => performance.now()) {
    this.rate = limit.perSecond;
    this.burst = Math.max(1, limit.burst ?? Math.ceil(limit.perSecond));
    this.tokens = this.burst;
    this.last = now();
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.rate);
    this.last = t;
  }

  /** Takes a token; false when none is left. */
  take(): boolean {
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Whole seconds until a token is available again (Retry-After), at least 1. */
  retryAfterSeconds(): number {
    this.refill();
    return Math.max(1, Math.ceil((1 - this.tokens) / this.rate));
  }
}

/** `undefined` when the limit is off. */
export function bucketFor(limit: RateLimit | undefined): TokenBucket | undefined {
  return limit === undefined || !(limit.perSecond > 0) ? undefined : new TokenBucket(limit);
}
