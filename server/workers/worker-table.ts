/**
 * Workers: the hosts that joined with a bootstrap token, stored under `workers/<id>` and held
 * in memory by every replica (a WatchedTable), so a block is seen everywhere at once. The state
 * machine is in docs/workers.md.
 */
import type { Logger } from 'pino';
import { InvalidArgumentError, NotFoundError } from '../../common/errors.js';
import { randomBase32 } from '../../common/ids.js';
import { WorkerState, type Worker } from '../../gen/citadel/v1/worker.js';
import type { CertRegistry } from '../auth/cert-registry.js';
import { keys } from '../store/keys.js';
import type { Store } from '../store/store.js';
import { WatchedTable } from '../store/watched-table.js';

export type WorkerStateName = 'active' | 'blocked' | 'retired';

export interface WorkerRecord {
  id: string;
  labels: Record<string, string>;
  state: WorkerStateName;
  /** True while `live/<id>` exists (kept in step by registration and the reaper). */
  online: boolean;
  tokenId: string;
  hostname: string;
  /** Serials of the worker's certificates still in the registry (newest last). */
  serials: string[];
  joinedAt: number;
  lastRegisteredAt?: number;
  stateReason?: string;
  stateChangedAt?: number;
}

/** The value of `live/<id>`, written under the worker's lease. */
export interface LiveRecord {
  /** The etcd lease id, decimal. */
  leaseId: string;
  registeredAt: number;
  replicaId: string;
  /** The heartbeat sequence accepted when the lease was granted: a floor for other replicas. */
  sequence: number;
  /** Executions the worker takes at once, from its latest heartbeat (0 while it stops). */
  totalSlots?: number;
  /** The sequence of the heartbeat that last changed `totalSlots`; an earlier one cannot. */
  slotsSequence?: number;
}

export const WORKER_ID_PATTERN = /^w_[0-9a-hjkmnp-tv-z]{16}$/;

export function newWorkerId(): string {
  return `w_${randomBase32(16)}`;
}

export class WorkerTable extends WatchedTable<WorkerRecord> {
  constructor(store: Store, logger: Logger) {
    super(store, keys.workerPrefix, logger);
  }
}

/** @throws InvalidArgumentError unless `id` looks like a worker id. */
export function validateWorkerId(id: string, field = 'id'): string {
  if (!WORKER_ID_PATTERN.test(id)) {
    throw new InvalidArgumentError(field, 'is not a worker id ("w_" and 16 base32 characters)');
  }
  return id;
}

/** Reads a worker record from etcd (not the cache), for a read-modify-write. */
export async function readWorker(store: Store, id: string) {
  const worker = await store.getJson<WorkerRecord>(keys.worker(validateWorkerId(id)));
  if (!worker) throw new NotFoundError('worker', id);
  return worker;
}

const STATE_TO_PROTO: Record<WorkerStateName, WorkerState> = {
  active: WorkerState.WORKER_STATE_ACTIVE,
  blocked: WorkerState.WORKER_STATE_BLOCKED,
  retired: WorkerState.WORKER_STATE_RETIRED,
};

export function workerToProto(w: WorkerRecord, certs: CertRegistry): Worker {
  const newest = certs
    .of('worker', w.id)
    .filter((c) => c.revokedAt === undefined)
    .sort((a, b) => b.issuedAt - a.issuedAt)[0];
  const date = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms));
  return {
    id: w.id,
    labels: w.labels,
    state: STATE_TO_PROTO[w.state],
    online: w.online,
    bootstrapTokenId: w.tokenId,
    joinTime: new Date(w.joinedAt),
    registerTime: date(w.lastRegisteredAt),
    stateReason: w.stateReason ?? '',
    stateChangeTime: date(w.stateChangedAt),
    certificateSerial: newest?.serial ?? '',
    certificateExpireTime: date(newest?.notAfter),
  };
}
