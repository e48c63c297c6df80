/**
 * The execution half of WorkerService, on the mutual-TLS worker endpoint (docs/dispatch.md):
 * Connect streams a worker its assignments (and their cancellations) from a watch on its
 * `assignments/<worker>/` prefix, ending as soon as the worker is blocked or retired or its
 * certificate revoked or expired, on any replica (the stream is assignment-stream.ts);
 * StartExecution and ReportResult accept only the assigned worker with the attempt's current
 * fencing token.
 */
import type { WorkerServiceServer } from '../../gen/citadel/v1/worker_service.js';
import { serverStreamWith, unaryWith, type AuthenticatedCall } from '../api/rpc.js';
import type { Metrics } from '../metrics.js';
import { admitWorker } from '../workers/worker-admission.js';
import {
  streamAssignments,
  type AssignmentStreamDeps,
  type OpenStreams,
} from './assignment-stream.js';
import { reportToResult } from './assignments.js';
import type { ExecutionEngine } from './execution-engine.js';

export interface WorkerExecutionDeps extends AssignmentStreamDeps {
  executions: ExecutionEngine;
  metrics: Metrics;
}

/** Connect, StartExecution and ReportResult of WorkerService. */
export function workerExecutionService(
  deps: WorkerExecutionDeps,
): Pick<WorkerServiceServer, 'connect' | 'startExecution' | 'reportResult'> {
  const admit = (call: AuthenticatedCall) => admitWorker(deps, call);
  /** The open stream of each worker on this replica; a new one replaces it. */
  const streams: OpenStreams = new Map();

  return {
    connect: serverStreamWith(deps, 'WorkerService/Connect', admit, (_req, { principal }, call) =>
      streamAssignments(deps, streams, principal, call),
    ),

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
