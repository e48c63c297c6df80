/**
 * The expiry timer of an open stream's credential (API key, JWT, service or worker
 * certificate): fires once the clock has reached the deadline, never before. Node may run a
 * timer a little before `Date.now()` reaches its target (the loop's cached time lags the wall
 * clock under load), and `setTimeout` cannot wait longer than 2^31-1 ms (about 24.8 days), so
 * the timer re-arms for whatever remains until the clock agrees (docs/security.md).
 */

/** What the timer reads and arms: the wall clock and Node's timers, unless a test injects its own. */
export interface ExpiryClock {
  /** Milliseconds since the epoch, as `Date.now()`. */
  now(): number;
  setTimeout(fire: () => void, delayMs: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The longest delay `setTimeout` honours; a longer one would fire at once. */
export const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

/** `Date.now()` and Node's timers. */
export const SYSTEM_CLOCK: ExpiryClock = {
  now: () => Date.now(),
  setTimeout: (fire, delayMs) => setTimeout(fire, delayMs),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/**
 * Calls `onExpired` once, asynchronously, at the first timer tick at which `clock.now()` is at
 * or past `expiresAt` (ms since the epoch): at once (on a timer) if it already is, never while
 * it is not. No deadline (`undefined`) never fires.
 * @returns a function that disarms the timer; calling it after the timer fired does nothing.
 */
export function whenExpired(
  expiresAt: number | undefined,
  onExpired: () => void,
  clock: ExpiryClock = SYSTEM_CLOCK,
): () => void {
  if (expiresAt === undefined) return () => undefined;
  let handle: unknown;
  let disarmed = false;
  const arm = () => {
    const remaining = expiresAt - clock.now();
    handle = clock.setTimeout(tick, Math.min(Math.max(0, remaining), MAX_TIMER_DELAY_MS));
  };
  const tick = () => {
    if (disarmed) return;
    // Early (or only part of a long wait): the credential still holds, so wait for the rest.
    if (clock.now() < expiresAt) return arm();
    disarmed = true;
    onExpired();
  };
  arm();
  return () => {
    if (disarmed) return;
    disarmed = true;
    clock.clearTimeout(handle);
  };
}
