/**
 * The admin area's registration: AdminService (users and their keys, bootstrap tokens, workers
 * and service certificates) on the public port.
 */
import type { Logger } from 'pino';
import type { AdminServiceServer } from '../../gen/citadel/v1/admin_service.js';
import type { AuthArea } from '../auth/auth-area.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/store.js';
import type { CaMaterial } from '../tls/ca.js';
import type { WorkersArea } from '../workers/workers-area.js';
import { adminService } from './admin-service.js';

export interface AdminArea {
  adminService: AdminServiceServer;
}

export function createAdmin(deps: {
  store: Store;
  logger: Logger;
  metrics: Metrics;
  auth: AuthArea;
  workers: WorkersArea;
  ca: CaMaterial;
}): AdminArea {
  const { auth, workers } = deps;
  return {
    adminService: adminService({
      store: deps.store,
      logger: deps.logger,
      metrics: deps.metrics,
      authenticator: auth.authenticator,
      apiKeys: auth.apiKeys,
      users: auth.users,
      certs: auth.certs,
      workers: workers.table,
      liveness: workers.liveness,
      ca: deps.ca,
    }),
  };
}
