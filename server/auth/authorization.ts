/**
 * Authorization, in one place: every RPC names the permission it needs (RPC_PERMISSIONS), and
 * every role grants a fixed set of permissions (ROLE_PERMISSIONS). The RPC wrapper checks it
 * before any handler runs; task ownership (a user's task scope) is applied by the handlers
 * with `canSeeTask`. docs/security.md explains the table. Two services are outside it because
 * their callers are not users: JoinService (authenticated by the bootstrap token in the
 * request) and WorkerService (by the worker's client certificate, on the worker endpoint).
 */
import { PermissionDeniedError } from '../../common/errors.js';
import type { RoleName, UserRecord } from './users.js';

export type Permission =
  'task.create' | 'task.read' | 'task.update' | 'task.delete' | 'task.execute' | 'admin';

/** The permission each RPC needs, by `Service/Method`. Every served RPC must be listed. */
export const RPC_PERMISSIONS = {
  'TaskService/CreateTask': 'task.create',
  'TaskService/GetTask': 'task.read',
  'TaskService/ListTasks': 'task.read',
  'TaskService/UpdateTask': 'task.update',
  'TaskService/PauseTask': 'task.update',
  'TaskService/ResumeTask': 'task.update',
  'TaskService/DeleteTask': 'task.delete',
  'TaskService/RunTask': 'task.execute',
  'TaskService/CancelExecution': 'task.execute',
  'TaskService/ListExecutions': 'task.read',
  'TaskService/GetExecution': 'task.read',
  'TaskService/WatchExecutions': 'task.read',
  'AdminService/CreateUser': 'admin',
  'AdminService/GetUser': 'admin',
  'AdminService/ListUsers': 'admin',
  'AdminService/UpdateUser': 'admin',
  'AdminService/DisableUser': 'admin',
  'AdminService/EnableUser': 'admin',
  'AdminService/CreateApiKey': 'admin',
  'AdminService/ListApiKeys': 'admin',
  'AdminService/RevokeApiKey': 'admin',
  'AdminService/CreateBootstrapToken': 'admin',
  'AdminService/ListBootstrapTokens': 'admin',
  'AdminService/RevokeBootstrapToken': 'admin',
  'AdminService/ListWorkers': 'admin',
  'AdminService/GetWorker': 'admin',
  'AdminService/BlockWorker': 'admin',
  'AdminService/DeregisterWorker': 'admin',
  'AdminService/IssueServiceCertificate': 'admin',
  'AdminService/RevokeServiceCertificate': 'admin',
} as const satisfies Record<string, Permission>;

export type RpcName = keyof typeof RPC_PERMISSIONS;

/** What each role may do (the seed's RBAC model). */
export const ROLE_PERMISSIONS: Readonly<Record<RoleName, ReadonlySet<Permission>>> = {
  admin: new Set<Permission>([
    'task.create',
    'task.read',
    'task.update',
    'task.delete',
    'task.execute',
    'admin',
  ]),
  scheduler: new Set<Permission>(['task.create', 'task.read', 'task.update']),
  executor: new Set<Permission>(['task.execute']),
  viewer: new Set<Permission>(['task.read']),
};

/**
 * Checks that `user` may call `rpc`.
 * @throws PermissionDeniedError naming the role and the permission.
 */
export function authorize(user: UserRecord, rpc: RpcName): void {
  const needed = RPC_PERMISSIONS[rpc];
  if (!ROLE_PERMISSIONS[user.role].has(needed)) {
    throw new PermissionDeniedError(
      `role ${user.role} lacks permission ${needed} needed by ${rpc.replace('/', '.')}`,
    );
  }
}

/** Whether `user` sees (and may act on) a task owned by `owner`. */
export function canSeeTask(user: UserRecord, owner: string): boolean {
  return user.role === 'admin' || user.taskScope === 'all' || owner === user.id;
}
