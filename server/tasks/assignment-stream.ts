/**
 * The Connect stream of WorkerService (docs/dispatch.md): sends a worker its current
 * assignments, then every new one and every cancellation, from a watch on its
 * `assignments/<worker>/` prefix. The stream ends as soon as the worker is blocked or retired,
 * its certificate is revoked or expires, a newer stream of the same worker opens on this
 * replica, or the replica shuts down.
 */
import type { ServerWritableStream } from '@grpc/grpc-js';
import type { Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { AbortedError, UnauthenticatedError, UnavailableError } from '../../common/errors.js';
import type { ConnectRequest, ConnectResponse } from '../../gen/citadel/v1/worker_service.js';
import { whenExpired } from '../auth/credential-expiry.js';
import type { Keyring } from '../crypto/sealer.js';
import { keys } from '../store/keys.js';
import {
  workerInvalidity,
  type WorkerAdmissionDeps,
  type WorkerPrincipal,
} from '../workers/worker-admission.js';
import type { WorkerLiveness } from '../workers/worker-liveness.js';
import { buildAssignment } from './assignments.js';
import type { AssignmentKey } from './records.js';

/** What a Connect stream uses: the worker tables (re-checked), the keyring and slot counts. */
export interface AssignmentStreamDeps extends WorkerAdmissionDeps {
  keyring: Keyring;
  logger: Logger;
  liveness: WorkerLiveness;
  /** Aborted at shutdown: ends every open stream. */
  shutdown: AbortSignal;
}

/** The open stream of each worker on a replica, by worker id: calling one ends it. */
export type OpenStreams = Map<string, () => void>;

type ConnectCall = ServerWritableStream<ConnectRequest, ConnectResponse>;

/** How a failed send ends the stream: kept until the stream is held, then ending it. */
interface SendFailure {
  pending: Error | undefined;
  fail: (err: Error) => void;
}

/**
 * Streams a worker its assignments until the stream ends; a newer stream of the same worker
 * on this replica replaces it (see {@link OpenStreams}).
 * @throws UnauthenticatedError once the worker or its certificate stops being valid.
 * @throws UnavailableError if an assignment cannot be sent or the watch fails: reconnect.
 * @throws AbortedError when a newer stream of the worker replaces this one.
 */
export function streamAssignments(
  deps: AssignmentStreamDeps,
  streams: OpenStreams,
  principal: WorkerPrincipal,
  call: ConnectCall,
): Promise<void> {
  const { store, logger } = deps;
  const first: ConnectResponse = {
    event: {
      $case: 'connected',
      value: { workerId: principal.worker.id, replicaId: store.replicaId },
    },
  };
  call.write(first);
  const workerId = principal.worker.id;
  deps.liveness.forgetSlots(workerId);
  const prefix = keys.assignmentPrefix(workerId);
  // Sends run one after another, in the order etcd reported the changes. One that fails
  // ends the stream: the agent reconnects and gets every current assignment again.
  let sending = Promise.resolve();
  const failure: SendFailure = {
    pending: undefined,
    fail: (err) => void (failure.pending ??= err), // until the stream is held
  };
  const send = (executionId: string, removed: boolean, taskId?: string) => {
    sending = sending
      .then(async () => {
        if (removed) {
          call.write({ event: { $case: 'cancelled', value: { executionId } } });
          return;
        }
        const assignment = await buildAssignment(store, deps.keyring, executionId, taskId);
        if (assignment) call.write({ event: { $case: 'assignment', value: assignment } });
      })
      .catch((err: unknown) => {
        logger.warn({ err, workerId, executionId }, 'could not send an assignment');
        failure.fail(new UnavailableError('could not send an assignment; reconnect'));
      });
  };
  return store.rangeAll<Partial<AssignmentKey>>(prefix).then(async (current) => {
    for (const item of current.items) {
      send(item.key.slice(prefix.length), false, item.value?.taskId);
    }
    const watcher = await store.watch(prefix, current.revision + 1);
    watcher.on('put', (kv) =>
      send(store.relative(kv.key).slice(prefix.length), false, taskIdHint(kv.value)),
    );
    watcher.on('delete', (kv) => send(store.relative(kv.key).slice(prefix.length), true));
    try {
      await holdStream(deps, streams, principal, call, watcher, failure);
    } finally {
      await watcher.cancel().catch(() => undefined);
    }
  });
}

/**
 * Keeps the stream open until the client goes away or the replica shuts down (resolved), or
 * until the worker or its certificate stops being valid, the watch or a send fails, or a newer
 * stream replaces it (rejected).
 */
function holdStream(
  deps: AssignmentStreamDeps,
  streams: OpenStreams,
  principal: WorkerPrincipal,
  call: ConnectCall,
  watcher: Watcher,
  failure: SendFailure,
): Promise<void> {
  const { logger } = deps;
  return new Promise<void>((resolve, reject) => {
    failure.fail = (err) => {
      cleanup();
      reject(err);
    };
    watcher.once('error', (err) => {
      cleanup();
      reject(new UnavailableError('the assignment watch failed; reconnect', { cause: err }));
    });
    const check = () => {
      const problem = workerInvalidity(deps, principal.cert);
      if (problem !== undefined && problem !== 'unknown') {
        cleanup();
        logger.info(
          { workerId: principal.worker.id, problem: problem.message },
          'worker stream cut',
        );
        reject(new UnauthenticatedError(problem.message));
      }
    };
    const onWorker = (id: string | undefined) => {
      if (id === undefined || id === principal.worker.id) check();
    };
    const onCert = (serial: string | undefined) => {
      if (serial === undefined || serial === principal.cert.serial) check();
    };
    const done = () => {
      cleanup();
      resolve();
    };
    // A TLS connection outlives its certificate: end the stream when the certificate expires
    // (not before, and not at setTimeout's limit of 24.8 days for a longer-lived one).
    const disarmExpiry = whenExpired(principal.cert.notAfter, () => {
      cleanup();
      reject(new UnauthenticatedError('this worker certificate has expired; renew and reconnect'));
    });
    const replaced = () => {
      cleanup();
      reject(new AbortedError('replaced by a newer stream of this worker'));
    };
    streams.get(principal.worker.id)?.();
    streams.set(principal.worker.id, replaced);
    const cleanup = () => {
      if (streams.get(principal.worker.id) === replaced) streams.delete(principal.worker.id);
      disarmExpiry();
      deps.workers.off('change', onWorker);
      deps.certs.off('change', onCert);
      deps.shutdown.removeEventListener('abort', done);
      call.off('cancelled', done);
    };
    deps.workers.on('change', onWorker);
    deps.certs.on('change', onCert);
    deps.shutdown.addEventListener('abort', done);
    call.on('cancelled', done);
    if (call.cancelled) done();
    if (failure.pending) failure.fail(failure.pending);
    else check();
  });
}

/** The task id an assignment key's value names, if it is readable: only a hint. */
function taskIdHint(value: Buffer): string | undefined {
  try {
    const taskId = (JSON.parse(value.toString()) as Partial<AssignmentKey> | null)?.taskId;
    return typeof taskId === 'string' ? taskId : undefined;
  } catch {
    return undefined;
  }
}
