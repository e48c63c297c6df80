/**
 * AdminService handlers for service certificates: client certificates that let a service
 * account call the public API over mutual TLS, issued from a CSR and revoked. Each change is one
 * store transaction with its audit record (`configuration_change`).
 */
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from '../../common/errors.js';
import type { AdminServiceServer } from '../../gen/citadel/v1/admin_service.js';
import { unary, type RpcDeps } from '../auth/admission.js';
import type { CertRecord } from '../auth/cert-registry.js';
import { validateUserId } from '../auth/users.js';
import { keys } from '../store/keys.js';
import { Tx } from '../store/store.js';
import { issueClientCert, type CaMaterial } from '../tls/ca.js';
import { verifyCsr } from '../tls/csr.js';
import { identityUri } from '../tls/identity-uri.js';
import { configChange, readUser } from './admin-common.js';

/** What the service-certificate handlers use: admission's needs and the cluster CA. */
export interface ServiceCertAdminDeps extends RpcDeps {
  ca: CaMaterial;
}

type ServiceCertAdminRpcs = Pick<
  AdminServiceServer,
  'issueServiceCertificate' | 'revokeServiceCertificate'
>;

const DAY_MS = 24 * 60 * 60 * 1000;

/** IssueServiceCertificate and RevokeServiceCertificate of AdminService. */
export function serviceCertAdmin(deps: ServiceCertAdminDeps): ServiceCertAdminRpcs {
  const { store } = deps;

  return {
    issueServiceCertificate: unary(
      deps,
      'AdminService/IssueServiceCertificate',
      async (req, { principal }) => {
        const userId = validateUserId(req.userId, 'user_id');
        const seconds = req.validitySeconds === 0 ? 90 * 24 * 3600 : req.validitySeconds;
        if (seconds < 60 || seconds > 365 * 24 * 3600) {
          throw new InvalidArgumentError('validity_seconds', 'must be 60 to 31536000');
        }
        const user = await readUser(store, userId, 'user_id');
        if (!user.value.enabled) throw new FailedPreconditionError(`user ${userId} is disabled`);
        const csr = await verifyCsr(req.csrPem);
        const cert = await issueClientCert(deps.ca, {
          uri: identityUri('service', userId),
          commonName: userId,
          publicKey: csr.publicKey,
          validityMs: Math.min(seconds * 1000, 365 * DAY_MS),
        });
        const now = Date.now();
        const tx = new Tx()
          .expect(user.key, user.modRevision)
          .putJson(keys.cert(cert.serial), {
            serial: cert.serial,
            kind: 'service',
            subject: userId,
            issuedAt: now,
            notAfter: cert.notAfter.getTime(),
          } satisfies CertRecord)
          .record(
            configChange(principal, 'issue_service_certificate', {
              user: userId,
              serial: cert.serial,
              not_after: cert.notAfter.toISOString(),
            }),
          );
        await store.commit(tx);
        return {
          certificatePem: cert.certPem,
          serial: cert.serial,
          expireTime: cert.notAfter,
          caCertificatePem: deps.ca.certPem,
        };
      },
    ),

    revokeServiceCertificate: unary(
      deps,
      'AdminService/RevokeServiceCertificate',
      async (req, { principal }) => {
        if (!/^[0-9a-f]{2,64}$/.test(req.serial)) {
          throw new InvalidArgumentError('serial', 'must be the lowercase hex serial');
        }
        const cert = await store.getJson<CertRecord>(keys.cert(req.serial));
        if (cert?.value.kind !== 'service')
          throw new NotFoundError('service certificate', req.serial);
        if (cert.value.revokedAt !== undefined) return {};
        const tx = new Tx()
          .expect(cert.key, cert.modRevision)
          .putJson(cert.key, { ...cert.value, revokedAt: Date.now(), revokeReason: 'revoked' })
          .record(
            configChange(principal, 'revoke_service_certificate', {
              user: cert.value.subject,
              serial: req.serial,
            }),
          );
        await store.commit(tx);
        return {};
      },
    ),
  };
}
