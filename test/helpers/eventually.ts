/** Test helper: wait for a condition by polling with a deadline, never by sleeping and hoping. */
import { setTimeout as delay } from 'node:timers/promises';

/** Options of {@link eventually}. */
export interface EventuallyOptions {
  /** Give up after this long. @default 10000 */
  timeoutMs?: number;
  /** Pause between attempts. @default 25 */
  intervalMs?: number;
  /** Says what was awaited, for the failure message. */
  message?: string;
}

const PENDING = Symbol('pending');

/**
 * Calls `check` until it returns without throwing (and, if it returns a boolean, returns true),
 * then returns its result. An attempt still pending at the deadline counts as a failure.
 *
 * @throws Error naming `message`, the time waited and the last failure (also its `cause`).
 */
export async function eventually<T>(
  check: () => Promise<T> | T,
  opts: EventuallyOptions = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 25;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  let attempts = 0;
  for (;;) {
    attempts++;
    const remaining = Math.max(0, deadline - Date.now());
    const timeout = new AbortController();
    try {
      const result = await Promise.race([
        Promise.resolve().then(check),
        delay(remaining, PENDING, { signal: timeout.signal }),
      ]);
      if (result === PENDING) {
        const before = lastError instanceof Error ? `; the one before: ${lastError.message}` : '';
        lastError = new Error(`the last attempt was still pending at the deadline${before}`);
      } else if (result === false) {
        lastError = new Error('check returned false');
      } else {
        return result;
      }
    } catch (err) {
      lastError = err;
    } finally {
      timeout.abort();
    }
    const left = deadline - Date.now();
    if (left <= 0) break;
    await delay(Math.min(intervalMs, left));
  }
  const last = lastError instanceof Error ? lastError.message : String(lastError);
  throw new Error(
    `eventually: ${opts.message ?? 'condition not met'} within ${timeoutMs} ms ` +
      `(${attempts} attempts); last failure: ${last}`,
    { cause: lastError },
  );
}
