/**
 * Domain errors shared by the server, the agent and the CLI. Each maps to exactly one gRPC
 * status code at the RPC boundary (`CODE_OF` in server/api/rpc.ts); anything else becomes
 * INTERNAL there.
 */

/** Base class: every Citadel error has a stable name, an optional cause and a retry hint. */
export abstract class CitadelError extends Error {
  /** Whether the same call may succeed if simply retried later. */
  readonly retryable: boolean = false;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A request field is malformed or out of range. `field` is its path, e.g. `task.cron.expression`. */
export class InvalidArgumentError extends CitadelError {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

/** The named object does not exist. */
export class NotFoundError extends CitadelError {
  constructor(
    readonly kind: string,
    readonly id: string,
  ) {
    super(`${kind} ${JSON.stringify(id)} not found`);
  }
}

/** The object exists already (for example an idempotency key reused with another request). */
export class AlreadyExistsError extends CitadelError {}

/** The object's current state does not allow the call. */
export class FailedPreconditionError extends CitadelError {}

/** A concurrent change won (an etag mismatch, a lost compare-and-swap). */
export class ConflictError extends CitadelError {
  override readonly retryable = true;
}

/** A precondition the caller set (an etag) no longer holds; re-read and decide again. */
export class AbortedError extends CitadelError {}

/** No or unusable credentials. The message never echoes the credential. */
export class UnauthenticatedError extends CitadelError {}

/** The caller is known but not allowed to do this. */
export class PermissionDeniedError extends CitadelError {}

/** A per-user or per-cluster limit is reached. */
export class QuotaExceededError extends CitadelError {}

/** A replay position is no longer available (for example a compacted etcd revision). */
export class OutOfRangeError extends CitadelError {}

/** This replica does not (or no longer) hold leadership; the write was not applied. */
export class NotLeaderError extends CitadelError {
  override readonly retryable = true;
}

/** A dependency (etcd, Docker) is unreachable; the call may succeed later. */
export class UnavailableError extends CitadelError {
  override readonly retryable = true;
}

/**
 * Too many failed authentications from one peer or with one credential: refused for a while.
 * The boundary tells the client when to retry (`retry-after-ms` metadata).
 */
export class AuthThrottledError extends QuotaExceededError {
  constructor(readonly retryAfterMs: number) {
    super(
      `too many failed authentication attempts; retry after ${Math.ceil(retryAfterMs / 1000)} s`,
    );
  }
}

/**
 * A sealed record could not be opened: unknown key id, truncated, or failed authentication
 * (wrong key, wrong associated data, or tampered). Never a client's fault: the boundary answers
 * INTERNAL with an incident id and logs the detail.
 */
export class DecryptError extends CitadelError {}

/** Configuration given to a binary is invalid. `field` names the flag or config key. */
export class ConfigError extends CitadelError {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}
