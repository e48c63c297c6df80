/**
 * RenewCertificate of WorkerService: a worker trades its current certificate for a new one on a
 * fresh key, once per certificate and not before a quarter of its lifetime (docs/workers.md).
 * The old certificate is retired in the same transaction that registers the new one.
 */
import type { Logger } from 'pino';
import { FailedPreconditionError, UnauthenticatedError } from '../../common/errors.js';
import type { AuthFailureGuard } from '../auth/auth-failures.js';
import { revokeInTx, type CertRecord } from '../auth/cert-registry.js';
import { keys } from '../store/keys.js';
import { retryOnConflict } from '../store/retry-on-conflict.js';
import { Tx, type Store } from '../store/store.js';
import { issueClientCert, type CaMaterial } from '../tls/ca.js';
import { verifyCsr } from '../tls/csr.js';
import { identityUri } from '../tls/identity-uri.js';
import type { WorkerPrincipal } from './worker-admission.js';
import { readWorker } from './worker-table.js';

/** What a renewal uses: the store, the failure guard for refusals, the CA and the TTL. */
export interface CertificateRenewalDeps {
  store: Store;
  logger: Logger;
  failures: AuthFailureGuard;
  ca: CaMaterial;
  options: { workerCertTtlMs: number };
}

/**
 * Issues the calling worker a certificate for the public key of `csrPem` and retires the
 * calling certificate. A refusal of the caller is counted by the failure guard.
 * @throws UnauthenticatedError if the worker is not active or the calling certificate was
 *   already renewed or revoked.
 * @throws FailedPreconditionError before a quarter of the certificate's lifetime has passed.
 */
export async function renewCertificate(
  deps: CertificateRenewalDeps,
  principal: WorkerPrincipal,
  csrPem: string,
): Promise<{ certificatePem: string }> {
  const { store, logger, options } = deps;
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
  const csr = await verifyCsr(csrPem).catch((err: unknown) => refuse('bad_csr', err as Error));
  const cert = await issueClientCert(deps.ca, {
    uri: identityUri('worker', id),
    commonName: id,
    publicKey: csr.publicKey,
    validityMs: options.workerCertTtlMs,
  });
  await retryOnConflict(async () => {
    const worker = await readWorker(store, id);
    if (worker.value.state !== 'active') {
      refuse('worker_refused', new UnauthenticatedError(`worker ${id} is ${worker.value.state}`));
    }
    const now = Date.now();
    const held = await store.getManyJson<CertRecord>(worker.value.serials.map((s) => keys.cert(s)));
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
}
