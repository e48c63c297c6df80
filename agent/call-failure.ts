/**
 * What went wrong with a call to the worker endpoint, reduced to what the run loop decides on:
 * the status code, the server's words, and whether the server refused this worker (so
 * retrying fast cannot help and only an operator can).
 */
import { status } from '@grpc/grpc-js';

import { isServiceError, statusName } from '../common/grpc-status.js';

/** The worker call that failed. */
export type WorkerOperation = 'heartbeat' | 'connect' | 'renew';

/** A failed worker call. */
export interface CallFailure {
  readonly operation: WorkerOperation;
  /** gRPC status code; OK for a stream the server ended normally. */
  readonly code: status;
  /** Canonical name of `code`, e.g. `UNAVAILABLE`. */
  readonly codeName: string;
  /** The server's or the transport's message. */
  readonly details: string;
  /**
   * The server refuses this worker: UNAUTHENTICATED. When the worker is blocked or retired or
   * its certificate revoked the refusal is final until an operator acts; other refusals (a
   * bad signature, a stale clock) would count towards blocking if retried quickly.
   */
  readonly refused: boolean;
  /** A refusal naming a blocked or retired worker or a revoked certificate. */
  readonly terminal: boolean;
}

export { isServiceError, statusName };

/** Classifies an error thrown by (or emitted from) a worker call. */
export function classifyFailure(operation: WorkerOperation, err: unknown): CallFailure {
  const code = isServiceError(err) ? err.code : status.UNKNOWN;
  const details = isServiceError(err)
    ? err.details
    : err instanceof Error
      ? err.message
      : String(err);
  const refused = code === status.UNAUTHENTICATED;
  return {
    operation,
    code,
    codeName: statusName(code),
    details,
    refused,
    terminal: refused && /\b(blocked|retired|revoked)\b/i.test(details),
  };
}

/** The failure of a Connect stream that ended without an error status. */
export function streamEnded(): CallFailure {
  return {
    operation: 'connect',
    code: status.OK,
    codeName: 'OK',
    details: 'the server ended the stream',
    refused: false,
    terminal: false,
  };
}

/** A key that is equal for failures a human would call "the same error". */
export function failureKey(failure: CallFailure): string {
  // grpc-js stamps transport errors with times and timings ("Failed to connect (2025-...Z)",
  // "Deadline exceeded after 1.001s,LB pick: 0.001s,..."): the first clause, numbers blanked.
  const details = failure.details
    .replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)/g, '')
    .split(',')[0]!
    .replace(/\d+(\.\d+)?/g, '#');
  return `${failure.operation}/${failure.codeName}/${details}`;
}
