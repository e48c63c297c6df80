/**
 * The etcd key layout (docs/architecture.md, "etcd key layout"): every key the server reads or
 * writes is built here, relative to the cluster prefix, so the layout has one source of truth.
 */

/** 1 high, 2 medium, 3 low: the queue key's priority digit, so range order is dispatch order. */
export type PriorityRank = 1 | 2 | 3;

/** Keys relative to the store prefix. */
export const keys = {
  cluster: 'cluster',
  caCert: 'ca/cert',
  caKey: 'ca/key',
  dataKeyPrefix: 'keys/data/',
  dataKey: (kid: string) => `keys/data/${kid}`,
  activeDataKey: 'keys/active',
  apiKeyPrefix: 'apikeys/',
  apiKey: (hashHex: string) => `apikeys/${hashHex}`,
  /** Key id -> hash of the key, to revoke by id. */
  apiKeyId: (keyId: string) => `apikey-ids/${keyId}`,
  apiKeyUsage: (keyId: string) => `apikey-usage/${keyId}`,
  userPrefix: 'users/',
  user: (userId: string) => `users/${userId}`,
  /** One empty key per task a user owns: counted for max_tasks. */
  ownedPrefix: (userId: string) => `owned/${userId}/`,
  owned: (userId: string, taskId: string) => `owned/${userId}/${taskId}`,
  /** Bumped by every create of a user with max_tasks, so concurrent creates serialise. */
  quota: (userId: string) => `quota/${userId}`,
  taskPrefix: 'tasks/',
  task: (taskId: string) => `tasks/${taskId}`,
  idempotency: (hashHex: string) => `idempotency/${hashHex}`,
  executionPrefix: 'executions/',
  taskExecutionPrefix: (taskId: string) => `executions/${taskId}/`,
  /** An execution id is `<taskId>-<run>-<attempt>`; its key nests it under the task. */
  execution: (executionId: string) =>
    `executions/${executionId.slice(0, executionId.indexOf('-'))}/${executionId.slice(executionId.indexOf('-') + 1)}`,
  queuePrefix: 'queue/',
  queue: (priority: PriorityRank, dueMs: number, executionId: string) =>
    `queue/${priority}/${String(Math.max(0, Math.floor(dueMs))).padStart(15, '0')}/${executionId}`,
  inflightPrefix: 'inflight/',
  /** An execution assigned to (or running on) a worker, watched by the worker's stream. */
  assignmentPrefix: (workerId: string) => `assignments/${workerId}/`,
  assignment: (workerId: string, executionId: string) => `assignments/${workerId}/${executionId}`,
  /** The last fencing token handed out; advanced only by the fenced leader. */
  fencingCounter: 'fencing/counter',
  inflight: (executionId: string) => `inflight/${executionId}`,
  leaderPrefix: 'leader/',
  bootstrapTokenPrefix: 'bootstrap-tokens/',
  bootstrapToken: (hashHex: string) => `bootstrap-tokens/${hashHex}`,
  /** Token id -> hash of the token, to revoke by id. */
  bootstrapTokenId: (tokenId: string) => `bootstrap-token-ids/${tokenId}`,
  workerPrefix: 'workers/',
  worker: (workerId: string) => `workers/${workerId}`,
  /** The registry of issued client certificates (workers and services), by serial. */
  certPrefix: 'certs/',
  cert: (serialHex: string) => `certs/${serialHex}`,
  /** A worker's liveness key, written under the worker's own etcd lease. */
  livePrefix: 'live/',
  live: (workerId: string) => `live/${workerId}`,
  auditPrefix: 'audit/',
} as const;

/** Inverse of `keys.execution` for a key relative to the prefix. */
export function executionIdFromKey(relativeKey: string): string {
  const rest = relativeKey.slice(keys.executionPrefix.length);
  return rest.replace('/', '-');
}
