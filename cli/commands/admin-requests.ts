/**
 * Pure builders that turn `citadelctl user ...` and `citadelctl apikey ...` flags into
 * AdminService requests. All flag validation happens here, before any network call; each error
 * names the flag to fix.
 */

import { InvalidArgumentError } from '../../common/errors.js';
import type { User } from '../../gen/citadel/v1/admin.js';
import {
  CreateApiKeyRequest,
  CreateUserRequest,
  type DeepPartial,
  DisableUserRequest,
  ListApiKeysRequest,
  ListUsersRequest,
  UpdateUserRequest,
} from '../../gen/citadel/v1/admin_service.js';
import {
  parseExpiry,
  parseInteger,
  parseList,
  parseNonEmpty,
  parsePriorityList,
  parseRole,
  parseTaskScope,
  parseText,
  parseUserId,
} from '../flags.js';

/** Largest value of a uint32 field such as max_tasks. */
const UINT32_MAX = 4_294_967_295;

/** User fields of `user create` and `user update`, as commander hands them over. */
export interface UserFlags {
  role?: string;
  /** Comma-separated; empty clears the list. */
  allowedTypes?: string;
  /** Comma-separated; empty clears the list. */
  allowedPriorities?: string;
  maxTasks?: string;
  maxConcurrent?: string;
  scope?: string;
}

/** Flags of `user list`. */
export interface ListUsersFlags {
  pageSize?: string;
  pageToken?: string;
}

/** Flags of `user disable`. */
export interface DisableUserFlags {
  reason?: string;
}

/** Flags of `apikey create`. */
export interface CreateApiKeyFlags {
  user?: string;
  description?: string;
  /** A duration from now (`90d`) or an ISO 8601 time with zone. */
  expires?: string;
}

/** Flags of `apikey list`. */
export interface ListApiKeysFlags {
  user?: string;
}

/**
 * The user fields the flags give, each with its update-mask path, in contract order. Only the
 * fields given are present.
 */
function userFields(flags: UserFlags): [DeepPartial<User>, string[]] {
  const user: DeepPartial<User> = {};
  const paths: string[] = [];
  if (flags.role !== undefined) {
    user.role = parseRole(flags.role);
    paths.push('role');
  }
  if (flags.allowedTypes !== undefined) {
    user.allowedTaskTypes = parseList(flags.allowedTypes, '--allowed-types');
    paths.push('allowed_task_types');
  }
  if (flags.allowedPriorities !== undefined) {
    user.allowedPriorities = parsePriorityList(flags.allowedPriorities);
    paths.push('allowed_priorities');
  }
  if (flags.maxTasks !== undefined) {
    user.maxTasks = parseInteger(flags.maxTasks, '--max-tasks', 0, UINT32_MAX);
    paths.push('max_tasks');
  }
  if (flags.maxConcurrent !== undefined) {
    user.maxConcurrentExecutions = parseInteger(
      flags.maxConcurrent,
      '--max-concurrent',
      0,
      UINT32_MAX,
    );
    paths.push('max_concurrent_executions');
  }
  if (flags.scope !== undefined) {
    user.taskScope = parseTaskScope(flags.scope);
    paths.push('task_scope');
  }
  return [user, paths];
}

/**
 * Builds CreateUserRequest. Limits not given are zero, meaning none; lists not given are
 * empty, meaning any.
 * @throws InvalidArgumentError naming the flag: a malformed ID, a missing or unknown --role, an
 *   unknown --scope or priority, or a bad number.
 */
export function buildCreateUserRequest(id: string, flags: UserFlags): CreateUserRequest {
  const userId = parseUserId(id);
  if (flags.role === undefined) {
    throw new InvalidArgumentError('--role', 'required: admin, scheduler, executor or viewer');
  }
  const [user] = userFields(flags);
  return CreateUserRequest.fromPartial({ user: { ...user, id: userId } });
}

/**
 * Builds UpdateUserRequest. The update mask lists exactly the fields the flags give, in
 * contract order: "role", "allowed_task_types" (--allowed-types), "allowed_priorities",
 * "max_tasks", "max_concurrent_executions" (--max-concurrent), "task_scope" (--scope). An
 * empty --allowed-types or --allowed-priorities clears that list; --max-tasks 0 and
 * --max-concurrent 0 remove the limit.
 * @throws InvalidArgumentError naming the flag: nothing to change, or any malformed value.
 */
export function buildUpdateUserRequest(id: string, flags: UserFlags): UpdateUserRequest {
  const userId = parseNonEmpty(id, 'ID');
  const [user, paths] = userFields(flags);
  if (paths.length === 0) {
    throw new InvalidArgumentError(
      'user update',
      'nothing to change; give at least one flag such as --role or --max-tasks',
    );
  }
  return UpdateUserRequest.fromPartial({ user: { ...user, id: userId }, updateMask: paths });
}

/**
 * Builds ListUsersRequest.
 * @throws InvalidArgumentError for a bad --page-size.
 */
export function buildListUsersRequest(flags: ListUsersFlags): ListUsersRequest {
  return ListUsersRequest.fromPartial({
    pageSize:
      flags.pageSize === undefined ? 0 : parseInteger(flags.pageSize, '--page-size', 1, 1000),
    pageToken: flags.pageToken ?? '',
  });
}

/**
 * Builds DisableUserRequest.
 * @throws InvalidArgumentError for an empty ID or a --reason over 200 characters.
 */
export function buildDisableUserRequest(id: string, flags: DisableUserFlags): DisableUserRequest {
  return DisableUserRequest.fromPartial({
    id: parseNonEmpty(id, 'ID'),
    reason: parseText(flags.reason, '--reason'),
  });
}

/**
 * Builds CreateApiKeyRequest.
 * @param now the instant a duration in --expires counts from.
 * @throws InvalidArgumentError naming the flag: a missing --user, a --description over 200
 *   characters, or an --expires that is malformed or not in the future.
 */
export function buildCreateApiKeyRequest(
  flags: CreateApiKeyFlags,
  now: Date = new Date(),
): CreateApiKeyRequest {
  return CreateApiKeyRequest.fromPartial({
    userId: parseNonEmpty(flags.user ?? '', '--user'),
    description: parseText(flags.description, '--description'),
    expireTime:
      flags.expires === undefined ? undefined : parseExpiry(flags.expires, '--expires', now),
  });
}

/**
 * Builds ListApiKeysRequest.
 * @throws InvalidArgumentError for a missing --user.
 */
export function buildListApiKeysRequest(flags: ListApiKeysFlags): ListApiKeysRequest {
  return ListApiKeysRequest.fromPartial({ userId: parseNonEmpty(flags.user ?? '', '--user') });
}
