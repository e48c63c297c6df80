/** Retry delays: exponential backoff with jitter (RetryPolicy in the proto). Pure. */
import type { RetrySpec } from './records.js';

/**
 * Delay before attempt `attempt + 1`, after attempt `attempt` (from 1) ended retryably:
 * `min(max, initial * multiplier^(attempt-1)) * (1 - jitter * random)`.
 */
export function retryDelayMs(
  policy: RetrySpec,
  attempt: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(
    policy.maxBackoffMs,
    policy.initialBackoffMs * Math.pow(policy.multiplier, Math.max(0, attempt - 1)),
  );
  return Math.round(base * (1 - policy.jitter * random()));
}
