/**
 * Requests-per-second limits, one token bucket per key (a tunnel, a visitor
 * IP). A bucket holds one second's worth of requests as burst and refills
 * continuously; idle buckets are dropped so a flood of distinct keys cannot
 * grow memory without bound.
 *
 * @example
 * ```ts
 * const perIp = new RateLimiter(50);
 * perIp.take("203.0.113.7"); // true: 49 more this second, and the bucket refills as time passes
 * ```
 * @module
 */

/** Buckets kept before idle ones are swept. */
const MAX_BUCKETS = 100_000;

export class RateLimiter {
  #buckets = new Map<string, { tokens: number; at: number }>();

  /** `perSecond` requests per second per key; 0 turns the limit off. */
  constructor(
    readonly perSecond: number,
    private readonly now: () => number = performance.now.bind(performance),
  ) {}

  /** Spends one request for `key`; false when its bucket is empty. */
  take(key: string): boolean {
    if (this.perSecond <= 0) return true;
    const now = this.now();
    const bucket = this.#buckets.get(key);
    if (!bucket) {
      if (this.#buckets.size >= MAX_BUCKETS) this.#sweep(now);
      this.#buckets.set(key, { tokens: this.perSecond - 1, at: now });
      return true;
    }
    bucket.tokens = Math.min(this.perSecond, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Drops buckets that have refilled completely: their keys have been quiet for a second or more. */
  #sweep(now: number) {
    for (const [key, bucket] of this.#buckets) {
      if (bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond >= this.perSecond) {
        this.#buckets.delete(key);
      }
    }
  }
}
