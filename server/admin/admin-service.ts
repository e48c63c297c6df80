/**
 * AdminService: its handlers, one module a concern (users, API keys, bootstrap tokens and
 * workers, service certificates), composed into the one service.
 */
import type { AdminServiceServer } from '../../gen/citadel/v1/admin_service.js';
import { apiKeyAdmin } from './api-key-admin.js';
import { serviceCertAdmin } from './service-cert-admin.js';
import { userAdmin } from './user-admin.js';
import { workerAdmin, type WorkerAdminDeps } from './worker-admin.js';

/** Every RPC of AdminService. */
export function adminService(deps: WorkerAdminDeps): AdminServiceServer {
  return {
    ...userAdmin(deps),
    ...apiKeyAdmin(deps),
    ...workerAdmin(deps),
    ...serviceCertAdmin(deps),
  };
}
