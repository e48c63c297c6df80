/**
 * Requests that cannot be decoded are the caller's fault: grpc-js answers INTERNAL when a
 * service's deserializer throws (garbage bytes, an int64 past 2^53, a truncated message), and
 * INTERNAL pages operators. Each service registered on a listener gets deserializers that never
 * throw: a failure becomes an `UndecodableRequest`, which the boundary's wrappers (rpc.ts)
 * answer with INVALID_ARGUMENT, after admission, before any handler runs.
 */
import type { ServiceDefinition } from '@grpc/grpc-js';
import { InvalidArgumentError } from '../../common/errors.js';

/** Longest decoder reason echoed to the caller. */
const MAX_REASON = 200;

/** Stands in for a request whose bytes did not decode. */
export class UndecodableRequest {
  constructor(
    /** The method's path, e.g. `/citadel.v1.TaskService/CreateTask`. */
    readonly path: string,
    readonly reason: string,
  ) {}
}

/**
 * The service definition with deserializers that turn a failure into an UndecodableRequest.
 * Only methods whose request is one message are wrapped: a client stream would hand its handler
 * the stand-in as an ordinary message.
 */
export function withTolerantDecoding(definition: ServiceDefinition): ServiceDefinition {
  return Object.fromEntries(
    Object.entries(definition).map(([name, method]) => [
      name,
      method.requestStream
        ? method
        : {
            ...method,
            requestDeserialize: (bytes: Buffer): unknown => {
              try {
                return method.requestDeserialize(bytes);
              } catch (err) {
                const reason = err instanceof Error ? err.message : String(err);
                return new UndecodableRequest(method.path, reason.slice(0, MAX_REASON));
              }
            },
          },
    ]),
  );
}

/** @throws InvalidArgumentError when `request` could not be decoded. */
export function assertDecoded(request: unknown): void {
  if (request instanceof UndecodableRequest) {
    const message = request.path.split('/')[2] ?? 'request';
    throw new InvalidArgumentError(
      'request',
      `could not be decoded as the ${message} request message (${request.reason})`,
    );
  }
}
