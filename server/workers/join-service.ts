/**
 * JoinService: a new worker exchanges a bootstrap token and a CSR for an identity the server
 * chooses and a short-lived client certificate (docs/workers.md, "Join"). Served on the public
 * port; the token in the request is the only credential. One transaction consumes a use of the
 * token (compare on its revision), creates the worker and registers the certificate, with the
 * audit record. Every refusal goes through the AuthFailureGuard (audited, throttled per peer).
 */
import {
  ConflictError,
  FailedPreconditionError,
  UnauthenticatedError,
} from '../../common/errors.js';
import type { JoinServiceServer } from '../../gen/citadel/v1/join_service.js';
import type { AuthFailureGuard } from '../auth/auth-failures.js';
import {
  BOOTSTRAP_TOKEN_PREFIX,
  hashBootstrapToken,
  tokenProblem,
  type BootstrapTokenRecord,
} from './bootstrap-tokens.js';
import type { CertRecord } from '../auth/cert-registry.js';
import { identityUri } from '../tls/identity-uri.js';
import { keys } from '../store/keys.js';
import { peerAddress } from '../tls/peer-certificate.js';
import { unaryWith, type BoundaryDeps } from '../api/rpc.js';
import { Tx, type Store } from '../store/store.js';
import { issueClientCert, type CaMaterial } from '../tls/ca.js';
import { verifyCsr } from '../tls/csr.js';
import { newWorkerId, type WorkerRecord } from './worker-table.js';

export interface JoinDeps extends BoundaryDeps {
  store: Store;
  failures: AuthFailureGuard;
  ca: CaMaterial;
  workerCertTtlMs: number;
  workerPort: () => number;
  heartbeatIntervalMs: number;
  leaseTtlMs: number;
}

const TOKEN_PATTERN = /^cbt_[0-9A-Za-z]{43}$/;
const PROBLEM_TEXT = {
  token_revoked: 'has been revoked',
  token_expired: 'has expired',
  token_used_up: 'has no uses left',
} as const;

export function joinService(deps: JoinDeps): JoinServiceServer {
  const { store, failures } = deps;
  return {
    join: unaryWith(
      deps,
      'JoinService/Join',
      (call) => Promise.resolve(peerAddress(call.getPeer())),
      async (req, { principal: ipAddress }) => {
        const refuse = (reason: string, err: Error): never => {
          failures.fail({ peer: ipAddress, method: 'join', reason, credential: req.token });
          throw err;
        };
        if (!TOKEN_PATTERN.test(req.token)) {
          refuse(
            'unknown_token',
            new UnauthenticatedError(
              `invalid bootstrap token: expected ${BOOTSTRAP_TOKEN_PREFIX} and 43 letters or digits`,
            ),
          );
        }
        /** The token's record, if it can be used now; refuses (and audits) otherwise. */
        const usableToken = async () => {
          const token = await store.getJson<BootstrapTokenRecord>(
            keys.bootstrapToken(hashBootstrapToken(req.token)),
          );
          if (!token) {
            return refuse('unknown_token', new UnauthenticatedError('unknown bootstrap token'));
          }
          const problem = tokenProblem(token.value, Date.now());
          if (problem) {
            refuse(
              problem,
              new FailedPreconditionError(
                `bootstrap token ${token.value.id} ${PROBLEM_TEXT[problem]}: ask an admin for a new one`,
              ),
            );
          }
          return token;
        };
        await usableToken();
        const csr = await verifyCsr(req.csrPem).catch((err: unknown) =>
          refuse('bad_csr', err as Error),
        );
        const hostname = /^[A-Za-z0-9._-]{1,63}$/.test(req.hostname) ? req.hostname : '';
        const workerId = newWorkerId();
        const cert = await issueClientCert(deps.ca, {
          uri: identityUri('worker', workerId),
          commonName: workerId,
          publicKey: csr.publicKey,
          validityMs: deps.workerCertTtlMs,
        });
        for (let attempt = 0; ; attempt++) {
          const token = await usableToken();
          const now = Date.now();
          const worker: WorkerRecord = {
            id: workerId,
            // The token's labels (set by an admin) win over the host name the agent claims.
            labels: { ...(hostname ? { host: hostname } : {}), ...token.value.labels },
            state: 'active',
            online: false,
            tokenId: token.value.id,
            hostname,
            joinedAt: now,
            serials: [cert.serial],
          };
          const certRecord: CertRecord = {
            serial: cert.serial,
            kind: 'worker',
            subject: workerId,
            issuedAt: now,
            notAfter: cert.notAfter.getTime(),
          };
          const tx = new Tx()
            .expect(token.key, token.modRevision)
            .putJson(token.key, { ...token.value, uses: token.value.uses + 1 })
            .expect(keys.worker(workerId), 0)
            .putJson(keys.worker(workerId), worker)
            .putJson(keys.cert(cert.serial), certRecord)
            .record({
              eventType: 'worker_registration',
              action: 'join',
              result: 'success',
              workerId,
              ipAddress,
              details: {
                token_id: token.value.id,
                hostname,
                serial: cert.serial,
                key_type: csr.keyType,
              },
            });
          try {
            await store.commit(tx);
          } catch (err) {
            // Another join took a use meanwhile: read the token again and re-check it.
            if (err instanceof ConflictError && attempt < 20) continue;
            throw err;
          }
          deps.logger.info({ workerId, tokenId: token.value.id, ipAddress }, 'worker joined');
          return {
            workerId,
            certificatePem: cert.certPem,
            caCertificatePem: deps.ca.certPem,
            workerPort: deps.workerPort(),
            heartbeatIntervalMs: deps.heartbeatIntervalMs,
            leaseTtlMs: deps.leaseTtlMs,
          };
        }
      },
    ),
  };
}
