/**
 * Admission to the worker endpoint: every WorkerService call is admitted by its client
 * certificate, which must be registered, unrevoked and name an active worker (docs/workers.md).
 * A refusal is counted by the failure guard under a reason code, so retired certificates in use
 * (a copied key, or a call racing its own renewal) stand out in the audit trail.
 */
import { UnauthenticatedError } from '../../common/errors.js';
import type { AuthenticatedCall } from '../api/rpc.js';
import type { AuthFailureGuard } from '../auth/auth-failures.js';
import type { CertRecord, CertRegistry } from '../auth/cert-registry.js';
import { keys } from '../store/keys.js';
import type { Store } from '../store/store.js';
import { peerAddress, peerIdentity, type PeerCertificate } from '../tls/peer-certificate.js';
import type { WorkerRecord, WorkerTable } from './worker-table.js';

/** The worker behind a call, as admitted. */
export interface WorkerPrincipal {
  worker: WorkerRecord;
  cert: PeerCertificate;
  ipAddress: string;
}

/** Why a worker's calls are refused: the audit reason, and the message its agent reads. */
export interface WorkerRefusal {
  reason: 'certificate_retired' | 'worker_ended' | 'worker_refused';
  message: string;
}

export interface WorkerAdmissionDeps {
  store: Store;
  workers: WorkerTable;
  certs: CertRegistry;
  failures: AuthFailureGuard;
}

/**
 * Why a worker's calls are no longer accepted, from this replica's tables: a refusal, 'unknown'
 * when a record is not (yet) in the tables, or undefined while they are accepted.
 */
export function workerInvalidity(
  deps: Pick<WorkerAdmissionDeps, 'certs' | 'workers'>,
  cert: PeerCertificate,
): WorkerRefusal | 'unknown' | undefined {
  const worker = deps.workers.get(cert.subject);
  if (worker && worker.state !== 'active') {
    return { reason: 'worker_ended', message: `worker ${cert.subject} is ${worker.state}` };
  }
  const record = deps.certs.get(cert.serial);
  if (record?.revokedAt !== undefined) {
    return record.revokeReason === 'renewed'
      ? {
          reason: 'certificate_retired',
          message: 'this certificate was replaced by a renewal; use the new one',
        }
      : { reason: 'worker_refused', message: 'this worker certificate is revoked' };
  }
  if (record && !deps.certs.accepts(cert.serial, 'worker', cert.subject)) {
    return {
      reason: 'worker_refused',
      message: 'this worker certificate is expired or names another worker',
    };
  }
  if (!worker || !record) return 'unknown';
  return undefined;
}

/** Why stored records refuse a worker (read from etcd when the tables do not know it yet). */
function storedInvalidity(
  worker: WorkerRecord | undefined,
  cert: CertRecord | undefined,
): WorkerRefusal | undefined {
  if (!worker || !cert) {
    return { reason: 'worker_refused', message: 'unknown worker or certificate' };
  }
  if (worker.state !== 'active') {
    return { reason: 'worker_ended', message: `worker ${worker.id} is ${worker.state}` };
  }
  if (cert.kind !== 'worker' || cert.subject !== worker.id || cert.revokedAt !== undefined) {
    return { reason: 'worker_refused', message: 'this worker certificate is revoked' };
  }
  if (cert.notAfter <= Date.now()) {
    return { reason: 'worker_refused', message: 'this worker certificate has expired' };
  }
  return undefined;
}

/**
 * Admits a worker by its certificate. A record another replica has just written may not be in
 * this replica's tables yet, so an unknown one is read from etcd before it is refused.
 * @throws UnauthenticatedError, after counting the refusal with the failure guard.
 */
export async function admitWorker(
  deps: WorkerAdmissionDeps,
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
  let problem = workerInvalidity(deps, identity);
  let worker = deps.workers.get(identity.subject);
  if (problem === 'unknown') {
    const [stored, cert] = await Promise.all([
      deps.store.getJson<WorkerRecord>(keys.worker(identity.subject)),
      deps.store.getJson<CertRecord>(keys.cert(identity.serial)),
    ]);
    worker = stored?.value;
    problem = storedInvalidity(worker, cert?.value);
  }
  if (problem !== undefined) return refuse(problem.reason, problem.message, identity.serial);
  if (!worker) return refuse('worker_refused', 'unknown worker', identity.serial);
  return { worker, cert: identity, ipAddress };
}
