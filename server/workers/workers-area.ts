/**
 * The workers area's registration: the worker table and liveness leases, JoinService on the
 * public port, and the worker-identity half of WorkerService (heartbeats, certificate renewal)
 * on the worker endpoint (docs/workers.md).
 */
import type { Logger } from 'pino';
import type { JoinServiceServer } from '../../gen/citadel/v1/join_service.js';
import type { WorkerServiceServer } from '../../gen/citadel/v1/worker_service.js';
import type { AuthArea } from '../auth/auth-area.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/store.js';
import type { CaMaterial } from '../tls/ca.js';
import { HeartbeatVerifier } from './heartbeat-verifier.js';
import { joinService } from './join-service.js';
import { workerIdentityService } from './worker-identity-service.js';
import { WorkerLiveness } from './worker-liveness.js';
import { WorkerTable } from './worker-table.js';

/** The server options this area reads (rows of server-options.ts). */
export interface WorkersOptions {
  workerCertTtlMs: number;
  heartbeatIntervalMs: number;
  workerLeaseTtlSeconds: number;
  heartbeatMaxSkewMs: number;
  heartbeatRefusalLimit: number;
  heartbeatRefusalWindowMs: number;
}

export interface WorkersArea {
  table: WorkerTable;
  liveness: WorkerLiveness;
  joinService: JoinServiceServer;
  identityService: Pick<WorkerServiceServer, 'heartbeat' | 'renewCertificate'>;
  /** Stops lease keep-alives and the worker table. */
  stop(): Promise<void>;
}

export async function createWorkers(
  deps: {
    store: Store;
    logger: Logger;
    metrics: Metrics;
    auth: AuthArea;
    ca: CaMaterial;
    /** The worker endpoint's port, known once it is bound; join answers name it. */
    workerPort: () => number;
  },
  options: Readonly<WorkersOptions>,
): Promise<WorkersArea> {
  const { store, logger, metrics, auth, ca } = deps;
  const table = new WorkerTable(store, logger);
  await table.start();
  const liveness = new WorkerLiveness({
    store,
    ttlSeconds: options.workerLeaseTtlSeconds,
    logger,
  });
  const leaseTtlMs = options.workerLeaseTtlSeconds * 1000;
  return {
    table,
    liveness,
    joinService: joinService({
      store,
      logger,
      metrics,
      failures: auth.failures,
      ca,
      workerCertTtlMs: options.workerCertTtlMs,
      workerPort: deps.workerPort,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      leaseTtlMs,
    }),
    identityService: workerIdentityService({
      store,
      logger,
      metrics,
      workers: table,
      certs: auth.certs,
      failures: auth.failures,
      liveness,
      verifier: new HeartbeatVerifier({ maxSkewMs: options.heartbeatMaxSkewMs }),
      ca,
      options: {
        workerCertTtlMs: options.workerCertTtlMs,
        heartbeatIntervalMs: options.heartbeatIntervalMs,
        leaseTtlMs,
        heartbeatRefusalLimit: options.heartbeatRefusalLimit,
        heartbeatRefusalWindowMs: options.heartbeatRefusalWindowMs,
      },
    }),
    stop: async () => {
      await Promise.all([liveness.stop(), table.stop()]);
    },
  };
}
