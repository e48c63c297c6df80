/**
 * AdminService handlers for users: created, read, listed, updated, disabled and enabled. Every
 * change is one store transaction with its audit record (`configuration_change`).
 */
import {
  AlreadyExistsError,
  ConflictError,
  FailedPreconditionError,
  InvalidArgumentError,
} from '../../common/errors.js';
import type { User } from '../../gen/citadel/v1/admin.js';
import type { AdminServiceServer } from '../../gen/citadel/v1/admin_service.js';
import { decodePageToken, encodePageToken, pageSize } from '../api/page-token.js';
import { unary, type Principal, type RpcDeps } from '../auth/admission.js';
import { validateUserId, type UserRecord } from '../auth/users.js';
import { keys } from '../store/keys.js';
import { retryOnConflict } from '../store/retry-on-conflict.js';
import { Tx, type AuditEvent, type Store } from '../store/store.js';
import { configChange, description, readUser } from './admin-common.js';
import { UPDATABLE_USER_PATHS, userSettings, userToProto, validateRole } from './user-settings.js';

type UserAdminRpcs = Pick<
  AdminServiceServer,
  'createUser' | 'getUser' | 'listUsers' | 'updateUser' | 'disableUser' | 'enableUser'
>;

const ALL_USER_PATHS = UPDATABLE_USER_PATHS.filter((p) => p !== 'role');

/** A user as the API shows it, with the count of tasks it owns. */
async function toUser(store: Store, u: UserRecord): Promise<User> {
  return userToProto(u, await store.count(keys.ownedPrefix(u.id)));
}

/** Read-modify-write of a user with a compare on what was read. */
function changeUser(
  store: Store,
  principal: Principal,
  id: string,
  action: string,
  change: (u: UserRecord) => UserRecord,
  details: AuditEvent['details'] = {},
): Promise<UserRecord> {
  return retryOnConflict(async () => {
    const current = await readUser(store, id);
    const next = { ...change(current.value), updatedAt: Date.now() };
    const tx = new Tx()
      .expect(current.key, current.modRevision)
      .putJson(current.key, next)
      .record(configChange(principal, action, { user: id, ...details }));
    await store.commit(tx);
    return next;
  });
}

/** CreateUser, GetUser, ListUsers, UpdateUser, DisableUser and EnableUser of AdminService. */
export function userAdmin(deps: RpcDeps): UserAdminRpcs {
  const { store } = deps;

  return {
    createUser: unary(deps, 'AdminService/CreateUser', async (req, { principal }) => {
      if (!req.user) throw new InvalidArgumentError('user', 'is required');
      const id = validateUserId(req.user.id);
      const now = Date.now();
      const user: UserRecord = {
        id,
        role: validateRole(req.user.role),
        allowedTaskTypes: [],
        allowedPriorities: [],
        maxTasks: 0,
        maxConcurrentExecutions: 0,
        taskScope: 'own',
        ...userSettings(req.user, ALL_USER_PATHS),
        enabled: true,
        createdAt: now,
        updatedAt: now,
      };
      const tx = new Tx()
        .expect(keys.user(id), 0)
        .putJson(keys.user(id), user)
        .record(configChange(principal, 'create_user', { user: id, role: user.role }));
      try {
        await store.commit(tx);
      } catch (err) {
        if (err instanceof ConflictError)
          throw new AlreadyExistsError(`user ${JSON.stringify(id)} already exists`);
        throw err;
      }
      return { user: await toUser(store, user) };
    }),

    getUser: unary(deps, 'AdminService/GetUser', async (req) => ({
      user: await toUser(store, (await readUser(store, req.id)).value),
    })),

    listUsers: unary(deps, 'AdminService/ListUsers', async (req) => {
      const size = pageSize(req.pageSize);
      const startAfter = decodePageToken(req.pageToken, keys.userPrefix);
      const page = await store.range<UserRecord>(keys.userPrefix, { startAfter, limit: size });
      const last = page.items[page.items.length - 1];
      return {
        users: await Promise.all(page.items.map((u) => toUser(store, u.value))),
        nextPageToken: page.more && last ? encodePageToken(last.key) : '',
      };
    }),

    updateUser: unary(deps, 'AdminService/UpdateUser', async (req, { principal }) => {
      if (!req.user) throw new InvalidArgumentError('user', 'is required');
      const paths = req.updateMask ?? [];
      if (paths.length === 0) {
        throw new InvalidArgumentError(
          'update_mask',
          `is required: name the fields to change (${UPDATABLE_USER_PATHS.join(', ')})`,
        );
      }
      const settings = userSettings(req.user, paths);
      if (
        req.user.id === principal.userId &&
        settings.role !== undefined &&
        settings.role !== 'admin'
      ) {
        throw new FailedPreconditionError('you cannot take the admin role from yourself');
      }
      const user = await changeUser(
        store,
        principal,
        req.user.id,
        'update_user',
        (u) => ({ ...u, ...settings }),
        {
          fields: paths.join(','),
          // The new values (none is secret), so a grant can be reconstructed from the audit.
          values: JSON.stringify(settings),
        },
      );
      return { user: await toUser(store, user) };
    }),

    disableUser: unary(deps, 'AdminService/DisableUser', async (req, { principal }) => {
      if (req.id === principal.userId) {
        throw new FailedPreconditionError('you cannot disable yourself');
      }
      const reason = description(req.reason);
      const user = await changeUser(
        store,
        principal,
        req.id,
        'disable_user',
        (u) => ({ ...u, enabled: false }),
        {
          reason,
        },
      );
      return { user: await toUser(store, user) };
    }),

    enableUser: unary(deps, 'AdminService/EnableUser', async (req, { principal }) => {
      const user = await changeUser(store, principal, req.id, 'enable_user', (u) => ({
        ...u,
        enabled: true,
      }));
      return { user: await toUser(store, user) };
    }),
  };
}
