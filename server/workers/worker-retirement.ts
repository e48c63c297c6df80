/**
 * Ending a worker (docs/workers.md, "Blocking and deregistering"): one transaction sets its
 * terminal state, revokes every certificate it holds (and, when blocking, the bootstrap token
 * it joined with), deletes its live key and audits; the lease is revoked after the commit.
 * Every replica's watch then refuses the worker's calls and cuts its streams.
 */
import { FailedPreconditionError } from '../../common/errors.js';
import type { BootstrapTokenRecord } from './bootstrap-tokens.js';
import { revokeInTx, type CertRecord } from '../auth/cert-registry.js';
import { retryOnConflict } from '../store/retry-on-conflict.js';
import { keys } from '../store/keys.js';
import { Tx, type AuditEvent, type Store } from '../store/store.js';
import type { WorkerLiveness } from './worker-liveness.js';
import { readWorker, type LiveRecord, type WorkerRecord } from './worker-table.js';

export interface RetireDeps {
  store: Store;
  liveness: WorkerLiveness;
}

/**
 * Blocks or retires a worker. Idempotent for the same terminal state.
 * @param audit the audit record (event type, action, who); worker id and reason are added.
 * @throws NotFoundError for an unknown worker; FailedPreconditionError to retire a blocked one.
 */
export async function endWorker(
  deps: RetireDeps,
  workerId: string,
  state: 'blocked' | 'retired',
  reason: string,
  audit: AuditEvent,
): Promise<WorkerRecord> {
  const { store, liveness } = deps;
  let leaseId: string | undefined;
  const ended = await retryOnConflict(async () => {
    const worker = await readWorker(store, workerId);
    if (worker.value.state === state) return worker.value;
    if (worker.value.state === 'blocked') {
      throw new FailedPreconditionError('the worker is blocked; blocking is final');
    }
    const now = Date.now();
    const next: WorkerRecord = {
      ...worker.value,
      state,
      online: false,
      stateReason: reason,
      stateChangedAt: now,
    };
    const live = await store.getJson<LiveRecord>(keys.live(workerId));
    leaseId = live?.value.leaseId;
    const tx = new Tx().expect(worker.key, worker.modRevision).putJson(worker.key, next);
    if (live) tx.expect(live.key, live.modRevision).delete(live.key);
    const held = await store.getManyJson<CertRecord>(worker.value.serials.map((s) => keys.cert(s)));
    const before = [...held.values()].filter((c) => c.value.revokedAt === undefined).length;
    next.serials = revokeInTx(tx, held.values(), state, now);
    tx.putJson(worker.key, next);
    let tokenRevoked = false;
    if (state === 'blocked') {
      const index = await store.getJson<{ hash: string }>(
        keys.bootstrapTokenId(worker.value.tokenId),
      );
      const token =
        index && (await store.getJson<BootstrapTokenRecord>(keys.bootstrapToken(index.value.hash)));
      if (token && token.value.revokedAt === undefined) {
        tx.expect(token.key, token.modRevision).putJson(token.key, {
          ...token.value,
          revokedAt: now,
        });
        tokenRevoked = true;
      }
    }
    tx.record({
      ...audit,
      workerId,
      details: {
        ...audit.details,
        reason,
        certificates_revoked: before,
        token_revoked: tokenRevoked,
      },
    });
    await store.commit(tx);
    return next;
  });
  await liveness.revoke(workerId, leaseId);
  return ended;
}
