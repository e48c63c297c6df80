/**
 * The execution half of WorkerService, on the mutual-TLS worker endpoint (docs/dispatch.md):
 * Connect streams a worker its assignments (and their cancellations) from a watch on its
 * `assignments/<worker>/` prefix, ending as soon as the worker is blocked or retired or its
 * certificate revoked or expired, on any replica; StartExecution and ReportResult accept only
 * the assigned worker with the attempt's current fencing token.
 */
import type { Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { AbortedError, UnauthenticatedError, UnavailableError } from '../../common/errors.js';
import type { ConnectResponse, WorkerServiceServer } from '../../gen/citadel/v1/worker_service.js';
import { serverStreamWith, unaryWith, type AuthenticatedCall } from '../api/rpc.js';
import type { Keyring } from '../crypto/sealer.js';
import type { Metrics } from '../metrics.js';
import { keys } from '../store/keys.js';
import {
  admitWorker,
  workerInvalidity,
  type WorkerAdmissionDeps,
} from '../workers/worker-admission.js';
import type { WorkerLiveness } from '../workers/worker-liveness.js';
import { buildAssignment, reportToResult } from './assignments.js';
import type { ExecutionEngine } from './execution-engine.js';
import type { AssignmentKey } from './records.js';

export interface WorkerExecutionDeps extends WorkerAdmissionDeps {
  executions: ExecutionEngine;
  keyring: Keyring;
  logger: Logger;
  metrics: Metrics;
  liveness: WorkerLiveness;
  /** Aborted at shutdown: ends every open stream. */
  shutdown: AbortSignal;
}

/** Connect, StartExecution and ReportResult of WorkerService. */
export function workerExecutionService(
  deps: WorkerExecutionDeps,
): Pick<WorkerServiceServer, 'connect' | 'startExecution' | 'reportResult'> {
  const { store, logger } = deps;
  const admit = (call: AuthenticatedCall) => admitWorker(deps, call);
  /** The open stream of each worker on this replica; a new one replaces it. */
  const streams = new Map<string, () => void>();

  return {
    connect: serverStreamWith(deps, 'WorkerService/Connect', admit, (_req, { principal }, call) => {
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
      let sendFailure: Error | undefined;
      let failStream = (err: Error) => void (sendFailure ??= err); // until the stream is held
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
            failStream(new UnavailableError('could not send an assignment; reconnect'));
          });
      };
      return store.range<Partial<AssignmentKey>>(prefix).then(async (current) => {
        for (const item of current.items) {
          send(item.key.slice(prefix.length), false, item.value?.taskId);
        }
        const watcher = await store.watch(prefix, current.revision + 1);
        watcher.on('put', (kv) =>
          send(store.relative(kv.key).slice(prefix.length), false, taskIdHint(kv.value)),
        );
        watcher.on('delete', (kv) => send(store.relative(kv.key).slice(prefix.length), true));
        try {
          await holdStream(watcher);
        } finally {
          await watcher.cancel().catch(() => undefined);
        }
      });
      function holdStream(watcher: Watcher): Promise<void> {
        return new Promise<void>((resolve, reject) => {
          failStream = (err) => {
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
          // A TLS connection outlives its certificate: end the stream when the certificate expires.
          const notAfter = principal.cert.notAfter;
          const expiry = setTimeout(
            () => {
              cleanup();
              reject(
                new UnauthenticatedError(
                  'this worker certificate has expired; renew and reconnect',
                ),
              );
            },
            Math.min(Math.max(0, notAfter - Date.now()), 2 ** 31 - 1),
          );
          const replaced = () => {
            cleanup();
            reject(new AbortedError('replaced by a newer stream of this worker'));
          };
          streams.get(principal.worker.id)?.();
          streams.set(principal.worker.id, replaced);
          const cleanup = () => {
            if (streams.get(principal.worker.id) === replaced) streams.delete(principal.worker.id);
            clearTimeout(expiry);
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
          if (sendFailure) failStream(sendFailure);
          else check();
        });
      }
    }),

    startExecution: unaryWith(
      deps,
      'WorkerService/StartExecution',
      admit,
      async (req, { principal }) => {
        await deps.executions.startExecution(
          req.executionId,
          req.fencingToken,
          principal.worker.id,
        );
        return {};
      },
    ),

    reportResult: unaryWith(
      deps,
      'WorkerService/ReportResult',
      admit,
      async (req, { principal }) => {
        const { state, result } = reportToResult(deps.keyring, req);
        await deps.executions.finishExecution(req.executionId, state, result, {
          fencingToken: req.fencingToken,
          workerId: principal.worker.id,
          actor: { userId: `worker:${principal.worker.id}`, ipAddress: principal.ipAddress },
        });
        return {};
      },
    ),
  };
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
