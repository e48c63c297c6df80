/**
 * Failed authentications: each is audited (peer address, method, reason, and a short hash of
 * the presented credential, never the credential), and a peer or credential that fails too
 * often in a window is answered RESOURCE_EXHAUSTED with a retry hint instead of being tried
 * and audited again. Valid credentials are never throttled, so a misbehaving client cannot
 * lock out others behind the same address. Counters are per replica, in memory.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { AuthThrottledError } from '../../common/errors.js';
import { Tx, type Store } from '../store/store.js';

export interface AuthFailureOptions {
  /** Failures allowed per peer address, and per credential, in one window. @default 20 */
  maxFailures: number;
  /** Window length. @default 60000 */
  windowMs: number;
}

interface Window {
  start: number;
  failures: number;
}

/** Most tracked peers and credentials; the oldest window is dropped past it. */
const MAX_TRACKED = 10_000;

/** A failed attempt, answered with RESOURCE_EXHAUSTED once its peer or credential is throttled. */
export class AuthFailureGuard {
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
    private readonly options: AuthFailureOptions,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Records a failed authentication and audits it, unless its peer or credential is already
   * throttled.
   * @throws AuthThrottledError when throttled (the caller answers that instead).
   */
  fail(attempt: { peer: string; method: string; reason: string; credential?: string }): void {
    const now = this.now();
    const credentialHash =
      attempt.credential === undefined
        ? undefined
        : createHash('sha256').update(attempt.credential).digest('hex').slice(0, 12);
    const retryAfter = (w: Window) =>
      w.failures > this.options.maxFailures ? w.start + this.options.windowMs - now : 0;
    // A throttled peer stops here: it must not grow the table (and so push out its own
    // counter) with a fresh credential per attempt.
    let retryAfterMs = retryAfter(this.bump(`peer:${attempt.peer}`, now));
    if (retryAfterMs === 0 && credentialHash) {
      retryAfterMs = retryAfter(this.bump(`cred:${credentialHash}`, now));
    }
    if (retryAfterMs > 0) throw new AuthThrottledError(retryAfterMs);
    const tx = new Tx().record({
      eventType: 'authentication_attempt',
      action: attempt.method,
      result: 'failure',
      ipAddress: attempt.peer,
      details: {
        reason: attempt.reason,
        ...(credentialHash ? { credential_sha256_12: credentialHash } : {}),
      },
    });
    // Auditing must not hold up the answer; a store outage is logged, not surfaced.
    this.store.commit(tx).catch((err: unknown) => {
      this.logger.warn({ err }, 'could not audit a failed authentication');
    });
  }

  private bump(key: string, now: number): Window {
    let w = this.windows.get(key);
    if (!w || now - w.start >= this.options.windowMs) {
      this.windows.delete(key);
      if (this.windows.size >= MAX_TRACKED) {
        const oldest = this.windows.keys().next().value;
        if (oldest !== undefined) this.windows.delete(oldest);
      }
      w = { start: now, failures: 0 };
      this.windows.set(key, w);
    }
    w.failures++;
    return w;
  }
}
