/**
 * AdminService handlers for workers: bootstrap tokens (created, listed, revoked) and workers
 * (listed, blocked, retired). Each change is one store transaction with its audit record.
 */
import { InvalidArgumentError, NotFoundError } from '../../common/errors.js';
import type { AdminServiceServer } from '../../gen/citadel/v1/admin_service.js';
import { decodePageToken, encodePageToken, pageSize } from '../api/page-token.js';
import { configChange, description } from './admin-common.js';
import {
  generateBootstrapToken,
  newTokenRecord,
  tokenProblem,
  tokenToProto,
  type BootstrapTokenRecord,
} from '../workers/bootstrap-tokens.js';
import type { CertRegistry } from '../auth/cert-registry.js';
import { keys } from '../store/keys.js';
import { retryOnConflict } from '../store/retry-on-conflict.js';
import { unary, type RpcDeps } from '../auth/admission.js';
import { Tx } from '../store/store.js';
import { caFingerprint, type CaMaterial } from '../tls/ca.js';
import type { WorkerLiveness } from '../workers/worker-liveness.js';
import { endWorker } from '../workers/worker-retirement.js';
import {
  readWorker,
  workerToProto,
  type WorkerRecord,
  type WorkerTable,
} from '../workers/worker-table.js';

export interface WorkerAdminDeps extends RpcDeps {
  workers: WorkerTable;
  certs: CertRegistry;
  liveness: WorkerLiveness;
  ca: CaMaterial;
}

type WorkerAdminRpcs = Pick<
  AdminServiceServer,
  | 'createBootstrapToken'
  | 'listBootstrapTokens'
  | 'revokeBootstrapToken'
  | 'listWorkers'
  | 'getWorker'
  | 'blockWorker'
  | 'deregisterWorker'
>;

/**
 * CreateBootstrapToken, ListBootstrapTokens, RevokeBootstrapToken, ListWorkers, GetWorker,
 * BlockWorker and DeregisterWorker of AdminService.
 */
export function workerAdmin(deps: WorkerAdminDeps): WorkerAdminRpcs {
  const { store, certs } = deps;
  const toWorker = (w: WorkerRecord) => workerToProto(w, certs);

  return {
    createBootstrapToken: unary(
      deps,
      'AdminService/CreateBootstrapToken',
      async (req, { principal }) => {
        const record = newTokenRecord(req.bootstrapToken, principal.userId, Date.now());
        const generated = generateBootstrapToken();
        const tx = new Tx()
          .expect(keys.bootstrapToken(generated.hashHex), 0)
          .putJson(keys.bootstrapToken(generated.hashHex), record)
          .putJson(keys.bootstrapTokenId(record.id), { hash: generated.hashHex })
          .record(
            configChange(principal, 'create_bootstrap_token', {
              token_id: record.id,
              max_uses: record.maxUses,
              expires_at: new Date(record.expiresAt).toISOString(),
            }),
          );
        await store.commit(tx);
        return {
          bootstrapToken: tokenToProto(record),
          token: generated.token,
          caHash: caFingerprint(deps.ca.certPem),
        };
      },
    ),

    listBootstrapTokens: unary(deps, 'AdminService/ListBootstrapTokens', async (req) => {
      const page = await store.rangeAll<BootstrapTokenRecord>(keys.bootstrapTokenPrefix);
      const now = Date.now();
      return {
        bootstrapTokens: page.items
          .map((t) => t.value)
          .filter((t) => req.includeInactive || tokenProblem(t, now) === undefined)
          .sort((a, b) => b.createdAt - a.createdAt)
          .map(tokenToProto),
      };
    }),

    revokeBootstrapToken: unary(
      deps,
      'AdminService/RevokeBootstrapToken',
      async (req, { principal }) => {
        if (!/^bt_[0-9a-z]{1,32}$/.test(req.id)) {
          throw new InvalidArgumentError('id', 'is not a bootstrap token id (bt_...)');
        }
        return retryOnConflict(async () => {
          const index = await store.getJson<{ hash: string }>(keys.bootstrapTokenId(req.id));
          const token =
            index &&
            (await store.getJson<BootstrapTokenRecord>(keys.bootstrapToken(index.value.hash)));
          if (!token) throw new NotFoundError('bootstrap token', req.id);
          if (token.value.revokedAt !== undefined) {
            return { bootstrapToken: tokenToProto(token.value) };
          }
          const revoked = { ...token.value, revokedAt: Date.now() };
          const tx = new Tx()
            .expect(token.key, token.modRevision)
            .putJson(token.key, revoked)
            .record(configChange(principal, 'revoke_bootstrap_token', { token_id: req.id }));
          await store.commit(tx);
          return { bootstrapToken: tokenToProto(revoked) };
        });
      },
    ),

    listWorkers: unary(deps, 'AdminService/ListWorkers', async (req) => {
      const size = pageSize(req.pageSize);
      const startAfter = decodePageToken(req.pageToken, keys.workerPrefix);
      const page = await store.range<WorkerRecord>(keys.workerPrefix, { startAfter, limit: size });
      const last = page.items[page.items.length - 1];
      return {
        workers: page.items
          .map((w) => w.value)
          .filter((w) => req.includeInactive || w.state === 'active')
          .map(toWorker),
        nextPageToken: page.more && last ? encodePageToken(last.key) : '',
      };
    }),

    getWorker: unary(deps, 'AdminService/GetWorker', async (req) => ({
      worker: toWorker((await readWorker(store, req.id)).value),
    })),

    blockWorker: unary(deps, 'AdminService/BlockWorker', async (req, { principal }) => {
      const reason = description(req.reason, 'reason');
      if (reason === '') throw new InvalidArgumentError('reason', 'is required');
      const worker = await endWorker(
        deps,
        req.id,
        'blocked',
        reason,
        configChange(principal, 'block_worker', {}),
      );
      return { worker: toWorker(worker) };
    }),

    deregisterWorker: unary(deps, 'AdminService/DeregisterWorker', async (req, { principal }) => {
      const reason = description(req.reason, 'reason') || 'deregistered by an admin';
      const worker = await endWorker(
        deps,
        req.id,
        'retired',
        reason,
        configChange(principal, 'deregister_worker', {}),
      );
      return { worker: toWorker(worker) };
    }),
  };
}
