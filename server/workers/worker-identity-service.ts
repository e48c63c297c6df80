/**
 * The worker-identity half of WorkerService, on the mutual-TLS worker endpoint: signed
 * heartbeats that keep a worker's lease (refused ones are audited, and repeated refusals block
 * the worker with a security alert) and certificate renewal with a fresh key (docs/workers.md;
 * the renewal is certificate-renewal.ts). The execution half (Connect, StartExecution,
 * ReportResult) is in tasks/.
 */
import type { Logger } from 'pino';
import type { HeartbeatBody, WorkerServiceServer } from '../../gen/citadel/v1/worker_service.js';
import { unaryWith, type AuthenticatedCall } from '../api/rpc.js';
import type { Metrics } from '../metrics.js';
import { Tx } from '../store/store.js';
import type { CaMaterial } from '../tls/ca.js';
import { renewCertificate } from './certificate-renewal.js';
import { HeartbeatRefusedError, type HeartbeatVerifier } from './heartbeat-verifier.js';
import { admitWorker, type WorkerAdmissionDeps, type WorkerPrincipal } from './worker-admission.js';
import type { WorkerLiveness } from './worker-liveness.js';
import { endWorker } from './worker-retirement.js';

export interface WorkerIdentityDeps extends WorkerAdmissionDeps {
  logger: Logger;
  metrics: Metrics;
  liveness: WorkerLiveness;
  verifier: HeartbeatVerifier;
  ca: CaMaterial;
  options: {
    workerCertTtlMs: number;
    heartbeatIntervalMs: number;
    leaseTtlMs: number;
    /** Refused heartbeats of one worker in a window that block it. @default 5 */
    heartbeatRefusalLimit: number;
    /** That window. @default 60000 */
    heartbeatRefusalWindowMs: number;
  };
}

/**
 * The handler of refused heartbeats: audits each one, and blocks the worker (with a security
 * alert) once its refusals on this replica reach the limit within the window.
 */
function refusalHandler(
  deps: WorkerIdentityDeps,
): (p: WorkerPrincipal, err: HeartbeatRefusedError) => Promise<void> {
  const { store, logger, options } = deps;
  const refusals = new Map<string, { start: number; count: number }>();

  return async (p, err) => {
    deps.metrics.heartbeats.inc({ result: err.reason });
    const now = Date.now();
    let w = refusals.get(p.worker.id);
    if (!w || now - w.start >= options.heartbeatRefusalWindowMs) {
      w = { start: now, count: 0 };
      refusals.set(p.worker.id, w);
    }
    w.count++;
    await store
      .commit(
        new Tx().record({
          eventType: 'heartbeat_refused',
          action: 'heartbeat',
          result: 'failure',
          workerId: p.worker.id,
          ipAddress: p.ipAddress,
          details: { reason: err.reason, serial: p.cert.serial, refusals_in_window: w.count },
        }),
      )
      .catch((e: unknown) => logger.warn({ err: e }, 'could not audit a refused heartbeat'));
    if (w.count < options.heartbeatRefusalLimit) return;
    refusals.delete(p.worker.id);
    try {
      await endWorker(deps, p.worker.id, 'blocked', 'heartbeat_refusals', {
        eventType: 'security_alert',
        action: 'block_worker',
        result: 'success',
        userId: 'system:heartbeat-verifier',
        ipAddress: p.ipAddress,
        details: { refusals: w.count, last_reason: err.reason },
      });
    } catch (e) {
      logger.error(
        { err: e, workerId: p.worker.id },
        'could not block a worker after heartbeat refusals',
      );
      return;
    }
    deps.metrics.securityAlerts.inc({ kind: 'heartbeat_refusals' });
    logger.error(
      { workerId: p.worker.id, refusals: w.count, lastReason: err.reason, peer: p.ipAddress },
      'SECURITY ALERT: worker blocked after repeated heartbeat refusals',
    );
  };
}

/** Heartbeat and RenewCertificate of WorkerService. */
export function workerIdentityService(
  deps: WorkerIdentityDeps,
): Pick<WorkerServiceServer, 'heartbeat' | 'renewCertificate'> {
  const { options } = deps;
  const admit = (call: AuthenticatedCall) => admitWorker(deps, call);
  const refused = refusalHandler(deps);

  return {
    heartbeat: unaryWith(deps, 'WorkerService/Heartbeat', admit, async (req, { principal }) => {
      const id = principal.worker.id;
      let body: HeartbeatBody;
      try {
        const floor = deps.verifier.knows(id) ? 0 : await deps.liveness.sequenceFloor(id);
        body = deps.verifier.accept(req, principal.cert, floor);
      } catch (err) {
        if (err instanceof HeartbeatRefusedError) await refused(principal, err);
        throw err;
      }
      await deps.liveness.renew(principal.worker, body.sequence, Math.min(body.totalSlots, 1024));
      deps.metrics.heartbeats.inc({ result: 'accepted' });
      return { leaseTtlMs: options.leaseTtlMs, nextHeartbeatMs: options.heartbeatIntervalMs };
    }),

    renewCertificate: unaryWith(
      deps,
      'WorkerService/RenewCertificate',
      admit,
      (req, { principal }) => renewCertificate(deps, principal, req.csrPem),
    ),
  };
}
