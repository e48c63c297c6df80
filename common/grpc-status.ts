/** gRPC status helpers shared by the agent and the CLI. */
import { status, type ServiceError } from '@grpc/grpc-js';

/** Whether `err` is a status error from a grpc-js call. */
export function isServiceError(err: unknown): err is ServiceError {
  return (
    err instanceof Error &&
    typeof (err as Partial<ServiceError>).code === 'number' &&
    typeof (err as Partial<ServiceError>).details === 'string'
  );
}

/** The canonical name of a gRPC status code, e.g. `INVALID_ARGUMENT`. */
export function statusName(code: number): string {
  return (status as unknown as Record<number, string | undefined>)[code] ?? `CODE_${code}`;
}
