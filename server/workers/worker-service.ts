/**
 * WorkerService, served on the mutual-TLS worker endpoint: signed heartbeats, certificate
 * renewal and the worker's event stream (docs/workers.md). Every call is admitted by its client
 * certificate: registered, unrevoked, naming an active worker. A stream ends as soon as the
 * worker is blocked or retired or its certificate revoked, on any replica.
 */
import type { Logger } from 'pino';
import type { Watcher } from 'etcd3';
import {
  AbortedError,
  FailedPreconditionError,
  UnauthenticatedError,
  UnavailableError,
} from '../../common/errors.js';
import type {
  ConnectResponse,
  HeartbeatBody,
  WorkerServiceServer,
} from '../../gen/citadel/v1/worker_service.js';
import type { AuthFailureGuard } from '../auth/auth-failures.js';
import { buildAssignment, reportToResult } from '../tasks/assignments.js';
import type { AssignmentKey } from '../tasks/records.js';
import type { Keyring } from '../crypto/sealer.js';
import type { ExecutionEngine } from '../tasks/execution-engine.js';
import { identityUri, revokeInTx, type CertRecord, type CertRegistry } from '../auth/cert-registry.js';
import { retryOnConflict } from '../tasks/execution-ops.js';
import { HeartbeatRefusedError, type HeartbeatVerifier } from './heartbeat-verifier.js';
import { keys } from '../store/keys.js';
import type { Metrics } from '../metrics.js';
import { peerAddress, peerIdentity, type PeerCertificate } from '../tls/peer-certificate.js';
import { serverStreamWith, unaryWith, type AuthenticatedCall } from '../api/rpc.js';
import { Tx, type Store } from '../store/store.js';
import { issueClientCert, type CaMaterial } from '../tls/ca.js';
import { verifyCsr } from '../tls/csr.js';
import type { WorkerLiveness } from './worker-liveness.js';
import { endWorker } from './worker-retirement.js';
import { readWorker, type WorkerRecord, type WorkerTable } from './worker-table.js';

export interface WorkerServiceDeps {
  store: Store;
  executions: ExecutionEngine;
  keyring: Keyring;
  logger: Logger;
  metrics: Metrics;
  workers: WorkerTable;
  certs: CertRegistry;
  liveness: WorkerLiveness;
  verifier: HeartbeatVerifier;
  failures: AuthFailureGuard;
  ca: CaMaterial;
  shutdown: AbortSignal;
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

/** The worker behind a call, as admitted. */
export interface WorkerPrincipal {
  worker: WorkerRecord;
  cert: PeerCertificate;
  ipAddress: string;
}

/** Why a worker's calls are no longer accepted, or undefined while they are. */
function invalidity(
  deps: Pick<WorkerServiceDeps, 'certs' | 'workers'>,
  cert: PeerCertificate,
): string | undefined {
  const worker = deps.workers.get(cert.subject);
  if (worker && worker.state !== 'active') return `worker ${cert.subject} is ${worker.state}`;
  const record = deps.certs.get(cert.serial);
  if (record?.revokedAt !== undefined) {
    return record.revokeReason === 'renewed'
      ? 'this certificate was replaced by a renewal; use the new one'
      : 'this worker certificate is revoked';
  }
  if (record && !deps.certs.accepts(cert.serial, 'worker', cert.subject)) {
    return 'this worker certificate is expired or names another worker';
  }
  if (!worker || !record) return 'unknown';
  return undefined;
}

/**
 * Admits a worker by its certificate. A record another replica has just written may not be in
 * this replica's tables yet, so an unknown one is read from etcd before it is refused.
 */
async function admitWorker(
  deps: WorkerServiceDeps,
  call: AuthenticatedCall,
): Promise<WorkerPrincipal> {
  const ipAddress = peerAddress(call.getPeer());
  const identity = peerIdentity(call);
  const refuse = (reason: string, message: string, serial?: string): never => {
    deps.failures.fail({ peer: ipAddress, method: 'worker_mtls', reason, credential: serial });
    throw new UnauthenticatedError(message);
  };
  if (identity.kind !== 'worker') {
    return refuse(
      'not_a_worker_certificate',
      'the worker endpoint needs a worker certificate (SAN citadel://worker/<id>)',
    );
  }
  let problem = invalidity(deps, identity);
  let worker = deps.workers.get(identity.subject);
  if (problem === 'unknown') {
    const [stored, cert] = await Promise.all([
      deps.store.getJson<WorkerRecord>(keys.worker(identity.subject)),
      deps.store.getJson<CertRecord>(keys.cert(identity.serial)),
    ]);
    worker = stored?.value;
    const c = cert?.value;
    problem =
      !worker || !c
        ? 'unknown worker or certificate'
        : worker.state !== 'active'
          ? `worker ${worker.id} is ${worker.state}`
          : c.kind !== 'worker' || c.subject !== worker.id || c.revokedAt !== undefined
            ? 'this worker certificate is revoked'
            : c.notAfter <= Date.now()
              ? 'this worker certificate has expired'
              : undefined;
  }
  if (problem !== undefined || !worker) {
    const message = problem ?? 'unknown worker';
    // A retired serial in use may be a copy of the key in someone else's hands (or a call that
    // raced its own renewal): audit it under its own reason, so it stands out.
    const reason = /replaced by a renewal/.test(message)
      ? 'certificate_retired'
      : /blocked|retired/.test(message)
        ? 'worker_ended'
        : 'worker_refused';
    return refuse(reason, message, identity.serial);
  }
  return { worker, cert: identity, ipAddress };
}

export function workerService(deps: WorkerServiceDeps): WorkerServiceServer {
  const { store, logger, options } = deps;
  const admit = (call: AuthenticatedCall) => admitWorker(deps, call);
  const refusals = new Map<string, { start: number; count: number }>();
  /** The open stream of each worker on this replica; a new one replaces it. */
  const streams = new Map<string, () => void>();

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
            const problem = invalidity(deps, principal.cert);
            if (problem !== undefined && problem !== 'unknown') {
              cleanup();
              logger.info({ workerId: principal.worker.id, problem }, 'worker stream cut');
              reject(new UnauthenticatedError(problem));
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
