/**
 * Retry delays for the agent's reconnect loop: exponential backoff with full jitter, so a
 * fleet of agents that lost the same replica does not come back in lock step. Pure.
 */

/** The shape of a backoff: a first delay that doubles up to a cap. */
export interface BackoffPolicy {
  /** Upper bound of the first delay, in milliseconds. */
  readonly initialMs: number;
  /** No delay is longer than this, in milliseconds. */
  readonly maxMs: number;
}

/** Reconnecting to a worker endpoint: 100 ms doubling to 5 s (docs/workers.md). */
export const RECONNECT_BACKOFF: BackoffPolicy = { initialMs: 100, maxMs: 5_000 };

/**
 * Full-jitter delay before retry number `attempt` (from 0): a uniform draw in
 * `[0, min(maxMs, initialMs * 2^attempt))`, rounded to whole milliseconds.
 *
 * @param random a source of numbers in [0, 1). @default Math.random
 */
export function fullJitterDelayMs(
  attempt: number,
  policy: BackoffPolicy,
  random: () => number = Math.random,
): number {
  // 2^attempt overflows to Infinity long after it passes any sane cap; min() absorbs it.
  const ceiling = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}

/**
 * A delay between half of `baseMs` and all of it, for retries that must stay slow (a worker
 * the server refuses) without every agent firing at the same instant.
 */
export function slowRetryDelayMs(baseMs: number, random: () => number = Math.random): number {
  return Math.floor(baseMs / 2 + (random() * baseMs) / 2);
}

/** Counts consecutive failures and hands out the next delay; `reset()` after a success. */
export class Backoff {
  #attempt = 0;

  constructor(
    private readonly policy: BackoffPolicy,
    private readonly random: () => number = Math.random,
  ) {}

  /** Failures since the last reset. */
  get attempts(): number {
    return this.#attempt;
  }

  /** The delay before the next try; each call counts one more failure. */
  next(): number {
    const delay = fullJitterDelayMs(this.#attempt, this.policy, this.random);
    this.#attempt++;
    return delay;
  }

  /** Starts again from the first delay. */
  reset(): void {
    this.#attempt = 0;
  }
}
