/**
 * Logging of the run loop's failures for an operator: each distinct failure once until the
 * next successful heartbeat (not once per retry), refusals as errors, the rest as warnings.
 */
import type { Logger } from '../common/logger.js';
import { type CallFailure, failureKey } from './call-failure.js';

/** Distinct failures remembered between two successes; past this the memory starts again. */
const MAX_REMEMBERED = 64;

/** Where a failed attempt was and what comes next, for the log line. */
export interface FailureContext {
  readonly server: string;
  readonly nextServer: string;
  readonly retryInMs: number;
}

/** Failures since the last success, and which of them were logged. */
export class FailureLog {
  readonly #logged = new Set<string>();
  #count = 0;

  constructor(private readonly logger: Logger) {}

  /** Failures since the last success. */
  get count(): number {
    return this.#count;
  }

  /**
   * Counts a failure and logs it, unless the same one was logged since the last success:
   * `worker refused by server` (error) for UNAUTHENTICATED, `worker call failed` (warn) else.
   */
  failed(failure: CallFailure, context: FailureContext): void {
    this.#count++;
    const key = failureKey(failure);
    if (this.#logged.has(key)) return;
    if (this.#logged.size >= MAX_REMEMBERED) this.#logged.clear();
    this.#logged.add(key);
    const fields = {
      operation: failure.operation,
      server: context.server,
      code: failure.codeName,
      details: failure.details,
      retryInMs: context.retryInMs,
      nextServer: context.nextServer,
    };
    if (failure.refused) {
      this.logger.error({ ...fields, terminal: failure.terminal }, 'worker refused by server');
    } else {
      this.logger.warn(fields, 'worker call failed');
    }
  }

  /** A success: forgets what was logged and returns how many failures preceded it. */
  succeeded(): number {
    const count = this.#count;
    this.#count = 0;
    this.#logged.clear();
    return count;
  }
}
