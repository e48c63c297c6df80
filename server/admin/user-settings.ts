/**
 * The settable fields of a user as the AdminService takes and returns them: role, the task
 * vocabulary a user may use (types, priorities, checked with the task rules), limits and scope.
 */
import { InvalidArgumentError } from '../../common/errors.js';
import { Role, TaskScope, type User } from '../../gen/citadel/v1/admin.js';
import { Priority } from '../../gen/citadel/v1/task.js';
import type { RoleName, UserRecord } from '../auth/users.js';
import { priorityToProto } from '../tasks/records.js';
import { validatePriority, validateType } from '../tasks/task-validation.js';

const ROLE_FROM_PROTO = new Map<Role, RoleName>([
  [Role.ROLE_ADMIN, 'admin'],
  [Role.ROLE_SCHEDULER, 'scheduler'],
  [Role.ROLE_EXECUTOR, 'executor'],
  [Role.ROLE_VIEWER, 'viewer'],
]);
const ROLE_TO_PROTO = new Map([...ROLE_FROM_PROTO].map(([k, v]) => [v, k]));

export function validateRole(role: Role, field = 'user.role'): RoleName {
  const name = ROLE_FROM_PROTO.get(role);
  if (!name)
    throw new InvalidArgumentError(field, 'is required: ADMIN, SCHEDULER, EXECUTOR or VIEWER');
  return name;
}

/** The settable fields of a user, validated; `paths` limits which are read (update). */
export function userSettings(
  user: User,
  paths: readonly string[],
): Partial<Omit<UserRecord, 'id' | 'enabled' | 'createdAt' | 'updatedAt'>> {
  const out: Partial<Omit<UserRecord, 'id' | 'enabled' | 'createdAt' | 'updatedAt'>> = {};
  for (const path of paths) {
    switch (path) {
      case 'role':
        out.role = validateRole(user.role);
        break;
      case 'allowed_task_types':
        out.allowedTaskTypes = [...new Set(user.allowedTaskTypes)].map((t, i) =>
          validateType(t, `user.allowed_task_types[${i}]`),
        );
        break;
      case 'allowed_priorities':
        out.allowedPriorities = [
          ...new Set(
            user.allowedPriorities.map((p, i) => {
              if (p === Priority.PRIORITY_UNSPECIFIED) {
                throw new InvalidArgumentError(
                  `user.allowed_priorities[${i}]`,
                  'use HIGH, MEDIUM or LOW',
                );
              }
              return validatePriority(p, `user.allowed_priorities[${i}]`);
            }),
          ),
        ];
        break;
      case 'max_tasks':
        out.maxTasks = user.maxTasks;
        break;
      case 'max_concurrent_executions':
        out.maxConcurrentExecutions = user.maxConcurrentExecutions;
        break;
      case 'task_scope':
        if (user.taskScope === TaskScope.UNRECOGNIZED) {
          throw new InvalidArgumentError('user.task_scope', 'use OWN or ALL');
        }
        out.taskScope = user.taskScope === TaskScope.TASK_SCOPE_ALL ? 'all' : 'own';
        break;
      default:
        throw new InvalidArgumentError(
          'update_mask',
          `${JSON.stringify(path)} cannot be updated (updatable: ${UPDATABLE_USER_PATHS.join(', ')})`,
        );
    }
  }
  return out;
}

export const UPDATABLE_USER_PATHS = [
  'role',
  'allowed_task_types',
  'allowed_priorities',
  'max_tasks',
  'max_concurrent_executions',
  'task_scope',
] as const;

export function userToProto(u: UserRecord, taskCount: number): User {
  return {
    id: u.id,
    role: ROLE_TO_PROTO.get(u.role) ?? Role.ROLE_UNSPECIFIED,
    allowedTaskTypes: [...u.allowedTaskTypes],
    allowedPriorities: u.allowedPriorities.map(priorityToProto),
    maxTasks: u.maxTasks,
    maxConcurrentExecutions: u.maxConcurrentExecutions,
    taskScope: u.taskScope === 'all' ? TaskScope.TASK_SCOPE_ALL : TaskScope.TASK_SCOPE_OWN,
    enabled: u.enabled,
    createTime: new Date(u.createdAt),
    updateTime: new Date(u.updatedAt),
    taskCount,
  };
}
