/**
 * Users: the principals behind API keys, with a role, the seed's permission record
 * (allowed task types and priorities, max tasks, max concurrent executions) and a task scope.
 * Stored under `users/<id>`; every replica keeps them in memory (a WatchedTable), so disabling
 * a user takes effect everywhere as soon as it is committed.
 */
import type { Logger } from 'pino';
import { InvalidArgumentError } from '../../common/errors.js';
import { keys, type PriorityRank } from '../store/keys.js';
import type { Store } from '../store/store.js';
import { WatchedTable } from '../store/watched-table.js';

export type RoleName = 'admin' | 'scheduler' | 'executor' | 'viewer';

export interface UserRecord {
  id: string;
  role: RoleName;
  allowedTaskTypes: string[];
  allowedPriorities: PriorityRank[];
  maxTasks: number;
  maxConcurrentExecutions: number;
  taskScope: 'own' | 'all';
  enabled: boolean;
  createdAt: number;
  updatedAt: number;
}

/** The id of the user the first start of a cluster creates. */
export const BOOTSTRAP_ADMIN = 'admin';

export const USER_ID_PATTERN = /^[a-z0-9][a-z0-9._@-]{0,62}$/;

export class UserTable extends WatchedTable<UserRecord> {
  constructor(store: Store, logger: Logger) {
    super(store, keys.userPrefix, logger);
  }
}

export function validateUserId(id: string, field = 'user.id'): string {
  if (!USER_ID_PATTERN.test(id)) {
    throw new InvalidArgumentError(
      field,
      id === ''
        ? 'is required'
        : 'must be 1-63 lowercase letters, digits, ".", "_", "@" or "-", starting with a letter or digit',
    );
  }
  return id;
}
