/**
 * The worker-identity half of WorkerService, on the mutual-TLS worker endpoint: signed
 * heartbeats that keep a worker's lease (refused ones are audited, and repeated refusals block
 * the worker with a security alert) and certificate renewal with a fresh key (docs/workers.md).
 * The execution half (Connect, StartExecution, ReportResult) is in tasks/.
 */
import type { Logger } from 'pino';
import { FailedPreconditionError, UnauthenticatedError } from '../../common/errors.js';
import type { HeartbeatBody, WorkerServiceServer } from '../../gen/citadel/v1/worker_service.js';
import { unaryWith, type AuthenticatedCall } from '../api/rpc.js';
import { revokeInTx, type CertRecord } from '../auth/cert-registry.js';
import type { Metrics } from '../metrics.js';
import { keys } from '../store/keys.js';
import { retryOnConflict } from '../store/retry-on-conflict.js';
import { Tx } from '../store/store.js';
import { issueClientCert, type CaMaterial } from '../tls/ca.js';
import { verifyCsr } from '../tls/csr.js';
import { identityUri } from '../tls/identity-uri.js';
import { HeartbeatRefusedError, type HeartbeatVerifier } from './heartbeat-verifier.js';
import { admitWorker, type WorkerAdmissionDeps, type WorkerPrincipal } from './worker-admission.js';
import type { WorkerLiveness } from './worker-liveness.js';
import { endWorker } from './worker-retirement.js';
import { readWorker } from './worker-table.js';

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

/** Heartbeat and RenewCertificate of WorkerService. */
export function workerIdentityService(
  deps: WorkerIdentityDeps,
): Pick<WorkerServiceServer, 'heartbeat' | 'renewCertificate'> {
  const { store, logger, options } = deps;
  const admit = (call: AuthenticatedCall) => admitWorker(deps, call);
  const refusals = new Map<string, { start: number; count: number }>();

  /** Audits a refused heartbeat; blocks the worker once refusals pass the limit in a window. */
  const refused = async (p: WorkerPrincipal, err: HeartbeatRefusedError): Promise<void> => {
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
      async (req, { principal }) => {
        const id = principal.worker.id;
        const refuse = (reason: string, err: Error): never => {
          deps.failures.fail({
            peer: principal.ipAddress,
            method: 'renew_certificate',
            reason,
            credential: principal.cert.serial,
          });
          throw err;
        };
        const csr = await verifyCsr(req.csrPem).catch((err: unknown) =>
          refuse('bad_csr', err as Error),
        );
        const cert = await issueClientCert(deps.ca, {
          uri: identityUri('worker', id),
          commonName: id,
          publicKey: csr.publicKey,
          validityMs: options.workerCertTtlMs,
        });
        await retryOnConflict(async () => {
          const worker = await readWorker(store, id);
          if (worker.value.state !== 'active') {
            refuse(
              'worker_refused',
              new UnauthenticatedError(`worker ${id} is ${worker.value.state}`),
            );
          }
          const now = Date.now();
          const held = await store.getManyJson<CertRecord>(
            worker.value.serials.map((s) => keys.cert(s)),
          );
          // The calling certificate, as etcd has it now: renewing retires it in this same
          // transaction (compared on its revision), so one certificate renews exactly once
          // however many calls race, and a retired one cannot renew again.
          const calling = [...held.values()].find((c) => c.value.serial === principal.cert.serial);
          if (!calling || calling.value.revokedAt !== undefined) {
            return refuse(
              'certificate_retired',
              new UnauthenticatedError('this certificate was already renewed or revoked'),
            );
          }
          // At most four renewals per lifetime: the agent renews at 40-50 % of it.
          const lifetime = calling.value.notAfter - calling.value.issuedAt;
          if (now - calling.value.issuedAt < lifetime / 4) {
            throw new FailedPreconditionError(
              'renewal too early: renew after a quarter of the certificate lifetime has passed',
            );
          }
          const tx = new Tx().expect(worker.key, worker.modRevision);
          const kept = revokeInTx(tx, [calling], 'renewed', now);
          for (const c of held.values()) {
            if (c === calling) continue;
            if (c.value.notAfter <= now) tx.expect(c.key, c.modRevision).delete(c.key);
            else kept.push(c.value.serial);
          }
          tx.putJson(worker.key, { ...worker.value, serials: [...kept, cert.serial] })
            .putJson(keys.cert(cert.serial), {
              serial: cert.serial,
              kind: 'worker',
              subject: id,
              issuedAt: now,
              notAfter: cert.notAfter.getTime(),
            } satisfies CertRecord)
            .record({
              eventType: 'worker_registration',
              action: 'renew_certificate',
              result: 'success',
              workerId: id,
              ipAddress: principal.ipAddress,
              details: {
                old_serial: principal.cert.serial,
                serial: cert.serial,
                key_type: csr.keyType,
              },
            });
          await store.commit(tx);
        });
        logger.info({ workerId: id, serial: cert.serial }, 'worker certificate renewed');
        return { certificatePem: cert.certPem };
      },
    ),
  };
}
