/**
 * The RPC boundary: every handler is wrapped here, once. The wrapper runs the call's admission
 * (who the caller is: auth/admission.ts for the public API, the worker certificate on the worker
 * endpoint) before the handler, records metrics, and translates domain errors to gRPC statuses;
 * anything unknown becomes INTERNAL with a generic message, its detail going only to the log.
 */
import { randomUUID } from 'node:crypto';
import {
  Metadata,
  status,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type ServerUnaryCall,
  type ServerWritableStream,
  type StatusObject,
} from '@grpc/grpc-js';
import { GRPCCancelledError, GRPCDeadlineExceededError, GRPCUnavailableError } from 'etcd3';
import type { Logger } from 'pino';
import {
  AbortedError,
  AlreadyExistsError,
  AuthThrottledError,
  CitadelError,
  DecryptError,
  ConflictError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  NotLeaderError,
  OutOfRangeError,
  PermissionDeniedError,
  QuotaExceededError,
  UnauthenticatedError,
  UnavailableError,
} from '../../common/errors.js';
import type { Metrics } from '../metrics.js';
import { assertDecoded } from './request-decoding.js';

const CODE_OF: [new (...args: never[]) => CitadelError, status][] = [
  [InvalidArgumentError, status.INVALID_ARGUMENT],
  [NotFoundError, status.NOT_FOUND],
  [AlreadyExistsError, status.ALREADY_EXISTS],
  [AbortedError, status.ABORTED],
  [ConflictError, status.ABORTED],
  [FailedPreconditionError, status.FAILED_PRECONDITION],
  [UnauthenticatedError, status.UNAUTHENTICATED],
  [PermissionDeniedError, status.PERMISSION_DENIED],
  [QuotaExceededError, status.RESOURCE_EXHAUSTED],
  [OutOfRangeError, status.OUT_OF_RANGE],
  [NotLeaderError, status.UNAVAILABLE],
  [UnavailableError, status.UNAVAILABLE],
  // A record that fails authentication is our fault (or tampering), never the caller's: it
  // pages operators, and the caller learns only the incident id.
  [DecryptError, status.INTERNAL],
];

/**
 * Most UTF-8 bytes of a status message: messages may quote what the caller sent, and many gRPC
 * clients refuse response metadata over 8 KiB, which would hide the reason behind a transport
 * error. The header percent-encodes each byte at most 3 times over, so this stays under it.
 */
export const MAX_DETAILS_BYTES = 1024;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * `text` cut to MAX_DETAILS_BYTES of UTF-8 on a whole character, saying how much was cut.
 * Lone surrogates are replaced first: grpc-js percent-encodes the message with `encodeURI`,
 * which throws on them.
 */
export function capDetails(text: string): string {
  const whole = text.replace(LONE_SURROGATE, '\uFFFD');
  const total = Buffer.byteLength(whole);
  if (total <= MAX_DETAILS_BYTES) return whole;
  const suffix = ` ... (cut; ${total} bytes in all)`;
  const room = MAX_DETAILS_BYTES - Buffer.byteLength(suffix);
  let out = '';
  let bytes = 0;
  for (const ch of whole) {
    bytes += Buffer.byteLength(ch);
    if (bytes > room) break;
    out += ch;
  }
  return out + suffix;
}

/** Translates any thrown value into a gRPC status; logs what the client must not see. */
export function toStatus(err: unknown, logger: Logger, method: string): Partial<StatusObject> {
  const metadata = new Metadata();
  if (err instanceof CitadelError) {
    const code = CODE_OF.find(([cls]) => err instanceof cls)?.[1] ?? status.INTERNAL;
    if (err.retryable) metadata.set('citadel-retryable', 'true');
    if (err instanceof AuthThrottledError) metadata.set('retry-after-ms', String(err.retryAfterMs));
    if (code !== status.INTERNAL) return { code, details: capDetails(err.message), metadata };
  }
  if (
    err instanceof GRPCUnavailableError ||
    err instanceof GRPCDeadlineExceededError ||
    err instanceof GRPCCancelledError
  ) {
    // etcd could not be reached or timed out: the call may succeed on retry. Any other etcd
    // error (too large, invalid, data loss) is INTERNAL below: retrying would not help.
    logger.warn({ err, method }, 'etcd unavailable');
    metadata.set('citadel-retryable', 'true');
    return { code: status.UNAVAILABLE, details: 'the store is unavailable; retry later', metadata };
  }
  const incident = randomUUID();
  logger.error({ err, method, incident }, 'internal error');
  return { code: status.INTERNAL, details: `internal error (incident ${incident})`, metadata };
}

/** What the boundary needs: where to log and what to count. */
export interface BoundaryDeps {
  logger: Logger;
  metrics: Metrics;
}

/** What the wrappers need of a call to authenticate its caller. */
export type AuthenticatedCall = Pick<ServerUnaryCall<unknown, unknown>, 'metadata' | 'getPeer'> & {
  getAuthContext(): ReturnType<ServerUnaryCall<unknown, unknown>['getAuthContext']>;
};

/** Proves who the caller is, or throws (UnauthenticatedError and the like). */
export type Admission<P> = (call: AuthenticatedCall) => Promise<P>;

/**
 * Wraps a unary handler: `admission` runs first (a refusal never reaches the handler), then
 * the handler; metrics are recorded and errors translated once, here.
 */
export function unaryWith<P, Req, Res>(
  deps: BoundaryDeps,
  method: string,
  admission: Admission<P>,
  handler: (request: Req, ctx: { principal: P }, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const end = deps.metrics.rpcSeconds.startTimer({ method });
    const done = (err: Partial<StatusObject> | null, res?: Res) => {
      end();
      deps.metrics.rpcTotal.inc({ method, code: status[err?.code ?? status.OK] });
      if (err) callback(err);
      else callback(null, res);
    };
    admission(call).then(
      (principal) =>
        Promise.resolve()
          .then(() => assertDecoded(call.request))
          .then(() => handler(call.request, { principal }, call))
          .then(
            (res) => done(null, res),
            (err: unknown) => done(toStatus(err, deps.logger, method)),
          ),
      (err: unknown) => {
        deps.logger.info({ method, peer: call.getPeer() }, 'call refused');
        done(toStatus(err, deps.logger, method));
      },
    );
  };
}

/** Wraps a server-streaming handler the same way; the handler resolves when the stream ends. */
export function serverStreamWith<P, Req, Res>(
  deps: BoundaryDeps,
  method: string,
  admission: Admission<P>,
  handler: (
    request: Req,
    ctx: { principal: P },
    call: ServerWritableStream<Req, Res>,
  ) => Promise<void>,
): handleServerStreamingCall<Req, Res> {
  return (call) => {
    const finish = (err: unknown) => {
      const s = toStatus(err, deps.logger, method);
      deps.metrics.rpcTotal.inc({ method, code: status[s.code ?? status.INTERNAL] });
      call.emit('error', s);
    };
    admission(call).then(
      (principal) =>
        Promise.resolve()
          .then(() => assertDecoded(call.request))
          .then(() => handler(call.request, { principal }, call))
          .then(() => {
            deps.metrics.rpcTotal.inc({ method, code: 'OK' });
            call.end();
          }, finish),
      finish,
    );
  };
}
